"""The REST API's HTTP/1.1 layer: uvicorn's server and h11's parser, with limits that answer.

h11 does all HTTP parsing and framing: a malformed request line, header, Content-Length or chunk
size is a 400 and the connection closes, so nothing after it is read as a new request. On top of
it, every limit has a clear answer: a body over the limit is 413 (refused from its Content-Length
before it is read), a request head over the limit 431, a URL over the limit 414, a head or body
that takes too long to arrive 408, a connection beyond the cap 503; each of these closes the
connection. A client that takes no bytes of its answers for the write timeout is disconnected.
Connections are counted from the TCP accept, so TLS handshakes count against the cap (beyond it
a TLS connection is closed before any handshake work) and must finish within the header
timeout. Connections are coroutines on one event loop, never a thread each; requests run on
the REST worker pool (`--rest_api_num_threads`).

Example:
    server = HttpServer("127.0.0.1", 8501, respond, HttpLimits(), pool)
    server.start()          # accepts from now on
    server.shutdown(30.0)   # no new connections; requests in flight get up to 30 s
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving import errors
from serving.rest.connections import CountedTLS, Slots
from serving.rest.json.response import error_json

log = logging.getLogger("serving")

JSON_TYPE = "application/json"
# `respond(method, path, headers, body) -> (status, body, content type or None)`; runs on the
# worker pool, so it may block.
Respond = Callable[[str, str, dict, bytes], tuple[int, bytes, str | None]]
# TF's DirectSession message when `RunOptions.timeout_in_ms` expires (TF Serving's REST 504).
TIMEOUT_MESSAGE = "Timed out waiting for notification"


@dataclass(frozen=True)
class HttpLimits:
    """The REST port's limits; each is a flag (see `serving.model_servers.flags`)."""

    max_body_bytes: int = 64 * 2**20
    max_header_bytes: int = 64 * 2**10
    max_url_bytes: int = 8 * 2**10
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 2048
    idle_timeout_s: float = 75.0
    # A connection whose client takes no bytes of its answer for this long is dropped.
    write_timeout_s: float = 30.0
    # `--rest_api_timeout_in_ms` as seconds: a request still running after this answers 504.
    request_timeout_s: float | None = 30.0


def error_body(message: str) -> bytes:
    """TF Serving's REST error body (`{ "error": "..." }`), as every REST error is written."""
    return error_json(message).encode("utf-8")


def internal_error(method: str, path: str) -> str:
    """Logs the exception being handled under a new request id; returns the 500's message."""
    return errors.logged_internal(f"REST {method} {path[:200]}").message


def _raw_response(status: int, message: str) -> bytes:
    """A whole `Connection: close` JSON error response, for answers h11 cannot frame: before a
    request has arrived (a full server, a head that never came), h11 has nothing to answer."""
    body = error_body(message)
    reason = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {JSON_TYPE}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _LimitedConnection(h11.Connection):
    """h11's server connection, refusing a request head over the URL or header limit.

    The refusal (HTTP status, message) is kept for the protocol to answer with: uvicorn turns
    any RemoteProtocolError into one call of `send_400_response`, which does not see the error.
    """

    def __init__(self, limits: HttpLimits):
        # h11 buffers at most this much of an incomplete head; past it, a 431 protocol error.
        super().__init__(h11.SERVER, max_incomplete_event_size=_head_limit(limits))
        self.limits = limits
        self.refusal: tuple[int, str] | None = None

    def next_event(self):
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as error:
            if error.error_status_hint == 431:
                self.refusal = (
                    431,
                    (
                        f"the request head is over {_head_limit(self.limits)} bytes "
                        "(--rest_api_max_header_bytes plus --rest_api_max_url_bytes)"
                    ),
                )
            else:
                self.refusal = 400, f"malformed HTTP request: {error}"
            raise
        if isinstance(event, h11.Request):
            self.refusal = _check_head(event, self.limits)
            if self.refusal is not None:
                raise h11.RemoteProtocolError(self.refusal[1], self.refusal[0])
        return event


def _head_limit(limits: HttpLimits) -> int:
    return limits.max_header_bytes + limits.max_url_bytes


