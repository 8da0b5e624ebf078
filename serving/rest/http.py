"""The stdlib HTTP/1.1 layer under the REST API: keep-alive, draining shutdown, no lost requests."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from serving.rest.json.response import error_json

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


class App(Protocol):
    """What the HTTP layer serves (`serving.rest.handler.RestServer`)."""

    def respond(
        self, method: str, path: str, headers, body: bytes
    ) -> tuple[int, bytes, str | None]: ...


class DrainingHTTPServer(ThreadingHTTPServer):
    """A thread per connection; tracks connections and in-flight requests so shutdown drains.

    Connection threads are daemons, so a client idling on a keep-alive connection never holds
    the process open; `drain()` instead waits for the requests actually being answered.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App):
        self.app = app
        self.lock = threading.Condition()
        self.active = 0
        self.closing = False
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler, bind_and_activate=False)

    @classmethod
    def create(cls, host: str, port: int, app: App) -> DrainingHTTPServer:
        """Binds `host:port` (IPv6 when the host has a colon); `server_activate()` listens.

        Binding early reserves the port (and resolves port 0) while connections are still
        refused, as TF Serving refuses them until its models are loaded.
        """
        server = (_DrainingHTTPServer6 if ":" in host else cls)((host, port), app)
        try:
            server.server_bind()
        except OSError:
            server.server_close()
            raise
        return server

    def process_request(self, request, client_address):
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drain(self) -> None:
        """Waits for requests being handled, then wakes threads idling on keep-alive sockets."""
        with self.lock:
            self.closing = True
            self.lock.wait_for(lambda: self.active == 0)
            idle = list(self.connections)
        for connection in idle:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _DrainingHTTPServer6(DrainingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Reads one request at a time and answers it; never drops a connection on a bug."""

    protocol_version = "HTTP/1.1"
    server: DrainingHTTPServer
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 300

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        self._started = False
        with self.server.lock:
            self.server.active += 1
        try:
            self._answer()
        except Exception as error:  # a bug must still get an answer, not a dropped connection
            log.exception("REST handler failed on %s %s", self.command, self.path)
            if self._started:
                self.close_connection = True
            else:
                self._send(500, error_json(f"Internal error: {error!r}").encode(), JSON_TYPE)
        finally:
            with self.server.lock:
                self.server.active -= 1
                if self.server.closing:
                    self.close_connection = True
                self.server.lock.notify_all()

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        body = self._read_body()
        self._send(*self.server.app.respond(self.command, path, self.headers, body))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self._started = True
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.server.closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
