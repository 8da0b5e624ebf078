"""REST transport: TF Serving's JSON API with the same methods as the gRPC transport."""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import math
import socket
import threading
import time
import urllib.parse
import weakref
from typing import Any

import orjson

from client.errors import BAD_INPUT, ClientError
from client.transports.base import (
    MAX_RESPONSE_BYTES,
    Transport,
    code_name,
    metadata_dict,
    signature_dict,
)
from client.transports.json_values import from_json, predict_body
from client.transports.tls import TLSFiles
from common.status import code_for_http_status

# A REST predict answer names neither the served version nor (for one output) the output alias,
# so both come from the signature's metadata, read again once it is this many seconds old.
REST_INFO_TTL_S = 10.0

# Bytes asked of the socket at a time while reading an answer.
_READ_BYTES = 2**20


def _path(model: str, version: int | None, label: str | None) -> str:
    path = "/v1/models/" + urllib.parse.quote(model, safe="")
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += "/labels/" + urllib.parse.quote(label, safe="")
    return path


class _DeadlineSocket:
    """A connected (TLS) socket whose reads and sends end by the connection's deadline.

    A plain socket timeout bounds one read and is renewed by every byte, so a server that
    trickles its answer could hold a call for ever; this bounds the call as a whole. Like
    `socket.makefile`, the socket stays open while a reader made from it is: http.client
    closes the connection before reading an answer that ends when the server closes.
    """

    def __init__(self, sock: socket.socket, conn: _HTTPConnection | _HTTPSConnection):
        self._sock, self._conn = sock, conn
        self._readers, self._closed = 0, False

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def recv_into(self, buffer) -> int:
        self._sock.settimeout(_seconds_left(self._conn.deadline))
        return self._sock.recv_into(buffer)

    def sendall(self, data) -> None:
        # Since Python 3.5 the timeout bounds the whole sendall, not each send.
        self._sock.settimeout(_seconds_left(self._conn.deadline))
        self._sock.sendall(data)

    def close(self) -> None:
        self._closed = True
        if not self._readers:
            self._sock.close()

    def release(self) -> None:
        """A reader is closed; the socket closes with the last one if `close` came first."""
        self._readers -= 1
        if self._closed and not self._readers:
            self._sock.close()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    """The raw reads under an answer's buffered reader."""

    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.release()


def _seconds_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline reached")
    return left


class _HTTPConnection(http.client.HTTPConnection):
    """HTTP whose connect, sends and reads all end by `deadline` (time.monotonic())."""

    deadline = math.inf

    def connect(self) -> None:
        self.timeout = _seconds_left(self.deadline)
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self)


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that ends by `deadline` and may check the certificate against another name than
    the host dialled."""

    deadline = math.inf

    def __init__(self, host, port=None, *, context, server_name=None):
        super().__init__(host, port, context=context)
        self._server_name = server_name

    def connect(self) -> None:
        # HTTPSConnection.connect, with the name to verify taken from server_name; proxies
        # (whose tunnel the parent handles) are never used by the transport. The handshake
        # itself is bounded per read only, as ssl runs it.
        self.timeout = _seconds_left(self.deadline)
        http.client.HTTPConnection.connect(self)
        self.sock.settimeout(_seconds_left(self.deadline))
        name = self._server_name or self.host
        tls = self._context.wrap_socket(self.sock, server_hostname=name)
        self.sock = _DeadlineSocket(tls, self)


@contextlib.contextmanager
def _answer_shape():
    """Turns an answer of the wrong shape (a broken or foreign server) into a ClientError."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ClientError("INTERNAL", f"unexpected answer from the server: {error!r}") from None


def _read_body(response: http.client.HTTPResponse, cap: int) -> bytearray:
    """The answer's body, refused as soon as it is known to exceed `cap` bytes."""
    if response.length is not None and response.length > cap:
        raise _too_large(cap, f"announces {response.length} bytes, over")
    body = bytearray()
    while chunk := response.read(min(_READ_BYTES, cap + 1 - len(body))):
        body += chunk
        if len(body) > cap:
            raise _too_large(cap, "is longer than")
    return body


def _too_large(cap: int, how: str) -> ClientError:
    # RESOURCE_EXHAUSTED, as gRPC reports a message over the channel's receive limit.
    return ClientError(
        "RESOURCE_EXHAUSTED",
        f"the answer {how} the client's limit of {cap} bytes: raise max_response_bytes "
        "(--max-response-mib on the command line) if answers this large are expected",
    )


