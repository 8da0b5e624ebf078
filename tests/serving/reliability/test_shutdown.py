"""SIGTERM always ends the server within its drain deadline, with exit status 0.

In flight at the signal: a slow REST upload, a gRPC call longer than the deadline, and a model
still loading. Each must not hold the process past `--drain_seconds` (plus start-up slack).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import from_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.integration

DRAIN = 2.0


def _server(tmp_path, *flags: str, wait: bool = True, rest: bool = True) -> ServerProcess:
    write_known_model(tmp_path / "half", 1, warmup="good")
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={tmp_path / 'half'}",
        f"--drain_seconds={DRAIN:g}",
        *flags,
        log_path=tmp_path / "server.log",
        rest=rest,
    )
    return server.start(wait=wait)


def _terminate(server: ServerProcess) -> float:
    """SIGTERM; returns the seconds until the process exited with status 0."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0, server.log()
    return time.monotonic() - started


def test_slow_upload_does_not_hold_the_server_past_the_deadline(tmp_path):
    server = _server(tmp_path)
    try:
        upload = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        upload.sendall(
            b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            b'{"instances": [1'
        )
        idle = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        idle.request("GET", "/v1/models/half")
        assert idle.getresponse().read()  # a kept-alive idle connection, too
        time.sleep(0.2)
        elapsed = _terminate(server)
        assert elapsed < DRAIN + 3, f"exited after {elapsed:.1f} s"
        upload.settimeout(5)
        # The server closed the connection (an orderly close, or a reset: closed either way).
        with contextlib.suppress(ConnectionResetError):
            assert upload.recv(4096) == b""
        upload.close()
    finally:
        server.channel = None
        server.stop()
    assert "requests in flight get up to 2 s" in server.log()


def test_grpc_call_longer_than_the_deadline_is_cancelled_and_the_server_exits(tmp_path):
    server = _server(tmp_path, rest=False)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name="half", signature_name="spin")
        )
        request.inputs["x"].CopyFrom(from_numpy(np.array([4.0], np.float32)))
        # Far longer than the drain deadline on this machine.
        request.inputs["rounds"].CopyFrom(from_numpy(np.array([10**7], np.int32)))
        future = stub.Predict.future(request, timeout=120)
        time.sleep(0.5)
        assert not future.done()
        elapsed = _terminate(server)
        assert elapsed < DRAIN + 3, f"exited after {elapsed:.1f} s"
        with pytest.raises(grpc.RpcError) as caught:
            future.result(timeout=10)
        assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    finally:
        server.channel = None
        server.stop()


def test_sigterm_while_the_model_loads_exits_at_once_with_0(tmp_path):
    # Replaying the warmup record this many times keeps the version loading for a long while.
    server = _server(tmp_path, "--num_request_iterations_for_warmup=10000000", wait=False)
    try:
        wait_for(lambda: "Loading servable version" in server.log(), 120, message="the load")
        time.sleep(0.5)
        elapsed = _terminate(server)
        assert elapsed < DRAIN + 3, f"exited after {elapsed:.1f} s"
        assert "Stopped while loading the initial models" in server.log()
    finally:
        server.stop()


def _threads_taking(pid: int, signum: int) -> list[int]:
    """The ids of the server's threads that do not block `signum` (SigBlk is a hex mask; a
    thread in sigwait shows the signals it waits for as unblocked while it waits)."""
    takers = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        if not int(fields["SigBlk"], 16) >> (signum - 1) & 1:
            takers.append(int(tid))
    return takers


@pytest.mark.parametrize("phase", ["loading", "serving"])
def test_no_thread_but_the_signal_taker_can_catch_sigterm(tmp_path, phase):
    """The kernel hands a signal sent to the process (as Kubernetes and docker send it) to any
    thread that does not block it. Caught by a TensorFlow or grpcio thread, it would wait for
    the main thread's next bytecode, and the server would not stop. So every thread blocks
    SIGTERM and SIGINT, and one takes them with sigwait; a plain SIGTERM then still drains."""
    flags = ("--num_request_iterations_for_warmup=10000000",) if phase == "loading" else ()
    server = _server(tmp_path, *flags, wait=phase == "serving")
    try:
        if phase == "loading":
            wait_for(lambda: "Loading servable version" in server.log(), 120, message="the load")
        threads = os.listdir(f"/proc/{server.process.pid}/task")
        assert len(threads) > 10, threads  # TensorFlow's and grpcio's threads are up
        for signum in (signal.SIGTERM, signal.SIGINT):
            takers = _threads_taking(server.process.pid, signum)
            assert len(takers) == 1 and takers[0] != server.process.pid, (signum, takers)
        elapsed = _terminate(server)
        assert elapsed < DRAIN + 3, f"exited after {elapsed:.1f} s"
        assert "Received SIGTERM" in server.log()
    finally:
        server.channel = None
        server.stop()
