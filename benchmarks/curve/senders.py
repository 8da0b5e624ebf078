"""Asynchronous senders of one Predict request, over gRPC (grpc.aio) or REST (h11 on asyncio).

Each sender serialises its request once, so sending costs the sender no encoding; `send`
returns "OK" or the error's gRPC status name (a REST status is read back as the code TF
Serving maps to it, a refused or broken connection is UNAVAILABLE, a late answer
DEADLINE_EXCEEDED). Answers are read whole but not decoded.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping

import grpc
import h11
import numpy as np

from client.transports.grpc import PREDICT, model_spec
from client.transports.json_values import predict_body
from client.transports.tls import TLSFiles
from common import codec
from common.status import code_for_http_status
from common.wire import predict_pb2

_READ_BYTES = 2**16
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
]


class GrpcSender:
    """Predict over one grpc.aio channel (HTTP/2 streams: no connection per request).

    The request is encoded here, so a bad input fails before any load; the channel opens on
    the first send, inside the running event loop, as grpc.aio channels must.
    """

    def __init__(
        self,
        target: str,
        model: str,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        tls: TLSFiles | None = None,
    ):
        """Raises ValueError for an input array that cannot be sent (naming its alias), and
        ClientError for TLS files that are missing or not PEM."""
        request = predict_pb2.PredictRequest(
            model_spec=model_spec(model, version, label, signature)
        )
        for alias, array in inputs.items():
            try:
                codec.encode(array, out=request.inputs[alias])
            except (TypeError, ValueError) as error:
                raise ValueError(f"input {alias!r}: {error}") from None
        self.payload = request.SerializeToString()
        self._target = target
        self._credentials = None if tls is None else tls.grpc_credentials()
        self._options = [*_GRPC_OPTIONS, *(tls.grpc_options() if tls else [])]
        self._channel: grpc.aio.Channel | None = None
        self._predict = None

    async def send(self, timeout: float) -> str:
        if self._channel is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self._target, self._credentials, options=self._options
                )
            # No serialisers: the request goes as the bytes made above, the answer stays bytes.
            self._predict = self._channel.unary_unary(PREDICT)
        try:
            await self._predict(self.payload, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.protocol = h11.Connection(h11.CLIENT)
        self.used = False


class RestSender:
    """POST :predict over HTTP/1.1 keep-alive connections, one per request in flight.

    HTTP/1.1 answers one request at a time per connection, so the pool opens a connection
    whenever every open one is busy and keeps it for later requests. The body is written here,
    so a bad input or URL fails before any load.
    """

    def __init__(
        self,
        url: str,
        model: str,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        tls: TLSFiles | None = None,
    ):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        if tls is not None and parts.scheme != "https":
            raise ValueError(f"TLS options need an https:// URL, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = None
        self._server_name = None
        if parts.scheme == "https":
            tls = tls or TLSFiles()
            self._ssl = tls.ssl_context()
            self._server_name = tls.server_name or self._host
        path = parts.path.rstrip("/") + "/v1/models/" + urllib.parse.quote(model, safe="")
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += "/labels/" + urllib.parse.quote(label, safe="")
        try:
            self.body = predict_body(signature, inputs)
        except TypeError as error:
            raise ValueError(f"the inputs cannot be sent as REST JSON: {error}") from None
        self._head = h11.Request(
            method="POST",
            target=path + ":predict",
            headers=[
                ("Host", parts.netloc),
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(self.body))),
            ],
        )
        self._idle: list[_Connection] = []

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._ssl, server_hostname=self._server_name
        )
        return _Connection(reader, writer)

    async def send(self, timeout: float) -> str:
        try:
            status = await asyncio.wait_for(self._exchange(), timeout)
        except TimeoutError:
            return "DEADLINE_EXCEEDED"
        except (OSError, h11.ProtocolError, ConnectionError):
            return "UNAVAILABLE"
        return "OK" if status == 200 else code_for_http_status(status)

    async def _exchange(self) -> int:
        while self._idle:
            conn = self._idle.pop()
            # The server closes a connection that stayed idle too long; skip those.
            if not conn.reader.at_eof():
                try:
                    return await self._round_trip(conn)
                except _ClosedBeforeAnswerError:
                    continue  # closed while idle, before it read our request: try another
            conn.writer.close()
        return await self._round_trip(await self._open())

    async def _round_trip(self, conn: _Connection) -> int:
        protocol, status, keep = conn.protocol, None, False
        try:
            conn.writer.write(
                protocol.send(self._head)
                + protocol.send(h11.Data(data=self.body))
                + protocol.send(h11.EndOfMessage())
            )
            await conn.writer.drain()
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    protocol.receive_data(await conn.reader.read(_READ_BYTES))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("the server closed the connection before answering")
        except (ConnectionError, h11.RemoteProtocolError):
            if status is None and conn.used:
                raise _ClosedBeforeAnswerError from None
            raise
        else:
            conn.used = True
            if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
                protocol.start_next_cycle()
                keep = True
            return status
        finally:
            # A cancelled (timed out) or failed exchange leaves the connection mid-request.
            if keep:
                self._idle.append(conn)
            else:
                conn.writer.close()

    async def close(self) -> None:
        for conn in self._idle:
            conn.writer.close()
        self._idle.clear()


class _ClosedBeforeAnswerError(Exception):
    """A kept-alive connection turned out closed before it answered: safe to send again."""
