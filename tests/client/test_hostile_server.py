"""The client against a hostile or broken server: huge answers, trickled answers.

Each server here is real (an `http.server` or a `grpc.server` in the test process) and misbehaves
on purpose; the client must give up with its usual error, within its limits.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import tracemalloc
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest

from client import cli
from client.api import ServingClient
from client.errors import ClientError
from client.transports.base import MAX_RESPONSE_BYTES
from client.transports.grpc import GrpcTransport
from client.transports.rest import RestTransport
from common.wire import predict_pb2

MiB = 2**20
STATUS = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {}}]}
# One byte every TRICKLE_S seconds: each byte renews a per-read socket timeout.
TRICKLE_S = 0.2


class _HostileHandler(BaseHTTPRequestHandler):
    """Misbehaves per the model name in the path: /v1/models/<behaviour>[/...]."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        behaviour = self.path.split("/")[3].split(":")[0]
        # The client giving up mid-answer is what it should do.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            getattr(self, "_" + behaviour)()

    def do_POST(self) -> None:
        self.do_GET()

    def _ok(self) -> None:
        self._answer(json.dumps(STATUS).encode())

    def _ok_until_close(self) -> None:
        # Neither a length nor chunks: the body ends when the server closes the connection.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        self.wfile.write(json.dumps(STATUS).encode())
        self.close_connection = True

    def _until_close(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        block = b" " * (64 * 2**10)
        for _ in range(100 * MiB // len(block)):
            self.wfile.write(block)
        self.close_connection = True

    def _declared(self) -> None:
        # Announces a 100 MiB body and sends it.
        self._stream(100 * MiB, chunked=False)

    def _declared_default(self) -> None:
        # Announces one byte more than the client's default cap, then sends nothing.
        self.send_response(200)
        self.send_header("Content-Length", str(MAX_RESPONSE_BYTES + 1))
        self.end_headers()
        time.sleep(5)

    def _chunked(self) -> None:
        # No length at all: 100 MiB in chunks, as an endless stream would start.
        self._stream(100 * MiB, chunked=True)

    def _trickle_body(self) -> None:
        body = json.dumps(STATUS).encode().ljust(100)  # 20 s at one byte per TRICKLE_S
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            time.sleep(TRICKLE_S)

    def _trickle_headers(self) -> None:
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(
            b"X-Padding-%d: %s\r\n" % (i, b"x" * 20) for i in range(4)
        )
        for i in range(len(head)):  # about 20 s
            self.wfile.write(head[i : i + 1])
            time.sleep(TRICKLE_S)
        self._answer(json.dumps(STATUS).encode())

    def _garbled(self) -> None:
        # JSON, but of no shape TF Serving writes, for every path.
        self._answer(json.dumps({"model_version_status": [7], "outputs": [[1], [2, 3]]}).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, size: int, *, chunked: bool) -> None:
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b" " * (64 * 2**10)
        for _ in range(size // len(block)):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# -- size cap ----------------------------------------------------------------------------------


def test_rest_reads_answers_of_every_framing(hostile_url):
    """Catches a socket closed under the answer that the server ends by closing."""
    with RestTransport(hostile_url, timeout=30) as rest:
        for behaviour in ("ok", "ok_until_close", "ok", "ok_until_close"):
            assert rest.status(behaviour)[0]["state"] == "AVAILABLE", behaviour


@pytest.mark.parametrize("behaviour", ["declared", "chunked", "until_close"])
def test_rest_refuses_an_answer_over_the_cap_before_buffering_it(hostile_url, behaviour):
    """Catches reading the whole body first (100 MiB held) and checking its size afterwards."""
    with RestTransport(hostile_url, max_response_bytes=MiB, timeout=30) as rest:
        tracemalloc.start()
        try:
            with pytest.raises(ClientError) as caught:
                rest.status(behaviour)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert "1048576 bytes" in caught.value.message
        assert "max_response_bytes" in caught.value.message
        assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB buffered for a 1 MiB cap"
        # The connection with the unread rest of the body is dropped; the next call works.
        assert rest.status("ok")[0]["state"] == "AVAILABLE"


def test_rest_default_cap_refuses_a_declared_length_over_it(hostile_url):
    with RestTransport(hostile_url, timeout=30) as rest, pytest.raises(ClientError) as caught:
        rest.status("declared_default")
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert f"{MAX_RESPONSE_BYTES} bytes" in caught.value.message


def test_cli_max_response_mib(capsys, hostile_url):
    argv = ["status", "declared", "--rest", hostile_url, "--max-response-mib", "2"]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == cli.EXIT_SERVER and not out
    (line,) = err.splitlines()
    assert "RESOURCE_EXHAUSTED" in line and str(2 * MiB) in line


def _big_predict_server(answer_bytes: int) -> tuple[grpc.Server, int]:
    """A gRPC server whose Predict answers with `answer_bytes` of float32 zeros."""
    response = predict_pb2.PredictResponse()
    response.outputs["y"].dtype = 1  # DT_FLOAT
    response.outputs["y"].tensor_shape.dim.add().size = answer_bytes // 4
    response.outputs["y"].tensor_content = bytes(answer_bytes)
    return _predict_server(response)


def _predict_server(response: predict_pb2.PredictResponse) -> tuple[grpc.Server, int]:
    """A gRPC server whose Predict gives `response` to every request."""
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                lambda request, context: response,
                request_deserializer=predict_pb2.PredictRequest.FromString,
                response_serializer=predict_pb2.PredictResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_grpc_receive_limit_is_the_response_cap():
    """Catches a channel that accepts any answer up to 2 GiB whatever the cap says."""
    server, port = _big_predict_server(2 * MiB)
    x = {"x": np.zeros(1, np.float32)}
    try:
        small = GrpcTransport(f"127.0.0.1:{port}", max_response_bytes=MiB, timeout=30)
        with small, pytest.raises(ClientError) as caught:
            small.predict("m", x)
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert "max_response_bytes" in caught.value.message
        with GrpcTransport(f"127.0.0.1:{port}", max_response_bytes=4 * MiB, timeout=30) as big:
            assert big.predict("m", x)[0]["y"].nbytes == 2 * MiB
    finally:
        server.stop(None)


# -- overall deadline --------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["trickle_body", "trickle_headers"])
def test_a_trickle_cannot_extend_the_deadline(hostile_url, behaviour):
    """Catches a socket timeout renewed by every byte: the trickle would take 20 s."""
    with RestTransport(hostile_url, timeout=1.0) as rest:
        started = time.monotonic()
        with pytest.raises(ClientError) as caught:
            rest.status(behaviour)
        elapsed = time.monotonic() - started
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert 0.9 <= elapsed < 6.0, elapsed


def test_a_trickled_answer_falls_back_at_the_deadline(hostile_url):
    image = np.zeros((32, 48, 3), np.uint8)
    image[8:24, 12:36] = 200
    with ServingClient.rest(hostile_url, timeout=1.0) as client:
        started = time.monotonic()
        result = client.segment(image, model="trickle_body")[0]
        elapsed = time.monotonic() - started
    assert result.source == "fallback:otsu"
    assert result.mask[16, 24] and not result.mask[0, 0]
    assert elapsed < 6.0, elapsed


# -- malformed answers -------------------------------------------------------------------------


def test_rest_answers_of_the_wrong_shape_are_client_errors(hostile_url):
    """Catches KeyError, TypeError or AttributeError escaping from a garbled answer."""
    with RestTransport(hostile_url, timeout=30) as rest:
        for call in (
            lambda: rest.status("garbled"),
            lambda: rest.metadata("garbled"),
            lambda: rest.predict("garbled", {"x": np.zeros(1, np.float32)}),
        ):
            with pytest.raises(ClientError) as caught:
                call()
            assert caught.value.code == "INTERNAL"
            assert "unexpected answer" in caught.value.message


def test_grpc_broadcast_answer_is_refused_before_it_is_decoded():
    """Catches decoding a 20-byte answer into shape x one value: 64 MiB held for a 1 MiB cap."""
    response = predict_pb2.PredictResponse()
    response.outputs["y"].dtype = 1  # DT_FLOAT
    response.outputs["y"].tensor_shape.dim.add().size = 16 * MiB
    response.outputs["y"].float_val.append(0.25)
    server, port = _predict_server(response)
    try:
        grpc_t = GrpcTransport(f"127.0.0.1:{port}", max_response_bytes=MiB, timeout=30)
        with grpc_t, pytest.raises(ClientError) as caught:
            tracemalloc.start()
            try:
                grpc_t.predict("m", {"x": np.zeros(1, np.float32)})
            finally:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert f"{64 * MiB} bytes" in caught.value.message
        assert "max_response_bytes" in caught.value.message
        assert peak < 8 * MiB, f"{peak / MiB:.0f} MiB decoded for a 1 MiB cap"
    finally:
        server.stop(None)


def test_grpc_tensor_that_does_not_decode_is_a_client_error():
    response = predict_pb2.PredictResponse()
    response.outputs["y"].dtype = 1  # DT_FLOAT
    response.outputs["y"].tensor_shape.dim.add().size = 4
    response.outputs["y"].tensor_content = bytes(3)  # 16 bytes needed
    server, port = _predict_server(response)
    try:
        grpc_t = GrpcTransport(f"127.0.0.1:{port}", timeout=30)
        with grpc_t, pytest.raises(ClientError) as caught:
            grpc_t.predict("m", {"x": np.zeros(1, np.float32)})
        assert caught.value.code == "INTERNAL"
        assert "tensor_content has 3 bytes" in caught.value.message
    finally:
        server.stop(None)
