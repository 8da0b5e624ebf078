"""Both client transports against the real `python -m serving` process and known answers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from client.errors import ClientError
from client.transports import base as transport_module
from client.transports.grpc import GrpcTransport
from client.transports.rest import RestTransport
from tests.support import free_port

pytestmark = pytest.mark.integration

F32 = np.float32


@pytest.fixture(scope="module", params=["grpc", "rest"])
def transport(request, known_server):
    """One transport per kind, shared by the module's tests as a real client would share it."""
    if request.param == "grpc":
        made = GrpcTransport(f"127.0.0.1:{known_server.port}", timeout=20)
    else:
        made = RestTransport(f"http://127.0.0.1:{known_server.rest_port}", timeout=20)
    with made:
        yield made


def test_predict_known_answers(transport):
    outputs, version = transport.predict("half", {"x": np.array([1.0, 2.0, 3.0], F32)})
    assert version == 1 and list(outputs) == ["y"]
    assert outputs["y"].dtype == F32
    np.testing.assert_array_equal(outputs["y"], [2.5, 3.0, 3.5])

    outputs, _ = transport.predict(
        "half", {"a": np.array([5.0], F32), "b": np.array([2.0], F32)}, signature="two_inputs"
    )
    assert outputs["sum"].tolist() == [7.0] and outputs["diff"].tolist() == [3.0]

    text = np.array([b"ab\xff\x00", "é", b""], dtype=object)
    outputs, _ = transport.predict("half", {"text": text}, signature="echo_bytes")
    assert outputs["text_bytes"].tolist() == [b"ab\xff\x00", "é".encode(), b""]
    assert outputs["length"].dtype == np.int32 and outputs["length"].tolist() == [4, 2, 0]


def test_output_filter_answers_only_the_named_outputs_over_grpc(transport):
    # A filter the transport dropped (or one the server ignored) would answer `diff` too, which
    # the client neither reads nor should pay to receive.
    inputs = {"a": np.array([5.0], F32), "b": np.array([2.0], F32)}
    outputs, _ = transport.predict("half", inputs, signature="two_inputs", output_filter=["sum"])
    expected = ["sum"] if isinstance(transport, GrpcTransport) else ["diff", "sum"]
    assert sorted(outputs) == expected  # TF Serving's REST API has no output filter
    assert outputs["sum"].tolist() == [7.0]


def test_versions_and_labels(transport):
    x = {"x": np.array([1.0, 2.0], F32)}
    # triple: y = 3x + version - 1, with stable -> 1 and canary -> 2.
    for pin, expected_version in [
        ({}, 2),
        ({"version": 1}, 1),
        ({"version": 2}, 2),
        ({"label": "stable"}, 1),
        ({"label": "canary"}, 2),
    ]:
        outputs, version = transport.predict("triple", x, **pin)
        assert version == expected_version, pin
        np.testing.assert_array_equal(outputs["y"], 3 * x["x"] + expected_version - 1)
    with pytest.raises(ValueError):
        transport.predict("triple", x, version=1, label="stable")
    with pytest.raises(ClientError) as caught:
        transport.predict("triple", x, version=7)
    assert caught.value.code == "NOT_FOUND"


def test_metadata(transport):
    meta = transport.metadata("half")
    assert meta["name"] == "half" and meta["version"] == 1
    assert set(meta["signatures"]) >= {"serving_default", "two_inputs", "echo_bytes", "matrix"}
    assert meta["signatures"]["serving_default"] == {
        "method_name": "tensorflow/serving/predict",
        "inputs": {"x": {"dtype": "DT_FLOAT", "shape": [-1]}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "shape": [-1]}},
    }
    assert meta["signatures"]["matrix"]["inputs"]["m"] == {"dtype": "DT_FLOAT", "shape": [-1, 3]}
    echo = meta["signatures"]["echo_bytes"]["outputs"]
    assert echo["text_bytes"]["dtype"] == "DT_STRING" and echo["length"]["dtype"] == "DT_INT32"
    assert transport.metadata("triple", label="stable")["version"] == 1
    assert transport.metadata("triple", version=2)["version"] == 2


def test_status(transport):
    ok = {"state": "AVAILABLE", "error_code": "OK", "error_message": ""}
    assert transport.status("half") == [{"version": 1, **ok}]
    assert sorted(s["version"] for s in transport.status("triple")) == [1, 2]
    assert transport.status("triple", version=1) == [{"version": 1, **ok}]


def test_both_transports_agree(known_server):
    grpc_t = GrpcTransport(f"127.0.0.1:{known_server.port}")
    rest_t = RestTransport(f"http://127.0.0.1:{known_server.rest_port}")
    with grpc_t, rest_t:
        assert grpc_t.metadata("triple") == rest_t.metadata("triple")
        assert grpc_t.status("triple") == rest_t.status("triple")


