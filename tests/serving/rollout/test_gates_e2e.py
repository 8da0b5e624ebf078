"""Self-verifying rollouts end to end: the real server, the real tool, tiny exported models.

An identical canary passes its gates and is promoted; an untrained one fails the quality gates
and is rolled back; a slow twin fails the latency gate and is rolled back, and so is a model
that breaks the contract; a client calling `stable` throughout sees no failed request. The
client's split sends about a tenth of keyed calls to the canary, each key to one version, and
shadow mode records agreement that `verify` reads.

Example:
    .venv/bin/python -m pytest tests/serving/rollout/test_gates_e2e.py -q
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict

import pytest

from client.api import ServingClient
from client.canary.comparisons import COMPARISONS
from serving.rollout import cli as rollout
from serving.rollout import config_edit as rc
from serving.rollout.golden import BUILT_IN, load_folder
from tests.serving.rollout.canaries import copy_version, export_untrained, write_slow_twin

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CONFIG = """
model_config_list {{
  config {{
    name: "unet" base_path: "{base}/unet" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
"""
# Spin rounds of the slow twin: about 20-30 ms per answer here, against 3-8 ms for the tiny U-Net.
SLOW_ROUNDS = 300


@pytest.fixture(scope="module")
def served(tiny_runs, tiny_exports, tmp_path_factory):
    """The server with unet 1 (the tiny run, labelled stable); canaries wait on disk: 2 an
    identical copy, 3 an untrained export, 4 the slow twin of 1, 5 no U-Net at all."""
    from tests.known_models import write_known_model
    from tests.support import ServerProcess

    root = tmp_path_factory.mktemp("gates")
    base = root / "models"
    tiny_exports.put("unet", base)
    copy_version(base / "unet", 1, 2)
    export_untrained(tiny_runs["unet"], base / "unet", 3, root)
    write_slow_twin(base / "unet", 1, 4, SLOW_ROUNDS)
    write_known_model(base / "unet", 5)  # y = 0.5x + 2: loads fine, breaks the unet contract
    config = root / "models.config"
    config.write_text(CONFIG.format(base=base))
    monitoring = root / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    )
    server = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={monitoring}",
        "--allow_version_labels_for_unavailable_models",
        "--max_num_load_retries=0",
        log_path=root / "server.log",
    )
    with server:
        yield server, config, monitoring, root


def tool_flags(server, config) -> list[str]:
    return ["--server", f"127.0.0.1:{server.port}", "--config", str(config), "--timeout", "60"]


def gate_flags(server, monitoring) -> list[str]:
    return ["--monitoring_config_file", str(monitoring), "--rest_api_port", str(server.rest_port)]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = rollout.main(list(argv))
    out, err = capsys.readouterr()
    with capsys.disabled():  # the gate tables, for the record (`pytest -s` shows them)
        print(f"\n$ python -m serving.rollout {' '.join(argv[6:])}\n{out}{err}", end="")
    return code, out, err


class StableClient(threading.Thread):
    """A client application: segments a car on the `stable` label without pause, no retries."""

    def __init__(self, target: str, image):
        super().__init__(daemon=True)
        from client.transports.grpc import GrpcTransport

        transport = GrpcTransport(target, timeout=30.0, retries=0)
        self.client = ServingClient(transport, fallback="never")
        self.image, self.versions = image, Counter()
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                result = self.client.segment(self.image, version_label="stable")[0]
                self.versions[result.source] += 1
            except Exception as error:  # every failure is recorded
                self.failures.append(repr(error))
            time.sleep(0.005)


def test_auto_promotes_an_identical_canary_and_rolls_back_bad_ones(served, capsys, tmp_path):
    """Four canaries in turn, while a client calls `stable` without pause."""
    server, config, monitoring, _ = served
    tool, gates = tool_flags(server, config), gate_flags(server, monitoring)
    car = load_folder(BUILT_IN / "unet", COMPARISONS["unet"]).items[0].value
    stable = StableClient(f"127.0.0.1:{server.port}", car)
    stable.start()
    try:
        # Identical canary: every gate passes, it is promoted; the picture is written.
        code, out, err = run_cli(capsys, *tool, "auto", "unet", "2", *gates, "--out", str(tmp_path))
        assert code == 0, err
        assert "verdict: PASS" in out and "promote: unet stable=2 (previous 1)" in out
        assert (tmp_path / "verify-unet.png").stat().st_size > 10_000
        assert rc.labels_of(rc.read_config(config), "unet") == {"stable": 2}

        # Untrained canary: the quality gates fail; it is unlabelled and unloaded.
        code, out, err = run_cli(capsys, *tool, "--json", "auto", "unet", "3", *gates)
        report = json.loads(out)
        assert code == 1 and report["outcome"] == "rolled back"
        assert {"agreement dice", "truth dice"} <= set(report["failed"])
        assert err.count("\n") == 1, err
        assert err.startswith("python -m serving.rollout: auto: unet version 3 rolled back: gate ")
        assert rc.labels_of(rc.read_config(config), "unet") == {"stable": 2}

        # Slow twin: it answers like version 1 (= 2), but the latency gate fails.
        code, out, err = run_cli(capsys, *tool, "auto", "unet", "4", *gates)
        assert code == 1
        assert "auto: unet version 4 rolled back: gate latency p50 (ms)" in err, err
        rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
        assert "pass" in rows["agreement dice"] and "FAIL" in rows["latency p50 (ms)"]

        # Not a U-Net at all: its signatures break the contract before any gate; rolled back.
        code, out, err = run_cli(capsys, *tool, "auto", "unet", "5", *gates)
        assert code == 1 and err.count("\n") == 1
        assert "auto: unet version 5 rolled back: BAD_CONTRACT: model 'unet' version 5" in err

        config_now = rc.read_config(config)
        policy = rc.model_config(config_now, "unet").model_version_policy
        assert rc.labels_of(config_now, "unet") == {"stable": 2}
        assert list(policy.specific.versions) == [2]
        code, out, _ = run_cli(capsys, *tool, "--json", "status", "unet")
        states = {v["version"]: v["state"] for v in json.loads(out)["unet"]["versions"]}
        assert states == {1: "END", 2: "AVAILABLE", 3: "END", 4: "END", 5: "END"}
    finally:
        stable.stopped.set()
        stable.join(30)
    assert stable.failures == [], stable.failures[:5]
    assert sum(stable.versions.values()) > 50
    assert set(stable.versions) == {"model:unet/1", "model:unet/2"}


def test_the_split_sends_a_tenth_of_keyed_calls_to_the_canary_and_shadow_records_it(
    served, capsys, tmp_path
):
    server, config, _, root = served
    tool = tool_flags(server, config)
    # A fresh identical canary of whatever is stable now (the other test may have promoted).
    stable = rc.labels_of(rc.read_config(config), "unet")["stable"]
    new = max(int(p.name) for p in (root / "models" / "unet").iterdir() if p.name.isdigit()) + 1
    copy_version(root / "models" / "unet", stable, new)
    assert run_cli(capsys, *tool, "canary", "unet", str(new))[0] == 0
    car = load_folder(BUILT_IN / "unet", COMPARISONS["unet"]).items[1].value
    shadow_log = tmp_path / "shadow.jsonl"
    target = f"127.0.0.1:{server.port}"
    keys = [f"user-{i}" for i in range(500)]
    seen: dict[str, set[str]] = defaultdict(set)
    with ServingClient.grpc(
        target, canary_fraction=0.1, shadow_fraction=0.05, shadow_log=str(shadow_log)
    ) as client:
        # 1,000 calls: every key twice, the second pass in reverse order.
        for key in keys + keys[::-1]:
            seen[key].add(client.segment(car, sticky_key=key)[0].source)
        client.shadow.wait(60)
    on_canary = sum(2 for sources in seen.values() if sources == {f"model:unet/{new} (canary)"})
    share = on_canary / 1000
    with capsys.disabled():
        print(f"\nsplit: {on_canary} of 1000 calls ({share:.1%}) on the canary, {len(seen)} keys")
    assert 0.07 <= share <= 0.13
    assert all(len(sources) == 1 for sources in seen.values())  # each key on one version
    assert set().union(*seen.values()) == {
        f"model:unet/{new} (canary)",
        f"model:unet/{stable} (stable)",
    }

    # Shadow mode mirrored some stable calls to the identical canary: full agreement, and
    # `verify --shadow` reads it.
    records = [json.loads(line) for line in shadow_log.read_text().splitlines()]
    assert records and all(r["measures"]["dice"] == 1.0 for r in records)
    assert {r["canary"] for r in records} == {f"model:unet/{new}"}
    code, out, err = run_cli(capsys, *tool, "verify", "unet", "--shadow", str(shadow_log))
    assert code == 0, err
    assert f"{len(records)} mirrored calls" in out

    # No canary loaded any more: canary keys fall back to stable, and say so.
    assert run_cli(capsys, *tool, "abort", "unet")[0] == 0
    with ServingClient.grpc(target, canary_fraction=0.1) as client:
        canary_key = next(k for k, s in seen.items() if s == {f"model:unet/{new} (canary)"})
        result = client.segment(car, sticky_key=canary_key)[0]
    assert result.source == f"model:unet/{stable} (stable; canary not loaded)"
