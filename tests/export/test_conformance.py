"""The conformance harness: TensorFlow's C++ loader (what tensorflow_model_server links) loads
each exported version and runs every warmup record through Session::Run.

The checker is compiled once per session against the installed wheel (about 10 s, then cached).
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from common.contract import DEFAULT_SIGNATURE
from export import publish
from export.conformance.build import ConformanceError, build
from export.conformance.cli import main
from export.conformance.harness import check_version
from export.warmup import WARMUP_FILE, write_warmup
from tests.known_models import write_known_model
from tests.support import ROOT
from training import config as cfg
from training.runner import CONFIG_FILE, WEIGHTS_FILE, read_run_config
from training.tasks import get_task

MODELS = ["unet", "localizer", "generator"]
SHIPPED = ROOT / "shipped-runs"


@pytest.fixture(scope="session")
def checker():
    """The C++ checker, built (or taken from the cache) once for the session."""
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler: install Debian's g++ package (apt-get install g++)")
    return build()


@pytest.fixture(scope="module")
def tiny_versions(tiny_exports, tmp_path_factory):
    """Each tiny run exported once: {model: version folder}."""
    base = tmp_path_factory.mktemp("tiny-models")
    return {m: tiny_exports.put(m, base) for m in MODELS}


def _assert_every_signature_ran(report, model):
    """Every signature of the model's contract ran OK and was compared output by output."""
    contract = get_task(model).contract(_config(report.run_dir))
    ran = {r.signature for r in report.replay.records if r.status == "OK"}
    assert ran == {s.name for s in contract.signatures}, report.lines()
    compared = {(d.signature, d.alias) for d in report.diffs}
    assert compared == {(s.name, t.name) for s in contract.signatures for t in s.outputs}
    assert report.passed, "\n".join(report.lines())


def _config(run_dir: Path):
    saved = read_run_config(run_dir)
    return cfg.from_dict(get_task(saved["model"]).config_cls, saved["config"])


def _untrained_run(model: str, preset: str, folder: Path, config=None, seed: int = 7) -> Path:
    """A run folder of `model` whose weights are freshly initialised (no training)."""
    task = get_task(model)
    config = config or task.presets[preset]
    folder.mkdir(parents=True)
    cfg.save_json(config, folder / CONFIG_FILE, model=model, preset=preset, seed=seed)
    tf.keras.utils.set_random_seed(seed)
    task.build(config).save_weights(folder / WEIGHTS_FILE)
    return folder


@pytest.mark.parametrize("model", MODELS)
def test_tiny_exports_run_under_the_cpp_loader(checker, tiny_versions, tiny_runs, model):
    report = check_version(tiny_versions[model], tiny_runs[model], binary=checker)
    _assert_every_signature_ran(report, model)


@pytest.mark.parametrize("model", MODELS)
def test_shipped_slim_exports_run_under_the_cpp_loader(checker, tmp_path, model):
    version = publish.export_run(model, SHIPPED / model, tmp_path)
    _assert_every_signature_ran(check_version(version, SHIPPED / model, binary=checker), model)


def test_the_command_line_prints_each_record_and_output(checker, tiny_versions, tiny_runs, capsys):
    version, run = tiny_versions["localizer"], tiny_runs["localizer"]
    assert main([str(version), "--run", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("loader   tensorflow::LoadSavedModel") and lines[1].endswith(": OK")
    assert "record 1 serve_bytes: OK" in lines
    box = [line for line in lines if line.split()[0] == "box"]
    assert len(box) == 2 and all(line.endswith("(tolerance 1e-05)  OK") for line in box), box
    assert lines[-2] == f"model check against {run}: OK"
    assert lines[-1] == (
        "PASS: all 2 warmup records ran through Session::Run and match the Keras model"
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_seed_preset_exports_run_under_the_cpp_loader(checker, tmp_path, model):
    run = _untrained_run(model, "seed", tmp_path / "run")
    version = publish.export_run(model, run, tmp_path / "models")
    _assert_every_signature_ran(check_version(version, run, binary=checker), model)


def test_a_module_without_the_keras_variables_fails_as_under_tf_serving(checker, tmp_path):
    """The export before the fix: `module.model = keras_model` alone. TF2's loader runs it; the
    C++ loader restores no variable, so every run fails as tensorflow_model_server's does."""
    inputs = tf.keras.Input((3,), name="x")
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="dense")(inputs))
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x):
        return {"y": model(x)}

    version = tmp_path / "old" / "1"
    tf.saved_model.save(module, str(version), signatures={DEFAULT_SIGNATURE: serve})
    write_warmup(version, "old", {DEFAULT_SIGNATURE: {"x": np.ones((1, 3), np.float32)}})
    reloaded = tf.saved_model.load(str(version)).signatures[DEFAULT_SIGNATURE]
    assert reloaded(x=tf.ones((1, 3)))["y"].shape == (1, 2)  # TF2's loader is fooled

    report = check_version(version, binary=checker)
    assert report.replay.load == "OK"
    [record] = report.replay.records
    assert record.status == "FAILED_PRECONDITION"
    # Keras may uniquify the layer's name when other tests built a "dense" before this one.
    assert re.search(r"Could not find variable dense(_\d+)?/(kernel|bias)", record.message)
    assert not report.passed and report.lines()[-1].startswith("FAIL")


