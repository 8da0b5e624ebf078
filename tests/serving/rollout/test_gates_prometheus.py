"""`verify --prometheus URL`: the latency gates read each version's p50/p99 from a real
Prometheus (Debian's package) scraping the real server every second.

The server serves the shipped slim U-Net as `stable` (1) and an exact copy as `canary` (2);
version 3, a slow twin of 1, waits on disk for the test that labels it canary.

Example:
    .venv/bin/python -m pytest tests/serving/rollout/test_gates_prometheus.py -q
"""

from __future__ import annotations

import json

import pytest

from serving.rollout import cli as rollout
from serving.rollout.prometheus import PrometheusError, check_url
from tests.prometheus import Prometheus, binary
from tests.serving.rollout.unet_server import start_server, write_versions
from tests.support import free_port

pytestmark = pytest.mark.integration

# Version and spin rounds of the slow twin: about 60-80 ms more per answer, where the slim U-Net
# answers in 20-35 ms here.
SLOW = (3, 800)


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_builds):
    binary("prometheus")
    root = tmp_path_factory.mktemp("gates-prometheus")
    server, config, gates = start_server(root, write_versions(root, shared_builds, slow=SLOW))
    prom = Prometheus(root, f"127.0.0.1:{server.rest_port}")
    try:
        prom.wait_ready()
        prom.wait_scraping()
        yield server, config, gates, prom
    finally:
        prom.stop()
        assert server.stop() == 0, server.log()


def verify(capsys, server, config, *flags: str) -> tuple[int, str, str]:
    argv = ["--server", f"127.0.0.1:{server.port}", "--config", str(config), "--timeout", "30"]
    code = rollout.main([*argv, *flags])
    out, err = capsys.readouterr()
    with capsys.disabled():  # the gate tables, for the record (`pytest -s` shows them)
        print(f"\n$ python -m serving.rollout {' '.join(flags)}\n{out}{err}", end="")
    return code, out, err


def latency_rows(report: dict) -> dict[str, dict]:
    return {row["gate"]: row for row in report["gates"] if row["gate"].startswith("latency")}


def test_equal_versions_pass_with_latency_from_prometheus(served, capsys):
    """Catches latency still taken from the tool's timings, and a window that misses requests:
    Prometheus' count per version covers at least every golden request the tool sent."""
    server, config, gates, prom = served
    code, out, err = verify(
        capsys, server, config, "--json", "verify", "unet", "--gates", str(gates),
        "--prometheus", prom.url,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["latency_source"] == "prometheus"
    sent = int(next(r for r in report["gates"] if r["gate"] == "errors, canary golden")["canary"]
               .split("/")[1])  # fmt: skip
    rows = latency_rows(report)
    # A latency gate that fails the first pass is confirmed by a second one (a loaded machine can
    # do it); Prometheus' figures, like the tool's, are then the second pass's: half the requests.
    passes = 2 if any("second timed pass" in row["note"] for row in rows.values()) else 1
    for label in ("stable", "canary"):
        measured = report["latency_ms"][label]
        assert measured["n"] >= sent // passes, (label, measured, sent, passes)
        assert 0 < measured["p50"] <= measured["p99"]
    assert set(rows) == {"latency p50 (ms)", "latency p99 (ms)"}
    for row in rows.values():
        assert row["result"] == "pass" and row["note"].startswith("Prometheus: in-server"), row

    # Without --prometheus the same rows say the tool timed them.
    code, out, err = verify(
        capsys, server, config, "--json", "verify", "unet", "--gates", str(gates)
    )
    report = json.loads(out)
    assert code == 0 and report["latency_source"] == "tool", err
    assert all(r["note"].startswith("timed by the tool") for r in latency_rows(report).values())


def test_a_slowed_canary_fails_the_latency_gate_from_prometheus(served, capsys):
    """The slow twin answers like stable (the quality gates pass) but its in-server latency,
    as Prometheus has it, fails the p50 gate."""
    server, config, gates, prom = served
    code, _, err = verify(capsys, server, config, "canary", "unet", str(SLOW[0]))
    assert code == 0, err
    try:
        code, out, err = verify(
            capsys, server, config, "--json", "verify", "unet", "--gates", str(gates),
            "--prometheus", prom.url,
        )  # fmt: skip
        report = json.loads(out)
        assert code == 1 and report["latency_source"] == "prometheus"
        assert "latency p50 (ms)" in report["failed"], report["failed"]
        assert "agreement dice" not in report["failed"]
        assert report["latency_ms"]["canary"]["p50"] > 1.5 * report["latency_ms"]["stable"]["p50"]
        assert err.startswith(
            f"python -m serving.rollout: verify: unet version {SLOW[0]} fails gate latency p50"
        ), err
    finally:
        assert verify(capsys, server, config, "canary", "unet", "2")[0] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1:9090", "expected the Prometheus server's base URL"),
        ("127.0.0.1:9090", "expected the Prometheus server's base URL"),
        ("http://127.0.0.1:port", "--prometheus 'http://127.0.0.1:port': Port could not be cast"),
        ("http://127.0.0.1:9090/api?x=1", "with no query"),
    ],
)
def test_a_url_that_is_not_a_prometheus_base_url_is_refused(url, message):
    with pytest.raises(PrometheusError, match=message.replace("?", r"\?")):
        check_url(url)


def test_check_url_keeps_a_path_prefix():
    """A Prometheus behind a path prefix (--web.route-prefix) is asked under that prefix."""
    assert check_url("https://mon.example:9090/prom/") == "https://mon.example:9090/prom"


def test_prometheus_errors_are_one_line_before_anything_is_sent(served, capsys):
    """Unreachable, and a server that is not Prometheus (the model server's REST port): usage
    errors (exit 2), refused before a golden request is sent."""
    server, config, _, _ = served
    nobody = f"http://127.0.0.1:{free_port()}"
    code, _, err = verify(capsys, server, config, "verify", "unet", "--prometheus", nobody)
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach Prometheus at {nobody}: [Errno 111] Connection refused" in err, err

    rest = f"http://127.0.0.1:{server.rest_port}"
    code, _, err = verify(capsys, server, config, "verify", "unet", "--prometheus", rest)
    assert code == 2 and err.count("\n") == 1
    assert f"Prometheus at {rest} answered HTTP 404" in err, err


def test_a_prometheus_without_the_per_version_series_names_real_tf_serving(
    served, capsys, tmp_path
):
    """A Prometheus that never scraped the server (as one scraping real TF Serving, which has no
    per-version histogram): one line naming the cause, exit 1, after the scrape wait."""
    server, config, gates, _ = served
    elsewhere = Prometheus(tmp_path, f"127.0.0.1:{free_port()}")  # a target nobody serves
    try:
        elsewhere.wait_ready()
        argv = ["--server", f"127.0.0.1:{server.port}", "--config", str(config)]
        code = rollout.main(
            [*argv, "--timeout", "3", "verify", "unet", "--gates", str(gates),
             "--prometheus", elsewhere.url]
        )  # fmt: skip
        _, err = capsys.readouterr()
    finally:
        elsewhere.stop()
    assert code == 1 and err.count("\n") == 1, err
    assert "has no serving_embedded_version_request_latency series" in err
    assert "real TF Serving does not export it" in err
