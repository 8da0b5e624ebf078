"""REST connection slots against hostile clients: every slot is given back, and many fit.

A client that pipelines requests and never reads its answers, and a TLS client that never
finishes its handshake, must each hold a slot for a bounded time only (the write timeout, the
header timeout); handshakes count against the cap like any connection. At the default cap a
thousand slow clients are held while a normal client is still served. Real server processes
over loopback; the timings asserted are several times what they need.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import ssl
import statistics
import threading
import time

import pytest

from tests.known_models import write_known_model
from tests.support import ServerProcess, TLSCertificates, wait_for

pytestmark = pytest.mark.integration

PREDICT_BODY = b'{"instances": [1.0, 2.0]}'
METADATA = b"GET /v1/models/half/metadata HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "half"
    write_known_model(base, 1, a=0.5, b=2.0)
    return base


def _predict(port: int, context: ssl.SSLContext | None = None, timeout: float = 10) -> int:
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        conn.request("POST", "/v1/models/half:predict", body=PREDICT_BODY)
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            assert json.loads(body) == {"predictions": [2.5, 3.0]}
        return response.status
    finally:
        conn.close()


def _served(port: int) -> bool:
    """Whether a predict is answered 200; a refusal may arrive as a 503 or as a closed socket."""
    try:
        return _predict(port) == 200
    except ConnectionError:  # refused at the cap while the request was still being sent
        return False


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# -- a client that never reads -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(half, tmp_path_factory):
    process = ServerProcess(
        "--model_name=half",
        f"--model_base_path={half}",
        "--rest_api_max_connections=3",
        "--rest_api_write_timeout_seconds=2",
        log_path=tmp_path_factory.mktemp("write-timeout") / "server.log",
    )
    with process:
        yield process


def _pipeline_and_never_read(port: int) -> socket.socket:
    """A connection that sends 2,000 metadata requests (8 MB of answers) and reads none."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))

    def send():
        with contextlib.suppress(OSError):  # the server gave up on us: that is the point
            sock.sendall(METADATA * 2000)

    threading.Thread(target=send, daemon=True).start()
    return sock


def test_a_client_that_never_reads_its_answers_loses_its_slot(small_server):
    port = small_server.rest_port
    stuck = [_pipeline_and_never_read(port) for _ in range(3)]
    try:
        time.sleep(0.5)
        # The three slots are taken while the server waits to write.
        assert _predict(port) == 503
        started = time.monotonic()
        # After the write timeout (2 s) the server drops them, and serves again.
        wait_for(lambda: _served(port), timeout=15, interval=0.25)
        assert time.monotonic() - started < 8
        for sock in stuck:
            assert _closed_by_server(sock, within=5)
    finally:
        for sock in stuck:
            sock.close()
    assert "(--rest_api_write_timeout_seconds)" in small_server.log()


def test_a_slow_reader_that_keeps_reading_is_not_cut_off(small_server):
    # 200 answers of 4 KB read at about 400 KB/s: the write timeout is about no progress.
    sock = _pipeline_and_never_read(small_server.rest_port)
    received, started = 0, time.monotonic()
    try:
        sock.settimeout(5)
        while received < 200 * 4000 and time.monotonic() - started < 20:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += len(chunk)
            time.sleep(0.01)
    finally:
        sock.close()
    assert received >= 200 * 4000


# -- TLS handshakes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(half, certs, tmp_path_factory):
    config = certs.ssl_config(client_verify=False)
    process = ServerProcess(
        "--model_name=half",
        f"--model_base_path={half}",
        f"--ssl_config_file={config}",
        "--rest_api_max_connections=4",
        "--rest_api_header_timeout_seconds=2",
        log_path=tmp_path_factory.mktemp("tls-cap") / "server.log",
        credentials=certs.credentials(),
    )
    with process:
        yield process


def _client_context(certs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.path("server-ca.pem")))
    context.check_hostname = False
    return context


def test_tls_handshakes_count_against_the_connection_cap(tls_server, certs):
    port = tls_server.rest_port
    assert _predict(port, _client_context(certs)) == 200
    # Four connections that never send a ClientHello fill the cap.
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    extra = []
    try:
        time.sleep(0.3)
        # Past the cap, a connection is closed at once, before any handshake work.
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        for sock in extra:
            assert _closed_by_server(sock, within=1.5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _predict(port, _client_context(certs))
        # A handshake that does not finish within the header timeout (2 s) is cut.
        for sock in stalled:
            assert _closed_by_server(sock, within=5)
        assert _predict(port, _client_context(certs)) == 200
    finally:
        for sock in stalled + extra:
            sock.close()


# -- a thousand slow clients -------------------------------------------------------------


@pytest.fixture
def default_server(half, tmp_path_factory):
    """The default limits, started with a soft RLIMIT_NOFILE of 1024 (a common default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs a hard RLIMIT_NOFILE of 4096 or more, this machine has {hard}")
    process = ServerProcess(
        "--model_name=half",
        f"--model_base_path={half}",
        log_path=tmp_path_factory.mktemp("slow-clients") / "server.log",
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the server only
    try:
        process.start(wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_a_thousand_slow_clients_are_held_while_others_are_served(default_server):
    port = default_server.rest_port
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
    slow = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            slow.append(sock)
        latencies, statuses = [], []
        for second in range(6):
            for sock in slow:  # one more byte of the head, each second
                sock.send(head[second : second + 1])
            started = time.monotonic()
            statuses.append(_predict(port, timeout=10))
            latencies.append(time.monotonic() - started)
            time.sleep(max(0.0, 1.0 - latencies[-1]))
        # None of the slow clients was refused or cut off (the header timeout is 10 s).
        for sock in slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in slow:
            sock.close()
    assert statuses == [200] * 6
    assert max(latencies) < 3 and statistics.median(latencies) < 1, latencies