def test_errors_are_mapped(transport):
    rest = isinstance(transport, RestTransport)
    with pytest.raises(ClientError) as caught:
        transport.predict("no_such_model", {"x": np.array([1.0], F32)})
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.http_status == (404 if rest else None)
    assert str(caught.value).startswith("NOT_FOUND: ")
    with pytest.raises(ClientError) as caught:
        transport.predict("half", {"not_x": np.array([1.0], F32)})
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.http_status == (400 if rest else None)
    with pytest.raises(ClientError) as caught:
        transport.status("no_such_model")
    assert caught.value.code == "NOT_FOUND"
    # Arrays the client cannot send never reach the server.
    with pytest.raises(ClientError) as caught:
        transport.predict("half", {"x": np.array([b"a", 1], dtype=object)})
    assert caught.value.code == "BAD_INPUT"


def test_deadline_expires(transport):
    inputs = {"x": np.array([1.0], F32), "rounds": np.array([30000], np.int32)}
    started = time.monotonic()
    with pytest.raises(ClientError) as caught:
        transport.predict("half", inputs, signature="spin", timeout=0.2)
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 2.0
    # The transport stays usable after an abandoned call.
    assert transport.predict("half", {"x": np.array([2.0], F32)})[0]["y"].tolist() == [3.0]


def test_concurrent_calls_share_one_transport(transport):
    results: dict[int, np.ndarray] = {}
    errors: list[Exception] = []

    def work(worker: int) -> None:
        try:
            for call in range(10):
                x = np.array([worker, call, worker * call], F32)
                outputs, _ = transport.predict("half", {"x": x})
                np.testing.assert_array_equal(outputs["y"], 0.5 * x + 2)
            results[worker] = outputs["y"]
        except Exception as error:  # reported by the main thread's assert
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 8


def test_large_response_over_grpc(known_server):
    m = np.random.default_rng(0).random((2_000_000, 3), dtype=F32)
    with GrpcTransport(f"127.0.0.1:{known_server.port}") as grpc_t:
        outputs, _ = grpc_t.predict("half", {"m": m}, signature="matrix")
    assert outputs["row_sum"].nbytes > 4 * 2**20
    np.testing.assert_allclose(outputs["row_sum"], m.sum(axis=1), rtol=1e-6)


def test_matrix_over_rest(known_server):
    m = np.random.default_rng(1).random((20_000, 3), dtype=F32)
    with RestTransport(f"http://127.0.0.1:{known_server.rest_port}") as rest_t:
        outputs, _ = rest_t.predict("half", {"m": m}, signature="matrix")
    assert outputs["row_sum"].dtype == F32
    np.testing.assert_allclose(outputs["row_sum"], m.sum(axis=1), rtol=1e-6)


def test_rest_server_down_is_retried_then_unavailable(monkeypatch):
    # gRPC's retries are gRPC's own (the service config): tests/client/test_balancing.py.
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(transport_module, "_sleep", sleep)
    port = free_port()  # nothing listens there
    made = RestTransport(f"http://127.0.0.1:{port}", retries=3, backoff=0.05, timeout=10)
    started = time.monotonic()
    with made, pytest.raises(ClientError) as caught:
        made.predict("half", {"x": np.array([1.0], F32)})
    elapsed = time.monotonic() - started
    assert caught.value.code == "UNAVAILABLE"
    # Three retries, each after a full-jitter delay under its doubling cap.
    assert len(delays) == 3
    assert all(0 <= d <= 0.05 * 2**n for n, d in enumerate(delays)), delays
    assert elapsed >= sum(delays)


def test_no_retry_on_other_errors(transport, monkeypatch):
    if isinstance(transport, GrpcTransport):
        pytest.skip("gRPC's retries are the service config's: tests/client/test_balancing.py")
    delays: list[float] = []
    monkeypatch.setattr(transport_module, "_sleep", delays.append)
    with pytest.raises(ClientError):
        transport.predict("no_such_model", {"x": np.array([1.0], F32)})
    assert delays == []


class _FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 while `failures` lasts, then a status; drops the connection after each answer
    without saying so, like a server whose keep-alive timer ran out."""

    protocol_version = "HTTP/1.1"
    failures = 0

    def do_GET(self) -> None:
        if type(self).failures > 0:
            type(self).failures -= 1
            status, body = 503, {"error": "overloaded"}
        else:
            status = 200
            body = {"model_version_status": [{"version": "4", "state": "AVAILABLE", "status": {}}]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_rest_reconnects_and_retries_503(monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(transport_module, "_sleep", delays.append)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    expected = [{"version": 4, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]
    try:
        with RestTransport(f"http://127.0.0.1:{server.server_port}", backoff=0.01) as rest_t:
            # A silently closed keep-alive connection is reopened, without a backoff.
            assert rest_t.status("m") == expected
            assert rest_t.status("m") == expected
            assert delays == []
            _FlakyHandler.failures = 2
            assert rest_t.status("m") == expected
            assert len(delays) == 2
            _FlakyHandler.failures = 9
            with pytest.raises(ClientError) as caught:
                rest_t.status("m")
            assert (caught.value.code, caught.value.http_status) == ("UNAVAILABLE", 503)
            assert caught.value.message == "overloaded"
    finally:
        _FlakyHandler.failures = 0
        server.shutdown()
        server.server_close()
