"""The REST port against hostile clients: framing, limits, slow clients; it keeps serving.

Each case talks raw bytes over a socket to the real `python -m serving` process (started with
tight limits so the cases run in seconds), checks the status, the message and whether the
connection closed, and then checks that an ordinary request is still answered.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.known_models import write_known_model
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

LIMITS = [
    "--rest_api_max_body_bytes=100000",
    "--rest_api_max_header_bytes=4096",
    "--rest_api_max_url_bytes=2048",
    "--rest_api_header_timeout_seconds=1",
    "--rest_api_body_timeout_seconds=1.5",
    "--rest_api_max_connections=20",
]
PREDICT = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\n"
GOOD_BODY = b'{"instances": [1.0, 2.0]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-edge")
    write_known_model(root / "half", 1)
    process = ServerProcess(
        "--model_name=half", f"--model_base_path={root / 'half'}", *LIMITS,
        log_path=root / "server.log",
    )  # fmt: skip
    with process:
        yield process


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    return sock


def _exchange(server, data: bytes, *, quiet: float = 3.0) -> tuple[list[tuple[int, dict]], bool]:
    """Sends `data`, then reads until the server closes or is quiet for `quiet` seconds.

    Returns:
        ([(status, JSON body or {}) per response], whether the server closed the connection).
    """
    raw, closed = b"", False
    with _connect(server) as sock:
        sock.sendall(data)
        sock.settimeout(quiet)
        try:
            while chunk := sock.recv(65536):
                raw += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return _responses(raw), closed


def _responses(raw: bytes) -> list[tuple[int, dict]]:
    """Splits a byte stream into its responses (each framed by Content-Length)."""
    stream, answers = io.BytesIO(raw), []
    while stream.tell() < len(raw):
        status = int(stream.readline().split()[1])
        headers = http.client.parse_headers(stream)
        body = stream.read(int(headers.get("content-length", 0)))
        answers.append((status, json.loads(body) if body.startswith(b"{") else {}))
    return answers


def _still_serves(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("POST", "/v1/models/half:predict", body=GOOD_BODY)
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"predictions": [2.5, 3.0]})
    conn.close()


# -- framing: nothing after a bad frame is read as a new request --------------------------------


@pytest.mark.parametrize(
    "head, body",
    [
        (b"Content-Length: abc\r\n", b""),
        (b"Content-Length: 5\r\nContent-Length: 7\r\n", b"12345"),
        (b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        (b"Transfer-Encoding: gzip\r\n", b"hello"),
    ],
    ids=["bad-length", "two-lengths", "bad-chunk-size", "length-and-chunked", "unknown-coding"],
)
def test_malformed_framing_is_400_and_closes_before_a_smuggled_request(server, head, body):
    smuggled = b"GET /v1/models/half HTTP/1.1\r\nHost: x\r\n\r\n"
    answers, closed = _exchange(server, PREDICT + head + b"\r\n" + body + smuggled)
    assert len(answers) == 1 and closed, answers
    status, error = answers[0]
    assert status == 400
    assert error["error"].startswith("malformed HTTP request: "), error
    _still_serves(server)


def test_a_body_shorter_than_its_length_is_never_executed(server):
    started = time.monotonic()
    answers, closed = _exchange(server, PREDICT + b"Content-Length: 100\r\n\r\n" + GOOD_BODY)
    assert time.monotonic() - started >= 1.4
    assert answers == [
        (
            408,
            {
                "error": "the request body did not arrive within 1.5 s "
                "(--rest_api_body_timeout_seconds)"
            },
        )
    ]
    assert closed
    _still_serves(server)


# -- size limits ----------------------------------------------------------------------------------


def test_declared_body_over_the_limit_is_413_before_it_is_read(server):
    for size in (100001, 10**12):
        started = time.monotonic()
        answers, closed = _exchange(server, PREDICT + f"Content-Length: {size}\r\n\r\n".encode())
        assert time.monotonic() - started < 2
        assert answers == [
            (
                413,
                {
                    "error": f"the request body has {size} bytes; this server takes at most "
                    "100000 (--rest_api_max_body_bytes)"
                },
            )
        ]
        assert closed
    _still_serves(server)


def test_chunked_body_over_the_limit_is_413(server):
    chunk = b"%x\r\n%s\r\n" % (40000, b"1" * 40000)
    answers, closed = _exchange(
        server, PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
    )
    assert [status for status, _ in answers] == [413] and closed
    assert answers[0][1]["error"] == (
        "the request body has 120000 bytes; this server takes at most 100000 "
        "(--rest_api_max_body_bytes)"
    )
    _still_serves(server)


def test_long_url_is_414_and_big_headers_431(server):
    url = b"/v1/models/" + b"a" * 3000 + b":predict"
    answers, closed = _exchange(server, b"GET " + url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (
        answers
        == [
            (
                414,
                {
                    "error": f"the URL has {len(url)} bytes; this server takes at most 2048 "
                    "(--rest_api_max_url_bytes)"
                },
            )
        ]
        and closed
    )
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 100) for i in range(50))
    answers, closed = _exchange(server, PREDICT + headers + b"\r\n")
    assert answers[0][0] == 431 and closed
    assert answers[0][1]["error"].endswith(
        "this server takes at most 4096 (--rest_api_max_header_bytes)"
    )
    # A head larger than the parser's whole buffer is refused while it is still arriving.
    answers, closed = _exchange(server, PREDICT + b"X-Big: " + b"v" * 20000 + b"\r\n")
    assert (
        answers
        == [
            (
                431,
                {
                    "error": "the request head is over 6144 bytes (--rest_api_max_header_bytes "
                    "plus --rest_api_max_url_bytes)"
                },
            )
        ]
        and closed
    )
    _still_serves(server)


# -- slow clients -----------------------------------------------------------------------------


def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408(server):
    with _connect(server) as sock:

        def trickle():
            for byte in PREDICT:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

        started = time.monotonic()
        threading.Thread(target=trickle, daemon=True).start()
        answer = b""
        sock.settimeout(5)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"did not arrive within 1 s (--rest_api_header_timeout_seconds)" in answer
    assert 0.9 <= elapsed < 3
    _still_serves(server)


def _threads(server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_many_slow_connections_are_capped_and_use_no_threads(server):
    before = _threads(server)
    sockets = [_connect(server) for _ in range(30)]
    try:
        for sock in sockets:
            sock.sendall(b"POST /v1/models/half:pre")  # and never finish
        time.sleep(0.3)
        # Connections past the cap were answered 503 at once and closed.
        refused = 0
        for sock in sockets[20:]:
            sock.settimeout(2)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
            assert b"already has 20 open connections (--rest_api_max_connections)" in answer
            refused += 1
        assert refused == 10
        assert _threads(server) <= before + 2  # connections are coroutines, not threads
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(1.5)  # the slow ones hit the header timeout and are gone
    _still_serves(server)


def test_keep_alive_and_pipelining_still_work(server):
    one = PREDICT + b"Content-Length: %d\r\n\r\n" % len(GOOD_BODY) + GOOD_BODY
    answers, closed = _exchange(server, one * 3, quiet=1.0)
    assert answers == [(200, {"predictions": [2.5, 3.0]})] * 3
    assert not closed
