"""The Session's ConfigProto from the --tensorflow_session_* flags, as TF Serving sets it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from serving.config.files import ConfigError, session_config
from serving.servables.saved_model import load_servable
from tests.known_models import write_known_model
from tests.support import ROOT


def test_defaults_leave_the_thread_pools_to_tf():
    config = session_config()
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 0)


def test_session_parallelism_sets_both_pools():
    config = session_config(parallelism=3)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)


def test_intra_or_inter_set_both_fields_and_ignore_session_parallelism():
    config = session_config(parallelism=5, intra_op=2)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 0)
    config = session_config(inter_op=4)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 4)


def test_the_flags_overwrite_the_files_thread_counts(tmp_path):
    path = tmp_path / "session.config"
    path.write_text("intra_op_parallelism_threads: 7\nallow_soft_placement: true\n")
    config = session_config(path)
    assert config.allow_soft_placement
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (0, 0)
    assert session_config(path, intra_op=1).intra_op_parallelism_threads == 1


def test_all_three_flags_are_refused():
    with pytest.raises(ConfigError) as caught:
        session_config(parallelism=1, intra_op=1, inter_op=1)
    assert str(caught.value) == (
        "Either configure server_options.tensorflow_session_parallelism or "
        "(server_options.tensorflow_intra_op_parallelism, "
        "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
    )


def test_a_bad_file_names_itself(tmp_path):
    path = tmp_path / "session.config"
    path.write_text("no_such_field: 1\n")
    with pytest.raises(ConfigError, match=r"Error parsing text-format tensorflow.ConfigProto"):
        session_config(path)


def test_a_servable_runs_in_a_one_thread_session(tmp_path):
    version = write_known_model(tmp_path / "m", 1)
    servable = load_servable("m", 1, version, session_config=session_config(parallelism=1))
    y = servable.run("serving_default", {"x": np.array([2.0], np.float32)})
    assert y["y"].tolist() == [3.0]
    servable.close()


@pytest.mark.integration
def test_all_three_flags_fail_start_up_before_any_load(tmp_path):
    write_known_model(tmp_path / "m", 1)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model_name=m",
            f"--model_base_path={tmp_path / 'm'}",
            "--tensorflow_session_parallelism=1",
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255
    assert (
        "Failed to start server. Error: INVALID_ARGUMENT: Either configure "
        "server_options.tensorflow_session_parallelism or" in result.stderr
    )
    assert "Loading servable version" not in result.stderr
