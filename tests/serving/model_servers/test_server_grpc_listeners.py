"""`--grpc_socket_path` and `--grpc_channel_arguments` over real server processes and gRPC clients.

TF Serving's own test harness starts every server with both (a UNIX socket at
/tmp/tf-serving.sock and `grpc.so_reuseaddr=1`), and tests Predict over `unix:<path>`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_servers.grpc_services import MAX_MESSAGE_BYTES, server_options, socket_problem
from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import CHANNEL_OPTIONS, ROOT, ServerProcess, TLSCertificates

pytestmark = pytest.mark.integration

# An integer argument that shows on the client (connections closed after a second) and one that
# replaces a default of the server's own (2 GiB messages).
CHANNEL_ARGUMENTS = "grpc.max_connection_age_ms=1000,grpc.max_receive_message_length=1024"


def predict_request(values) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    request.inputs["x"].CopyFrom(from_numpy(np.asarray(values, np.float32)))
    return request


def predict_y(channel, values) -> list[float]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(values), timeout=30)
    return to_numpy(response.outputs["y"], "y").tolist()


def model_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="half")
    )
    return stub.GetModelStatus(request, timeout=30)


def stale_socket(path) -> None:
    """Leaves a socket file at `path` with nobody listening, as a killed server does."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def tcp_listening_ports(pid: int) -> list[int]:
    """The TCP ports process `pid` listens on, from /proc (Linux)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                # Field 3 is the state (0A: LISTEN), field 9 the socket's inode.
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def wait_ready_on_socket(server: ServerProcess, channel: grpc.Channel, timeout=120.0) -> None:
    """A server with no TCP port is ready when GetModelStatus answers on its socket (the
    models load before anything listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            model_status(channel)
        except grpc.RpcError:
            time.sleep(0.1)
            continue
        server.channel = channel
        return
    raise TimeoutError(f"server not ready after {timeout} s:\n{server.log()}")


@pytest.fixture(scope="module")
def uds_server(tmp_path_factory):
    """TCP port and UNIX socket at once, with CHANNEL_ARGUMENTS; a stale socket file waits at
    the socket path, as one left by a killed server would."""
    root = tmp_path_factory.mktemp("uds")
    write_known_model(root / "half", 1, a=0.5, b=2.0)
    path = root / "grpc.sock"
    stale_socket(path)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        f"--grpc_socket_path={path}",
        f"--grpc_channel_arguments={CHANNEL_ARGUMENTS}",
        log_path=root / "server.log",
        rest=False,
    )
    with server:
        yield server, path


def channel_to(uds_server, listener: str) -> grpc.Channel:
    server, path = uds_server
    target = f"unix:{path}" if listener == "socket" else f"127.0.0.1:{server.port}"
    # Client-side limits are raised, so a refusal can only come from the server.
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def test_predict_and_status_over_the_unix_socket(uds_server):
    """The stale socket file was replaced, and both TF Serving services answer on the socket."""
    with channel_to(uds_server, "socket") as channel:
        (version,) = model_status(channel).model_version_status
        assert version.version == 1
        assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert predict_y(channel, [1.0, 2.0, 6.0]) == [2.5, 3.0, 5.0]


def test_start_up_log_names_both_listeners_and_the_arguments(uds_server):
    server, path = uds_server
    log = server.log()
    assert f"Running gRPC ModelServer at 127.0.0.1:{server.port} ..." in log
    assert f"Running gRPC ModelServer at UNIX socket {path} ..." in log
    assert tcp_listening_ports(server.process.pid) == [server.port]
    assert (
        "gRPC channel arguments: grpc.max_connection_age_ms=1000, "
        "grpc.max_receive_message_length=1024" in log
    )


@pytest.mark.parametrize("listener", ["tcp", "socket"])
def test_receive_limit_from_channel_arguments(uds_server, listener):
    """The user's grpc.max_receive_message_length replaces the server's own 2 GiB default.

    gRPC keeps the first value of a repeated key, so a server that put the user's value after
    its default would accept the large request.
    """
    small, large = [1.0] * 16, [1.0] * 512
    assert predict_request(small).ByteSize() < 1024 < predict_request(large).ByteSize()
    with channel_to(uds_server, listener) as channel:
        assert predict_y(channel, small) == [2.5] * 16
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(large), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details()
    assert "Received message larger than max" in details
    assert details.endswith(" vs. 1024)")


