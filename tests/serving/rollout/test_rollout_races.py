"""The rollout tool against a real server when something else happens at once: a second
operator, a hand edit of the config, a load slower than --timeout.

Example:
    .venv/bin/python -m pytest tests/serving/rollout/test_rollout_races.py -q
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from serving.rollout import config_edit as rc
from serving.rollout.control import Rollout
from tests.known_models import write_known_model
from tests.support import ROOT, ServerProcess, wait_for

pytestmark = pytest.mark.integration

CONFIG = """\
# Two models, each pinned with a stable label.
model_config_list {{
  config {{
    name: "half" base_path: "{base}/half" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
  config {{
    name: "other" base_path: "{base}/other" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
"""
# About 50 µs per spin round here: 30,000 rounds keep a version loading for a second or two.
SLOW_ROUNDS = 30_000
FOREVER_ROUNDS = 2_000_000_000


def write_slow_model(base: Path, version: int, rounds: int) -> None:
    """A known-answer version whose warmup spins `rounds` times, so its load takes that long."""
    from export.warmup import write_warmup

    folder = write_known_model(base, version)
    x, spins = np.array([1.0], np.float32), np.array([rounds], np.int32)
    write_warmup(folder, "half", {"spin": {"x": x, "rounds": spins}})


def serve(tmp_path: Path) -> tuple[ServerProcess, Path]:
    base = tmp_path / "models"
    for name in ("half", "other"):
        write_known_model(base / name, 1)
    cfg = tmp_path / "models.config"
    cfg.write_text(CONFIG.format(base=base))
    server = ServerProcess(
        f"--model_config_file={cfg}",
        "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models",
        "--max_num_load_retries=0",
        "--drain_seconds=2",  # a load spinning forever holds the exit for at most this long
        log_path=tmp_path / "server.log",
        rest=False,
    ).start()
    return server, cfg


def tool(server: ServerProcess, cfg: Path) -> list[str]:
    """`python -m serving.rollout` for this server and config."""
    server_flag, config_flag = f"--server=127.0.0.1:{server.port}", f"--config={cfg}"
    return [sys.executable, "-m", "serving.rollout", server_flag, config_flag]


def labels(cfg: Path, name: str) -> dict[str, int]:
    return rc.labels_of(rc.read_config(cfg), name)


def test_two_operators_at_once_lose_no_edit(tmp_path):
    server, cfg = serve(tmp_path)
    try:
        for name in ("half", "other"):
            write_slow_model(tmp_path / "models" / name, 2, SLOW_ROUNDS)
        flags = [*tool(server, cfg), "--timeout", "120", "--lock_timeout", "300"]
        runs = [
            subprocess.Popen([*flags, "canary", name, "2"], cwd=ROOT, stderr=subprocess.PIPE)
            for name in ("half", "other")
        ]
        results = [(run.wait(timeout=600), run.stderr.read().decode()) for run in runs]
    finally:
        server.stop()
    text = cfg.read_text()
    assert text.startswith("# Two models, each pinned with a stable label.\n"), text
    for name, (code, err) in zip(("half", "other"), results, strict=True):
        # Each operator either made its edit or was refused in one line: never a lost edit.
        if code == 0:
            assert labels(cfg, name) == {"stable": 1, "canary": 2}, (name, text)
        else:
            assert code == 2 and "lock" in err and err.count("\n") == 1, (name, err)
            assert labels(cfg, name) == {"stable": 1}, (name, text)
    assert [code for code, _ in results] == [0, 0], results  # 300 s is time enough for both
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "models.config", "server.log"]


def test_a_hand_edit_during_a_rollout_is_refused_not_overwritten(tmp_path):
    server, cfg = serve(tmp_path)
    try:
        write_slow_model(tmp_path / "models" / "half", 2, SLOW_ROUNDS)
        tool = Rollout(f"127.0.0.1:{server.port}", str(cfg), timeout=120.0)
        outcome: list = []

        def canary() -> None:
            try:
                outcome.append(tool.canary("half", 2))
            except Exception as error:  # the test looks at what was raised
                outcome.append(error)

        thread = threading.Thread(target=canary)
        thread.start()
        # Step one is written (v2 loads beside v1): now an operator edits the file by hand.
        wait_for(lambda: "versions: 2" in cfg.read_text(), 60, message="the canary's first step")
        edited = cfg.read_text().replace(
            'name: "other" base_path', 'name: "other"  # hand edit\n    base_path'
        )
        cfg.write_text(edited)
        thread.join(180)
    finally:
        server.stop()
    assert len(outcome) == 1 and isinstance(outcome[0], rc.RefusalError), outcome
    message = str(outcome[0])
    assert f"{cfg} changed since this rollout read it" in message, message
    assert '+    name: "other"  # hand edit' in message, message
    assert cfg.read_text() == edited  # the hand edit survives


def test_a_load_slower_than_the_timeout_is_reported_not_restored(tmp_path):
    server, cfg = serve(tmp_path)
    try:
        write_slow_model(tmp_path / "models" / "half", 2, FOREVER_ROUNDS)
        run = subprocess.run(
            [*tool(server, cfg), "--timeout", "3", "canary", "half", "2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        states = Rollout(f"127.0.0.1:{server.port}", str(cfg), 10.0).status("half")["half"]
    finally:
        server.stop()
    # The server is on the new config (v2 loading): the file keeps it and the exit status says
    # the step is still under way, instead of a restore the server never saw.
    assert run.returncode == 3, (run.returncode, run.stderr)
    assert run.stderr.count("\n") == 1, run.stderr
    assert "canary: half version 2 still LOADING after 3 s" in run.stderr, run.stderr
    assert "kept" in run.stderr and "nothing restored" in run.stderr, run.stderr
    config = rc.read_config(cfg)
    assert list(rc.model_config(config, "half").model_version_policy.specific.versions) == [1, 2]
    assert {r["version"]: r["state"] for r in states["versions"]} == {2: "LOADING", 1: "AVAILABLE"}


def test_a_failed_load_after_the_timeout_is_restored(tmp_path):
    from tests.support import corrupt_version

    server, cfg = serve(tmp_path)
    try:
        corrupt_version(tmp_path / "models" / "half", 2)
        tool = Rollout(f"127.0.0.1:{server.port}", str(cfg), timeout=30.0)
        with pytest.raises(rc.ServerError, match="canary: half version 2 failed to load: "):
            tool.canary("half", 2)
    finally:
        server.stop()
    config = rc.read_config(cfg)
    assert list(rc.model_config(config, "half").model_version_policy.specific.versions) == [1]
    assert cfg.read_text().startswith("# Two models")  # restored in place, comments kept
    assert text_format.MessageToString(config) != cfg.read_text()