def _check_head(request: h11.Request, limits: HttpLimits) -> tuple[int, str] | None:
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        # RFC 9112 6.1: a server must at least close such a connection; a proxy in front may
        # have framed the body the other way (request smuggling), so it is refused outright.
        return 400, ("malformed HTTP request: both Content-Length and Transfer-Encoding; send one")
    if len(request.target) > limits.max_url_bytes:
        return 414, (
            f"the URL has {len(request.target)} bytes; this server takes at most "
            f"{limits.max_url_bytes} (--rest_api_max_url_bytes)"
        )
    head = sum(len(name) + len(value) + 4 for name, value in request.headers)
    if head > limits.max_header_bytes:
        return 431, (
            f"the request headers have {head} bytes; this server takes at most "
            f"{limits.max_header_bytes} (--rest_api_max_header_bytes)"
        )
    return None


def _protocol(*, config, **kwargs) -> asyncio.BaseProtocol:
    """uvicorn's protocol factory: HTTP, or HTTP inside `CountedTLS` on an HTTPS port."""
    if config.serving_tls is None:
        return _LimitedH11Protocol(config=config, **kwargs)
    app = _LimitedH11Protocol(config=config, slot_outside=True, **kwargs)
    return CountedTLS(
        config.serving_slots,
        app.loop,
        app,
        config.serving_tls,
        None,
        server_side=True,
        ssl_handshake_timeout=config.serving_limits.header_timeout_s,
    )