def test_inputs_go_to_the_signature_def_tensors_and_answers_come_back(checker, tmp_path):
    """Known answers (y = 0.5x + 2, a + b, a - b, strings and their lengths): an alias fed to
    the wrong tensor, or an answer read back wrongly, changes a number here."""
    version = write_known_model(tmp_path / "half", 1, a=0.5, b=2.0)
    requests = {
        DEFAULT_SIGNATURE: {"x": np.array([1.0, 4.0], np.float32)},
        "two_inputs": {"a": np.array([1.0], np.float32), "b": np.array([3.0], np.float32)},
        "echo_bytes": {"text": np.array([b"abc", b"\x00\xff"], dtype=object)},
    }
    write_warmup(version, "half", requests)
    report = check_version(version, binary=checker)
    assert [(r.signature, r.status) for r in report.replay.records] == [
        (name, "OK") for name in requests
    ]
    answers = report.replay.answers
    np.testing.assert_array_equal(answers[0]["y"], [2.5, 4.0])
    np.testing.assert_array_equal(answers[1]["sum"], [4.0])
    np.testing.assert_array_equal(answers[1]["diff"], [-2.0])
    assert answers[2]["text_bytes"].tolist() == [b"abc", b"\x00\xff"]
    np.testing.assert_array_equal(answers[2]["length"], [3, 2])
    assert report.passed


def test_a_record_of_the_wrong_dtype_fails_the_check(checker, tmp_path, capsys):
    version = write_known_model(tmp_path / "half", 1, warmup="bad")  # x is float64
    assert main([str(version)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("serving_default: INVALID_ARGUMENT" in line for line in lines), lines
    assert lines[-1] == "FAIL: 1 of 1 records failed, 0 outputs over tolerance"


def test_answers_of_other_weights_fail_the_comparison(checker, tiny_versions, tiny_runs, tmp_path):
    """The same architecture with other weights: the C++ answers no longer match the Keras
    model's, so a comparison that read the wrong side (or none) is caught."""
    config = _config(tiny_runs["unet"])
    other = _untrained_run("unet", "tiny", tmp_path / "other", config=config)
    report = check_version(tiny_versions["unet"], other, binary=checker)
    assert report.replay.passed  # the C++ side itself is fine
    over = {d.alias for d in report.diffs if not d.passed}
    assert {"mask", "mask_logits"} <= over
    assert "vs Keras" in report.check_failure
    assert not report.passed and "model check failed" in report.lines()[-1]


def test_a_version_without_warmup_records_is_not_a_pass(checker, tiny_versions, tmp_path, capsys):
    version = tmp_path / "1"
    shutil.copytree(tiny_versions["generator"], version)
    (version / "assets.extra" / WARMUP_FILE).unlink()
    assert main([str(version)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "tags serve: OK" in lines[1]
    assert lines[-1].startswith("FAIL: no predict records")


def test_an_unknown_tag_fails_the_load(checker, tiny_versions, capsys):
    assert main([str(tiny_versions["generator"]), "--tags", "serve,gpu"]) == 1
    out = capsys.readouterr().out
    assert "tags serve,gpu: NOT_FOUND" in out and "FAIL: the C++ loader" in out


def _usage_error(argv, capsys, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err


def test_usage_errors_are_one_line(checker, tiny_versions, tiny_runs, tmp_path, capsys):
    _usage_error([str(tmp_path / "nope")], capsys, "nope", "does not exist")
    _usage_error([str(tmp_path)], capsys, "no saved_model.pb", "models/unet/1")
    _usage_error([str(tiny_versions["unet"]), "--tags", " , "], capsys, "--tags", "serve")
    _usage_error(
        [str(tiny_versions["unet"]), "--run", str(tiny_runs["localizer"])],
        capsys,
        "is a 'unet' version",
        "trains 'localizer'",
    )
    _usage_error([str(tiny_versions["unet"]), "--run", str(tmp_path / "gone")], capsys, "gone")


def test_no_compiler_names_the_debian_package(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing built yet
    with pytest.raises(ConformanceError, match="Debian's g\\+\\+ package"):
        build()
    version = write_known_model(tmp_path / "half", 1, warmup="good")
    _usage_error([str(version)], capsys, "no C++ compiler", "g++")
