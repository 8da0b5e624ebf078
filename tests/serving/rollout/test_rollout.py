"""Tests of `python -m serving.rollout`: pure config edits, refusals, and a live canary rollout.

Example:
    .venv/bin/python -m pytest tests/test_rollout.py -q
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from google.protobuf import text_format

from serving.rollout import cli as rollout
from serving.rollout import config_edit as rc
from serving.rollout import config_file
from serving.rollout.control import Rollout

CONFIG = """
model_config_list {{
  config {{
    name: "half" base_path: "{base}/half" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
  config {{ name: "other" base_path: "{base}/other" model_platform: "tensorflow" }}
}}
"""
# Nothing listens here; refusals must happen before any RPC.
NO_SERVER = "127.0.0.1:1"


def parse(text: str) -> rc.ModelServerConfig:
    return text_format.Parse(text, rc.ModelServerConfig())


def versions(config, name="half") -> list[int]:
    return list(rc.model_config(config, name).model_version_policy.specific.versions)


@pytest.fixture
def config():
    return parse(CONFIG.format(base="/models"))


def test_canary_load_keeps_stable_and_adds_no_canary_label(config):
    step = rc.canary_load(config, "half", 2, stable=1)
    assert versions(step) == [1, 2]
    assert rc.labels_of(step, "half") == {"stable": 1}
    assert versions(config) == [1]  # the input is not modified
    labelled = rc.with_label(step, "half", rc.CANARY, 2)
    assert rc.labels_of(labelled, "half") == {"stable": 1, "canary": 2}
    assert rc.prune(labelled, "half") == labelled


def test_canary_load_sets_a_missing_stable_label(config):
    step = rc.canary_load(config, "other", 5, stable=4)
    assert versions(step, "other") == [4, 5]
    assert rc.labels_of(step, "other") == {"stable": 4}
    assert rc.describe_policy(config, "other") == "latest 1"


def test_a_new_canary_keeps_the_old_one_until_its_label_moves(config):
    old = rc.with_label(rc.canary_load(config, "half", 2, stable=1), "half", rc.CANARY, 2)
    step = rc.canary_load(old, "half", 3, stable=1)
    assert versions(step) == [1, 2, 3]
    assert rc.labels_of(step, "half") == {"stable": 1, "canary": 2}
    assert versions(rc.prune(rc.with_label(step, "half", rc.CANARY, 3), "half")) == [1, 3]


def test_canary_refusals(config):
    with pytest.raises(rc.RefusalError, match="version 1 of half is already the stable version"):
        rc.canary_load(config, "half", 1, stable=1)
    labelled = rc.with_label(config, "half", rc.CANARY, 2)
    with pytest.raises(rc.RefusalError, match="version 2 of half is already the canary"):
        rc.canary_load(labelled, "half", 2, stable=1)
    with pytest.raises(rc.RefusalError, match=r"unknown model 'nope' \(the config has: half, oth"):
        rc.canary_load(config, "nope", 2, stable=1)


def test_promote_moves_labels_first_then_prunes(config):
    canary = rc.with_label(rc.canary_load(config, "half", 2, stable=1), "half", rc.CANARY, 2)
    moved, previous = rc.promote_labels(canary, "half")
    assert previous == 1
    assert rc.labels_of(moved, "half") == {"stable": 2}
    assert versions(moved) == [1, 2]  # the old stable stays loaded while the label moves
    assert versions(rc.prune(moved, "half")) == [2]
    with pytest.raises(rc.RefusalError, match="promote: half has no canary label to promote"):
        rc.promote_labels(config, "half")


def test_rollback_load(config):
    promoted = rc.prune(rc.with_label(config, "half", rc.STABLE, 2), "half")
    step = rc.rollback_load(promoted, "half", 1)
    assert versions(step) == [1, 2]
    back = rc.prune(rc.with_label(step, "half", rc.STABLE, 1), "half")
    assert versions(back) == [1] and rc.labels_of(back, "half") == {"stable": 1}
    with pytest.raises(rc.RefusalError, match="already at version 1; nothing to roll back"):
        rc.rollback_load(back, "half", 1)
    with pytest.raises(rc.RefusalError, match="rollback: other has no stable label"):
        rc.rollback_load(config, "other", 1)


def test_write_config_is_atomic_and_round_trips(tmp_path, config):
    path = tmp_path / "models.config"
    path.write_text("# old\n")
    config_file.write_text(path, text_format.MessageToString(config))
    assert rc.read_config(path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]
    config_file.write_sidecar(path, {"half": {"previous_stable": 1}})
    assert config_file.read_sidecar(path) == {"half": {"previous_stable": 1}}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = rollout.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["canary", "nope", "2"], "unknown model 'nope' (the config has: half, other)"),
        (["canary", "half", "7"], "version 7 of half not found on disk at {local}/half/7"),
        (["promote", "half", "--force"], "promote: half has no canary label to promote"),
        (["promote", "half"], "promote: half has no canary label; run `canary` first"),
        (["auto", "half", "1"], "no gates for model kind 'half' (gates exist for unet, localizer"),
        (["auto", "unet", "1", "--gates", "/nowhere.toml"], "cannot read gates file /nowhere"),
        (["verify", "half"], "verify: half has no canary label; run `canary` first"),
        (["abort", "half"], "half has no canary label"),
        (["rollback", "half"], "rollback: half has no previous stable version; nothing to roll"),
        (["canary", "half", "x"], "argument version: invalid int value: 'x'"),
        (["launch", "half"], "invalid choice: 'launch'"),
    ],
)
def test_refusals_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    local = tmp_path / "models"
    (local / "half" / "1").mkdir(parents=True)
    cfg = tmp_path / "models.config"
    cfg.write_text(CONFIG.format(base="/models"))
    flags = ["--server", NO_SERVER, "--config", str(cfg), "--base_path_map", f"/models={local}"]
    code, out, err = run_cli(capsys, *flags, *argv)
    assert code == 2 and out == ""
    assert message.format(local=local) in err and err.count("\n") == 1, err
    assert cfg.read_text() == CONFIG.format(base="/models")  # untouched


def test_server_errors_are_one_line_and_exit_1(tmp_path, capsys):
    cfg = tmp_path / "models.config"
    cfg.write_text(CONFIG.format(base="/models"))
    code, _, err = run_cli(
        capsys, "--server", NO_SERVER, "--config", str(cfg), "--timeout", "0.5", "status"
    )
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("python -m serving.rollout: ")
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err, err


class Traffic(threading.Thread):
    """Sends predicts without pause: unlabelled, `stable`, and `canary` while `canary_on`."""

    def __init__(self, target: str):
        super().__init__(daemon=True)
        from client.transports.grpc import GrpcTransport

        # No retries: a transient failure must show, not be papered over.
        self.transport = GrpcTransport(target, timeout=10.0, retries=0)
        self.lock = threading.Lock()  # held per request, so flags change between requests
        self.canary_on, self.phase = False, "start"
        self.records: list[tuple[str, str | None, int, float]] = []
        self.failures: list[tuple[str, str | None, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        x = {"x": np.array([1.0], np.float32)}
        turn = 0
        while not self.stopped.is_set():
            label = (None, "stable", "canary")[turn % 3]
            turn += 1
            with self.lock:
                if label == "canary" and not self.canary_on:
                    continue
                phase = self.phase
                try:
                    outputs, version = self.transport.predict("half", x, label=label)
                    self.records.append((phase, label, version, float(outputs["y"][0])))
                except Exception as error:  # every failure is recorded
                    self.failures.append((phase, label, repr(error)))
            time.sleep(0.005)

    def set(self, phase: str, canary_on: bool | None = None) -> None:
        with self.lock:
            self.phase = phase
            if canary_on is not None:
                self.canary_on = canary_on

    def served(self, phase: str, n: int = 5) -> dict[str | None, set[tuple[int, float]]]:
        """Waits for n answers per live label in `phase`: label -> {(version, y)}."""
        from tests.support import wait_for

        labels = (None, "stable", "canary") if self.canary_on else (None, "stable")

        def enough():
            rows = [r for r in self.records if r[0] == phase]
            return all(sum(r[1] == label for r in rows) >= n for label in labels)

        wait_for(enough, timeout=20, message=f"traffic in phase {phase}")
        seen: dict = {}
        for p, label, version, y in list(self.records):
            if p == phase:
                seen.setdefault(label, set()).add((version, round(y, 4)))
        return seen


@pytest.mark.integration
def test_canary_promote_rollback_without_a_failed_request(tmp_path, capsys):
    from tests.known_models import write_known_model
    from tests.support import ServerProcess, corrupt_version

    base = tmp_path / "models"
    write_known_model(base / "half", 1, b=2.0)
    cfg = tmp_path / "models.config"
    lines = CONFIG.format(base=base).splitlines()
    cfg.write_text("\n".join(line for line in lines if '"other"' not in line))
    server = ServerProcess(
        f"--model_config_file={cfg}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models",
        "--max_num_load_retries=0",
        log_path=tmp_path / "server.log",
        rest=False,
    ).start()
    tool = ["--server", f"127.0.0.1:{server.port}", "--config", str(cfg), "--timeout", "30"]
    traffic = Traffic(f"127.0.0.1:{server.port}")
    traffic.start()
    try:
        v1, v2 = (1, 2.5), (2, 3.5)  # y at x=1: 0.5 + 2 and 0.5 + 3
        assert traffic.served("start") == {None: {v1}, "stable": {v1}}

        write_known_model(base / "half", 2, b=3.0)
        traffic.set("canary-ing")
        assert run_cli(capsys, *tool, "canary", "half", "2")[0] == 0
        traffic.set("canary", canary_on=True)
        # Unlabelled requests go to the highest AVAILABLE version: the canary. Hence `stable`.
        assert traffic.served("canary") == {None: {v2}, "stable": {v1}, "canary": {v2}}
        code, out, _ = run_cli(capsys, *tool, "--json", "status", "half")
        status = json.loads(out)["half"]
        assert code == 0 and status["labels"] == {"stable": 1, "canary": 2}
        assert [(r["version"], r["state"]) for r in status["versions"]] == [
            (2, "AVAILABLE"),
            (1, "AVAILABLE"),
        ]

        traffic.set("promoting", canary_on=False)
        # `half` is no model of the registries, so it has no gates: promote it without them.
        assert run_cli(capsys, *tool, "promote", "half", "--force")[0] == 0
        traffic.set("promoted")
        assert traffic.served("promoted") == {None: {v2}, "stable": {v2}}
        report = Rollout(f"127.0.0.1:{server.port}", str(cfg), 5.0).status("half")
        states = {r["version"]: r["state"] for r in report["half"]["versions"]}
        assert states == {2: "AVAILABLE", 1: "END"}
        sidecar = config_file.sidecar_path(cfg)
        assert json.loads(sidecar.read_text()) == {"half": {"previous_stable": 1}}

        traffic.set("rolling back")
        assert run_cli(capsys, *tool, "rollback", "half")[0] == 0
        traffic.set("rolled back")
        assert traffic.served("rolled back") == {None: {v1}, "stable": {v1}}
        assert versions(rc.read_config(cfg)) == [1]

        corrupt_version(base / "half", 3)
        traffic.set("bad canary")
        t0 = time.monotonic()
        code, _, err = run_cli(capsys, *tool, "canary", "half", "3")
        assert code == 1 and err.count("\n") == 1, err
        assert "canary: half version 3 failed to load: " in err
        assert time.monotonic() - t0 < 20  # reported when it fails, not at --timeout
        traffic.set("after bad canary")
        assert traffic.served("after bad canary") == {None: {v1}, "stable": {v1}}
        config = rc.read_config(cfg)
        assert versions(config) == [1] and rc.labels_of(config, "half") == {"stable": 1}
    finally:
        traffic.stopped.set()
        traffic.join(10)
        server.stop()
    assert traffic.failures == [], traffic.failures[:5]
    assert len(traffic.records) > 50