# uvicorn internals used here, written against uvicorn 0.54.0 and pinned by
# tests/serving/rest/test_uvicorn_internals.py. Public uvicorn.Config covers only what it
# already does: `timeout_keep_alive` (idle timeout), `backlog`, `timeout_graceful_shutdown`
# (the drain). The rest has no public option with the same answers:
# - `connection_made`/`connection_lost`: the cap counts from accept and answers 503 before
#   reading; `limit_concurrency` counts connections and tasks and answers 503 only once a
#   request has been read, with uvicorn's plain-text body.
# - `self.conn` (replaced by `_LimitedConnection`) and `send_400_response(msg)`: uvicorn turns
#   every h11 error into a plain 400; `h11_max_incomplete_event_size` alone would give 400, not
#   our 414/431 with the flag named.
# - `data_received`, `shutdown`, `self.cycle.response_complete`, `self.loop`, `self.transport`,
#   `self.client`: the head timeout (408); uvicorn has none.
# - `pause_writing`/`resume_writing`: the write timeout; uvicorn has none.
# - `uvicorn.Server.shutdown` and `server_state.connections`: closing what is left after the
#   drain (`timeout_graceful_shutdown` cancels tasks but leaves their connections open).
class _LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection cap, the head and write timeouts and clear
    refusals.

    The limits arrive as `config.serving_limits` and the slots as `config.serving_slots`
    (uvicorn hands its Config to each protocol). Under TLS, `CountedTLS` holds the slot.
    """

    def __init__(self, *args, slot_outside: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits: HttpLimits = self.config.serving_limits
        self.conn = _LimitedConnection(self.limits)
        self._slots: Slots = self.config.serving_slots
        self._slot_outside = slot_outside
        self._holds_slot = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport) -> None:
        if not self._slot_outside:
            if not self._slots.take():
                # Refused before any request is read: the answer says why, then it closes.
                self._refused = True
                transport.write(
                    _raw_response(
                        503,
                        f"the server already has {self.limits.max_connections} open "
                        "connections (--rest_api_max_connections); try again later",
                    )
                )
                transport.close()
                return
            self._holds_slot = True
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        self._stop_write_timer()
        if self._holds_slot:
            self._holds_slot = False
            self._slots.give()
        if not self._refused:
            super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The transport's buffer is full: the client has stopped taking the answers.
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.limits.write_timeout_s, self._write_too_slow
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_write_timer()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_too_slow(self) -> None:
        self._write_timer = None
        log.info(
            "REST: closed a connection from %s: it took no bytes of its answers for %g s "
            "(--rest_api_write_timeout_seconds)",
            self.client,
            self.limits.write_timeout_s,
        )
        # abort, not close: close would wait for the buffered answers to be taken.
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._idle() and self._head_timer is None:
            # The first bytes of a new request on a kept-alive connection: its head must now
            # arrive within the header timeout.
            self._start_head_timer()
        super().data_received(data)
        if not self._idle():
            self._stop_head_timer()

    def shutdown(self) -> None:
        self._stop_head_timer()
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        status, message = self.conn.refusal or (400, msg)
        self._refuse(status, message)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._idle():
            return
        message = (
            f"the request head did not arrive within {self.limits.header_timeout_s:g} s "
            "(--rest_api_header_timeout_seconds)"
        )
        log.info("REST: closed a connection from %s: 408 %s", self.client, message)
        self.transport.write(_raw_response(408, message))
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answers through h11 when it can frame the answer, raw otherwise; then closes."""
        log.info("REST: refused a request from %s: %d %s", self.client, status, message)
        body = error_body(message)
        headers = [
            (b"content-type", JSON_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            self.transport.write(_raw_response(status, message))
        self.transport.close()


class _App:
    """The ASGI application: bounded body reading, then `respond` on the worker pool."""

    def __init__(self, respond: Respond, limits: HttpLimits, pool: concurrent.futures.Executor):
        self.respond, self.limits, self.pool = respond, limits, pool

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        declared = headers.get("content-length")
        if declared is not None and int(declared) > self.limits.max_body_bytes:
            await _answer(send, 413, error_body(self._too_large(int(declared))), JSON_TYPE, True)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return  # refused, or the client went away
        # h11 has validated the target; its bytes are kept as they came (TF Serving's routes
        # decode the model name and label themselves).
        path = scope["raw_path"].decode("latin-1")
        future = self.pool.submit(self.respond, scope["method"], path, headers, body)
        try:
            status, payload, content_type = await asyncio.wait_for(
                asyncio.wrap_future(future), self.limits.request_timeout_s
            )
        except TimeoutError:
            # Python cannot stop the model mid-run; the answer goes back now, the work finishes.
            status, payload, content_type = 504, error_body(TIMEOUT_MESSAGE), JSON_TYPE
        except Exception:  # a bug must still get an answer, not a dropped connection
            status, payload = 500, error_body(internal_error(scope["method"], path))
            content_type = JSON_TYPE
        await _answer(send, status, payload, content_type, False)

    def _too_large(self, size: int) -> str:
        return (
            f"the request body has {size} bytes; this server takes at most "
            f"{self.limits.max_body_bytes} (--rest_api_max_body_bytes)"
        )

    async def _read_body(self, receive, send) -> bytes | None:
        """The whole body, or None after answering 413/408 (or when the client left)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                message = (
                    f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                    "(--rest_api_body_timeout_seconds)"
                )
                await _answer(send, 408, error_body(message), JSON_TYPE, True)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                # A chunked body has no Content-Length to refuse up front: stop at the limit.
                await _answer(send, 413, error_body(self._too_large(size)), JSON_TYPE, True)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _answer(send, status: int, body: bytes, content_type: str | None, close: bool) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """uvicorn's server; after the drain deadline, connections still open are closed too."""

    async def shutdown(self, sockets=None) -> None:
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):
            if connection.transport is not None:
                connection.transport.abort()


class HttpServer:
    """HTTP/1.1 (or HTTPS) on uvicorn, in a background thread with its own event loop.

    Args:
        host: address to bind; IPv6 when it has a colon.
        port: port to bind now (0 picks a free one); it accepts only after `start()`.
        respond: the application (`serving.rest.handler.RestServer.respond`).
        limits: the port's limits.
        pool: the REST worker pool that runs `respond`.
        ssl_context: the server-side TLS context to serve HTTPS with, or None for HTTP.
    """

    def __init__(
        self,
        host: str,
        port: int,
        respond: Respond,
        limits: HttpLimits,
        pool: concurrent.futures.Executor,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._sock = _bind(host, port)
        options = dict(
            http=_protocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=limits.idle_timeout_s,
            backlog=max(limits.max_connections, 64),
        )
        config = uvicorn.Config(_App(respond, limits, pool), **options)
        config.load()
        # TF Serving's SSLConfig (PEM text), already checked, is used as is, by `_protocol`
        # rather than by uvicorn, so that connections count from before their handshake.
        config.serving_tls = ssl_context
        config.serving_limits = limits
        config.serving_slots = Slots(limits.max_connections)
        self._server = _Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return self._sock.getsockname()[1]

    def start(self, timeout_s: float = 30.0) -> None:
        """Starts accepting; returns once the port listens."""
        self._thread = threading.Thread(target=self._run, name="rest-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the REST server did not start on port {self.port}")
            time.sleep(0.01)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def shutdown(self, drain_s: float = 30.0) -> None:
        """Stops accepting, lets requests in flight finish for up to `drain_s`, closes the rest.

        Safe to call from any thread, also before `start()`.
        """
        if self._thread is None:
            self._sock.close()
            return
        self._server.config.timeout_graceful_shutdown = drain_s
        self._server.should_exit = True
        self._thread.join(drain_s + 10)
        self._sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """Binds `host:port` without listening, so the port is ours but refuses connections.

    TF Serving refuses connections until its models are loaded; binding early also resolves
    port 0 to the port that will be served.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it a kept-alive answer (head, then body) waits ~40 ms on the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