def _loads(payload: bytes):
    """orjson for speed; the standard parser for what it refuses (TF Serving writes the
    tokens NaN and Infinity, which are not JSON)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


class RestTransport(Transport):
    """TF Serving's REST API over keep-alive HTTP connections, one per thread.

    A REST predict answer names neither the version that served it nor the alias of a lone
    output. Both are read from the signature's metadata, fetched after a predict and cached per
    (model, version, label, signature) for REST_INFO_TTL_S seconds. `predict` therefore returns
    the pinned version if `version` was given, else the version that metadata named when last
    read (stale for up to REST_INFO_TTL_S after a new version loads), or -1 if it could not be
    read. The output dtypes come from there too, so arrays match the gRPC transport's.
    """

    sends_encoded_images = True

    def __init__(
        self,
        url: str = "http://127.0.0.1:8501",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        tls: TLSFiles | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ):
        """Prepares the transport (nothing connects before the first call).

        Args:
            url: Base URL of the REST API, http:// or https://.
            timeout: Default deadline of each call in seconds, retries included.
            retries: Extra attempts after an UNAVAILABLE answer (503, connection refused).
            backoff: Base of the backoff in seconds: retry n waits up to backoff * 2**n.
            tls: The CA, client certificate and key for https:// (`TLSFiles()`, like None,
                trusts the system's roots and shows no certificate).
            max_response_bytes: Largest answer body read; a longer one fails the call with
                RESOURCE_EXHAUSTED before more than this is buffered.

        Raises:
            ValueError: A URL that is not http(s)://HOST..., or `tls` with an http:// URL,
                or a max_response_bytes below 1.
            ClientError: BAD_INPUT for a TLS file that is missing or not PEM.
        """
        super().__init__(timeout, retries, backoff, max_response_bytes)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        if tls is not None and parts.scheme == "http":
            raise ValueError(f"TLS options need an https:// URL, not {url!r}")
        if parts.scheme == "https":
            tls = tls or TLSFiles()
            self._factory = functools.partial(
                _HTTPSConnection, context=tls.ssl_context(), server_name=tls.server_name
            )
        else:
            self._factory = _HTTPConnection
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path.rstrip("/")
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak, so a finished thread's connection is dropped (and its socket closed) with it.
        self._connections: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._info: dict[tuple, tuple[float, dict | None]] = {}
        self._closed = False

    def _connection(self) -> _HTTPConnection | _HTTPSConnection:
        if self._closed:
            raise ValueError("the transport is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._factory(self._host, self._port)
            with self._lock:
                self._connections.add(conn)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes | None, timeout: float | None) -> Any:
        data = body
        headers = {"Content-Type": "application/json"} if data else {}

        def attempt(seconds: float) -> Any:
            conn = self._connection()
            # Connecting, sending and reading (however slowly the answer trickles in) all end
            # by this deadline.
            conn.deadline = time.monotonic() + seconds
            # A kept-alive connection that the server has since closed fails on first use. That
            # says nothing about the server, so the request is redone at once on a new one.
            for fresh in (conn.sock is None, True):
                try:
                    conn.request(method, self._prefix + path, data, headers)
                    response = conn.getresponse()
                    payload = _read_body(response, self.max_response_bytes)
                    break
                except ClientError:
                    conn.close()  # the rest of the answer is still unread
                    raise
                except TimeoutError:
                    conn.close()
                    raise ClientError(
                        "DEADLINE_EXCEEDED", f"no answer in {seconds:.3g} s"
                    ) from None
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    conn.close()
                    if fresh:
                        raise ClientError("UNAVAILABLE", "connection closed by server") from None
                except OSError as error:
                    conn.close()
                    raise ClientError("UNAVAILABLE", str(error)) from None
                except http.client.HTTPException as error:
                    conn.close()
                    raise ClientError("INTERNAL", f"bad HTTP answer: {error!r}") from None
            if response.status >= 400:
                try:
                    message = json.loads(payload)["error"]
                except (ValueError, KeyError, TypeError):
                    message = payload.decode("utf-8", "replace")
                raise ClientError(code_for_http_status(response.status), message, response.status)
            try:
                return _loads(payload)
            except ValueError:
                start = bytes(payload[:200])
                raise ClientError("INTERNAL", f"answer is not JSON: {start!r}") from None

        return self._call(attempt, timeout)

    def _predict(self, model, inputs, signature, version, label, timeout, output_filter):
        # TF Serving's REST API has no output filter: the answer holds every output.
        del output_filter
        try:
            body = predict_body(signature, inputs)
        except (TypeError, ValueError) as error:
            raise ClientError(BAD_INPUT, str(error)) from None
        answer = self._request("POST", _path(model, version, label) + ":predict", body, timeout)
        info = self._signature_info(model, version, label, signature, timeout)
        with _answer_shape():
            outputs, dtypes = answer["outputs"], info["outputs"] if info else {}
            # One output comes bare, not as {alias: value}.
            if len(dtypes) == 1 or not isinstance(outputs, dict) or set(outputs) == {"b64"}:
                outputs = {next(iter(dtypes), "outputs"): outputs}
            arrays = {
                alias: from_json(value, dtypes.get(alias)) for alias, value in outputs.items()
            }
        if version is None:
            version = info["version"] if info else -1
        return arrays, version

    def _signature_info(self, model, version, label, signature, timeout) -> dict | None:
        key = (model, version, label, signature)
        with self._lock:
            fetched, info = self._info.get(key, (-REST_INFO_TTL_S, None))
        if time.monotonic() - fetched < REST_INFO_TTL_S:
            return info
        try:
            meta = self._metadata(model, version, label, timeout)
            outputs = meta["signatures"][signature]["outputs"]
            info = {
                "version": meta["version"],
                "outputs": {a: o["dtype"] for a, o in outputs.items()},
            }
        except (ClientError, KeyError):
            info = None
        with self._lock:
            self._info[key] = (time.monotonic(), info)
        return info

    def _metadata(self, model, version, label, timeout):
        answer = self._request("GET", _path(model, version, label) + "/metadata", None, timeout)
        with _answer_shape():
            signature_map = answer["metadata"]["signature_def"]["signature_def"]
            signatures = {name: signature_dict(sig) for name, sig in signature_map.items()}
            return metadata_dict(model, int(answer["model_spec"].get("version", -1)), signatures)

    def _status(self, model, version, timeout):
        answer = self._request("GET", _path(model, version, None), None, timeout)
        with _answer_shape():
            return [
                {
                    "version": int(s.get("version", 0)),
                    "state": s.get("state", "UNKNOWN"),
                    "error_code": code_name(s.get("status", {}).get("error_code", "OK")),
                    "error_message": s.get("status", {}).get("error_message", ""),
                }
                for s in answer.get("model_version_status", [])
            ]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = list(self._connections), weakref.WeakSet()
        for conn in connections:
            conn.close()