def test_max_connection_age_from_channel_arguments(uds_server):
    """grpc.max_connection_age_ms=1000 reaches gRPC as an integer: the server ends each
    connection after about a second, so an idle client channel drops from READY to IDLE.
    (Passed as the string "1000", gRPC would ignore it and the channel would stay READY.)"""
    states: list[grpc.ChannelConnectivity] = []
    dropped = threading.Event()

    def record(state):
        states.append(state)
        if grpc.ChannelConnectivity.READY in states and state != grpc.ChannelConnectivity.READY:
            dropped.set()

    with channel_to(uds_server, "tcp") as channel:
        channel.subscribe(record, try_to_connect=True)
        assert dropped.wait(15), states
        channel.unsubscribe(record)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def socket_only_server(tmp_path_factory, certs):
    """`--port=0` with a socket path and `--ssl_config_file`: TLS on the socket, no TCP port."""
    root = tmp_path_factory.mktemp("uds-only")
    write_known_model(root / "half", 1, a=0.5, b=2.0)
    path = root / "tls.sock"
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        # After ServerProcess's own --port=N, so this one wins.
        "--port=0",
        f"--grpc_socket_path={path}",
        f"--ssl_config_file={certs.ssl_config()}",
        log_path=root / "server.log",
        rest=False,
    )
    server.start(wait=False)
    # A unix: target's authority is its path, so the name the certificate is checked against
    # is set here, as a real client of a TLS socket must.
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
    channel = grpc.secure_channel(f"unix:{path}", certs.credentials(), options=options)
    try:
        wait_ready_on_socket(server, channel)
        yield server, path
    finally:
        server.stop()


def test_port_zero_listens_on_the_socket_only(socket_only_server):
    server, path = socket_only_server
    assert predict_y(server.channel, [4.0]) == [4.0]
    log = server.log()
    assert f"Running gRPC ModelServer at UNIX socket {path} ..." in log
    # No TCP listener at all (grpcio given port 0 would have bound a random one).
    assert "Running gRPC ModelServer at 127.0.0.1" not in log
    assert tcp_listening_ports(server.process.pid) == []


def test_tls_applies_to_the_socket(socket_only_server):
    """As in TF Serving, --ssl_config_file secures the socket too: plaintext gets nowhere."""
    _, path = socket_only_server
    with grpc.insecure_channel(f"unix:{path}") as channel, pytest.raises(grpc.RpcError) as caught:
        model_status(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_file_in_the_way_of_the_socket_fails_start_up(tmp_path):
    write_known_model(tmp_path / "half", 1)
    path = tmp_path / "taken.sock"
    path.write_text("not a socket\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model_name=half",
            f"--model_base_path={tmp_path / 'half'}",
            "--port=0",
            f"--grpc_socket_path={path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 255, result.stderr
    assert (
        f"Failed to start server. Error: cannot listen on the UNIX socket {path}: a file that "
        "is not a socket is in the way (only a stale socket is replaced)\n" in result.stderr
    )
    # The file is left as it was.
    assert path.read_text() == "not a socket\n"


# -- no server process: the options gRPC gets, why a socket cannot be bound ------------------


def test_server_options_without_channel_arguments():
    assert server_options("") == [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


def test_server_options_user_keys_replace_ours_and_odd_items_are_logged(caplog):
    caplog.set_level("INFO", logger="serving")
    options = server_options("grpc.so_reuseport=1,a=b=c, k =1,a=2")
    assert options == [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1),
        ("a", "b"),
        (" k ", 1),
        ("a", 2),
    ]
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        (
            "WARNING",
            "--grpc_channel_arguments: a has a second '='; its value is 'b' and '=c' is "
            "dropped, as tensorflow_model_server does",
        ),
        (
            "WARNING",
            "--grpc_channel_arguments: the key ' k ' has spaces around it; gRPC matches keys "
            "exactly and will ignore it",
        ),
        ("INFO", "gRPC channel arguments: grpc.so_reuseport=1, a='b',  k =1, a=2"),
    ]


def test_socket_problem_path_too_long(tmp_path):
    path = "/tmp/" + "s" * 103
    assert socket_problem(path) == ("the path has 108 bytes, a UNIX socket path at most 107")


def test_socket_problem_missing_folder(tmp_path):
    folder = tmp_path / "no-such-folder"
    assert socket_problem(str(folder / "grpc.sock")) == f"its folder {folder} does not exist"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_socket_problem_folder_not_writable(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    try:
        assert socket_problem(str(folder / "grpc.sock")) == f"its folder {folder} is not writable"
    finally:
        folder.chmod(0o755)
