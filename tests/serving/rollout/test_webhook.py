"""The gate service for Flagger: the real `python -m serving.rollout ... webhook` process, called
with Flagger's webhook payload over real HTTP, against a real server of the shipped slim U-Net
(`stable` 1, an identical `canary` 2; an untrained export, 3, waits on disk).

Example:
    .venv/bin/python -m pytest tests/serving/rollout/test_webhook.py -q
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from serving.rollout import cli as rollout
from serving.rollout.webhook import MAX_BODY_BYTES, MAX_CONNECTIONS, parse_listen
from tests.serving.rollout.unet_server import start_server, write_versions
from tests.support import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

UNTRAINED = 3
READ_TIMEOUT_S = 1.0


def flagger_payload(model: str = "unet", **metadata: str) -> dict:
    """What Flagger POSTs to a webhook (pkg/controller/webhook.go: CanaryWebhookPayload)."""
    return {
        "name": "tfserving",
        "namespace": "tfserving",
        "phase": "Progressing",
        "checksum": "6c7b9c6d5f",
        "metadata": {"model": model, **metadata},
    }


class GateProcess:
    """The gate service as Kubernetes runs it, on a free loopback port."""

    def __init__(self, server, config, gates, log_path):
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        tool = ["--server", f"127.0.0.1:{server.port}", "--config", str(config), "--timeout", "30"]
        listen = ["--listen", f"127.0.0.1:{self.port}", "--read_timeout", str(READ_TIMEOUT_S)]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.rollout",
                *tool,
                "webhook",
                *listen,
                "--gates",
                str(gates),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=60, message=f"gate service up:\n{self.log()}")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log()
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, JSON answer) of one request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def post(self, payload) -> tuple[int, dict]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", "/gate", body, {"Content-Type": "application/json"})

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._log.close()
        return code


@pytest.fixture(scope="module")
def gate(tmp_path_factory, shared_builds):
    root = tmp_path_factory.mktemp("webhook")
    server, config, gates = start_server(
        root, write_versions(root, shared_builds, untrained=UNTRAINED)
    )
    service = GateProcess(server, config, gates, root / "webhook.log")
    try:
        yield service, server, config
    finally:
        assert service.stop() == 0, service.log()
        assert server.stop() == 0, server.log()


def test_an_identical_canary_passes_and_a_second_call_meanwhile_is_busy(gate):
    """200 with the report for Flagger's payload; while that verification runs, another call
    answers 409 at once and the probe still answers."""
    service, _, _ = gate
    first: dict = {}
    caller = threading.Thread(target=lambda: first.update(answer=service.post(flagger_payload())))
    caller.start()
    wait_for(lambda: service.request("GET", "/healthz")[1]["busy"], timeout=30, interval=0.05)
    started = time.monotonic()
    status, answer = service.post(flagger_payload())
    assert (status, time.monotonic() - started < 5) == (409, True), answer
    assert answer["error"].startswith("another verification is running")
    caller.join(120)

    status, report = first["answer"]
    assert status == 200, report
    assert report["passed"] and report["outcome"] == "passed"
    assert (report["model"], report["stable"], report["canary"]) == ("unet", 1, 2)
    assert {"agreement dice", "truth dice", "latency p50 (ms)"} <= {
        g["gate"] for g in report["gates"]
    }
    assert service.request("GET", "/healthz") == (200, {"status": "serving", "busy": False})
    assert "POST /gate unet: 200 in " in service.log()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"model=unet", "the body is not JSON"),
        (b"[]", "expected a JSON object: Flagger's webhook payload"),
        ({"name": "tfserving", "phase": "Progressing"}, "no metadata: set the webhook's metadata"),
        ({"metadata": {"model": ""}}, "metadata.model must name the served model"),
        ({**flagger_payload(), "phase": 3}, "phase must be a string, got int"),
        (flagger_payload(cmd="hey"), "unknown metadata key 'cmd'; valid: model"),
        (flagger_payload("nope"), "unknown model 'nope' (the config has: unet)"),
    ],
    ids=["not-json", "not-object", "no-metadata", "empty-model", "phase-int", "extra-key", "model"],
)
def test_a_malformed_body_or_unknown_model_is_400(gate, body, message):
    service, _, _ = gate
    status, answer = service.post(body)
    assert (status, answer["error"][: len(message)]) == (400, message), answer


def test_an_oversized_body_is_413_whether_declared_or_chunked(gate):
    service, _, _ = gate
    padded = json.dumps({**flagger_payload(), "pad": "x" * MAX_BODY_BYTES}).encode()
    status, answer = service.post(padded)
    assert status == 413 and f"the limit is {MAX_BODY_BYTES}" in answer["error"], answer

    # Chunked: no Content-Length to refuse it by; the read stops past the limit.
    chunks = (padded[i : i + 4096] for i in range(0, len(padded), 4096))
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    try:
        connection.request("POST", "/gate", body=chunks, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413, response.read()
    finally:
        connection.close()


def test_paths_and_methods(gate):
    service, _, _ = gate
    assert service.request("GET", "/gate")[0] == 405
    assert service.request("POST", "/healthz", b"{}")[0] == 405
    assert service.request("GET", "/metrics")[0] == 404


def test_a_slow_head_is_dropped_and_a_slow_body_is_408(gate):
    """A client that sends its request slowly holds a connection for --read_timeout at most."""
    service, _, _ = gate
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"POST /gate HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed, without an answer: there was no request
        assert time.monotonic() - started < READ_TIMEOUT_S + 3
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"POST /gate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(4096):  # the answer, then the close
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"did not arrive within 1 s" in answer


def test_a_failing_canary_is_412_with_the_failing_rows(gate, capsys):
    """The untrained canary fails the agreement and truth gates: Flagger sees a status above
    202 (a failed check), and the failing rows come first in the answer."""
    service, server, config = gate
    tool = ["--server", f"127.0.0.1:{server.port}", "--config", str(config), "--timeout", "60"]
    assert rollout.main([*tool, "canary", "unet", str(UNTRAINED)]) == 0, capsys.readouterr().err
    status, answer = service.post(flagger_payload())
    assert status == 412, answer
    assert answer["outcome"] == "failed" and answer["canary"] == UNTRAINED
    failing = {row["gate"] for row in answer["failing"]}
    assert {"agreement dice", "truth dice"} <= failing
    assert all(row["result"] == "FAIL" for row in answer["failing"])
    assert answer["error"].startswith(f"unet version {UNTRAINED} fails gate agreement dice")

    # Without a canary label the verification is refused before any request: 422.
    assert rollout.main([*tool, "abort", "unet"]) == 0
    status, answer = service.post(flagger_payload())
    assert status == 422 and "has no canary label" in answer["error"], answer


def test_connections_beyond_the_cap_are_closed_at_accept(gate):
    """MAX_CONNECTIONS idle connections are held (each until --read_timeout); one more is closed
    before it can send a request, and once they go the service answers again."""
    service, _, _ = gate
    idle = [
        socket.create_connection(("127.0.0.1", service.port), timeout=10)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as extra:
            assert extra.recv(1024) == b""
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: service.request("GET", "/healthz")[0] == 200, timeout=10)


@pytest.mark.parametrize(
    ("text", "address"),
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::]:8080", ("::", 8080)), ("gate:80", ("gate", 80))],
)
def test_listen_addresses(text, address):
    assert parse_listen(text) == address


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "8080"], "--listen expects HOST:PORT (e.g. 0.0.0.0:8080), got '8080'"),
        (["--listen", "0.0.0.0:70000"], "--listen expects HOST:PORT"),
        (["--read_timeout", "0"], "--read_timeout must be above 0 s, got 0"),
        (["--prometheus", "prometheus:9090"], "--prometheus 'prometheus:9090': expected"),
        (["--gates", "/nonexistent/gates.toml"], "cannot read gates file /nonexistent/gates.toml"),
    ],
)
def test_the_service_refuses_bad_options_before_serving(capsys, flags, message):
    """Usage errors: one line, exit 2, nothing served."""
    argv = ["--server", "127.0.0.1:1", "--config", str(ROOT / "serving" / "models.config")]
    assert rollout.main([*argv, "webhook", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err
