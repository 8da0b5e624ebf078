"""The rollout gates as an HTTP service for Flagger's webhooks: `python -m serving.rollout webhook`.

Example:
    python -m serving.rollout --server tfserving:8500 --config /config/models.config \\
        webhook --listen 0.0.0.0:8080
    curl -s -X POST localhost:8080/gate -d '{"name": "tfserving", "namespace": "tfserving",
        "phase": "Progressing", "metadata": {"model": "unet"}}'

`POST /gate` takes Flagger's webhook payload (name, namespace, phase, checksum, metadata; Flagger
passes the webhook's `metadata` map as strings) and runs the same verification as
`python -m serving.rollout verify <metadata.model>`. Answers, as JSON:

    200  every gate passed: the report (the rows of `verify --json`)
    400  a body that is not Flagger's payload, or a model the config does not have
    404 / 405  another path, or another method
    408  the body took longer than --read_timeout to arrive (a request head that slow gets no
         answer: the connection is closed)
    409  another verification is running (one at a time; Flagger calls again next interval)
    412  a gate failed: the failing rows first, then the whole report
    413  a body over MAX_BODY_BYTES
    422  refused before any request was sent (no `canary` label, a bad golden folder, ...)
    502  the model server (or Prometheus, with --prometheus) failed during the verification
    503  the service is stopping

Flagger counts any status above 202 as a failed check. `GET /healthz` answers 200 while the
process serves (with `busy`: whether a verification is running), for the probes.

uvicorn's HTTP/1.1 server with h11's parser does the HTTP; every answer closes its connection.
Bounds: the body (MAX_BODY_BYTES, refused from its Content-Length before it is read), the head
and body arrival (--read_timeout), the head size (h11's limit) and the number of open
connections (MAX_CONNECTIONS, beyond which a connection is closed at accept). A verification
is bounded by the tool's --timeout per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import sys
import threading
import time

import grpc
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from client.errors import ClientError
from client.transports.tls import TLSFiles
from serving.rollout import config_edit as rc
from serving.rollout.control import one_line
from serving.rollout.verify import Options, verify

MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
# The one key of the webhook's `metadata` this service reads.
METADATA_KEYS = ("model",)
JSON_HEADERS = [(b"content-type", b"application/json"), (b"connection", b"close")]


class PayloadError(Exception):
    """A body that is not a webhook payload this service can act on (400)."""


def parse_payload(body: bytes) -> dict:
    """Flagger's webhook payload, checked: a JSON object whose `metadata` names the model.

    Unknown top-level fields are ignored (Flagger may add some); unknown metadata keys are
    refused, since they come from the Canary manifest and a typo there must not pass unseen.

    Raises:
        PayloadError: the body is not such an object (the message says what is wrong).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise PayloadError(f"the body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise PayloadError("expected a JSON object: Flagger's webhook payload")
    for key in ("name", "namespace", "phase", "checksum"):
        if key in payload and not isinstance(payload[key], str):
            raise PayloadError(f"{key} must be a string, got {type(payload[key]).__name__}")
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict) or not metadata:
        raise PayloadError(
            'no metadata: set the webhook\'s metadata to {"model": "<served model name>"}'
        )
    unknown = sorted(set(metadata) - set(METADATA_KEYS))
    if unknown:
        raise PayloadError(
            f"unknown metadata key {unknown[0]!r}; valid: {', '.join(METADATA_KEYS)}"
        )
    model = metadata.get("model")
    if not isinstance(model, str) or not model:
        raise PayloadError('metadata.model must name the served model, e.g. "unet"')
    return payload


class GateService:
    """Runs the gates for each webhook call, one verification at a time."""

    def __init__(self, tool, server: str, tls: TLSFiles | None, options: Options, timeout: float):
        self.tool, self.server, self.tls = tool, server, tls
        self.options, self.timeout = options, timeout
        self.running = threading.Lock()
        # The verification runs here, off the event loop, so probes and refusals still answer.
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="verify")

    async def gate(self, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one POST /gate body."""
        try:
            payload = parse_payload(body)
            model = payload["metadata"]["model"]
            rc.model_config(rc.read_config(self.tool.config_path), model)
        except (PayloadError, rc.RefusalError) as error:
            return 400, {"error": str(error)}
        if not self.running.acquire(blocking=False):
            return 409, {"error": "another verification is running; call again when it ends"}
        try:
            future = self.pool.submit(self._verify, model)
        except RuntimeError:  # the pool is shut down: the service is stopping
            self.running.release()
            return 503, {"error": "the gate service is stopping"}
        # The verification releases the lock itself when it ends, so a call that goes away (or
        # is cancelled at shutdown) never lets a second verification start beside it.
        return await asyncio.wrap_future(future)

    def _verify(self, model: str) -> tuple[int, dict]:
        try:
            return self._run(model)
        finally:
            self.running.release()

    def _run(self, model: str) -> tuple[int, dict]:
        from serving.rollout import report

        started = time.monotonic()
        try:
            result = verify(
                self.tool, self.server, self.tls, model, self.options, self.timeout, "gate"
            )
        except rc.RefusalError as error:
            return self._log(422, model, started, {"error": str(error)})
        except (rc.ServerError, rc.InDoubtError) as error:
            return self._log(502, model, started, {"error": str(error)})
        except ClientError as error:
            message = f"{error.code}: {one_line(error.message)}"
            return self._log(502, model, started, {"error": message})
        except grpc.RpcError as error:
            message = f"{error.code().name}: {one_line(error.details() or '')}"
            return self._log(502, model, started, {"error": message})
        data = report.to_json(result)
        canary = result.versions[rc.CANARY]
        if result.passed:
            return self._log(200, model, started, {**data, "outcome": "passed"})
        failing = [row for row in data["gates"] if row["result"] == "FAIL"]
        answer = {
            "error": f"{model} version {canary} fails {result.first_failure()}",
            "failing": failing,
            **data,
            "outcome": "failed",
        }
        return self._log(412, model, started, answer)

    @staticmethod
    def _log(status: int, model: str, started: float, answer: dict) -> tuple[int, dict]:
        what = answer.get("error") or "every gate passed"
        seconds = time.monotonic() - started
        print(f"POST /gate {model}: {status} in {seconds:.1f} s: {what}", file=sys.stderr)
        return status, answer


async def _send(send, status: int, answer: dict, extra=()) -> None:
    body = json.dumps(answer, indent=1).encode("utf-8") + b"\n"
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(scope, receive, read_timeout: float) -> bytes | tuple[int, str]:
    """The request body, or (status, message) when it is too big or too slow."""
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and int(declared) > MAX_BODY_BYTES:  # h11 checked it is a number
        return 413, f"the body has {int(declared)} bytes; the limit is {MAX_BODY_BYTES}"
    chunks, size = [], 0
    try:
        async with asyncio.timeout(read_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return 400, "the client went away"
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return 413, f"the body is over {MAX_BODY_BYTES} bytes"
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks)
    except TimeoutError:
        return 408, f"the body did not arrive within {read_timeout:g} s"


def make_app(service: GateService, read_timeout: float):
    """The ASGI application: /gate and /healthz."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                await _send(send, 405, {"error": "use GET"}, [(b"allow", b"GET, HEAD")])
                return
            await _send(send, 200, {"status": "serving", "busy": service.running.locked()})
            return
        if path != "/gate":
            await _send(send, 404, {"error": f"no {path[:100]}; POST /gate or GET /healthz"})
            return
        if method != "POST":
            await _send(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
            return
        body = await _read_body(scope, receive, read_timeout)
        if isinstance(body, tuple):
            await _send(send, body[0], {"error": body[1]})
            return
        status, answer = await service.gate(body)
        await _send(send, status, answer)

    return app


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection beyond MAX_CONNECTIONS at accept and one whose
    request head has not arrived within the read timeout (uvicorn has neither bound).

    Uses uvicorn's `connections` (the server's open connections, this one included), `cycle`
    (None until a request head has been parsed), `transport` and `loop`.
    """

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self.loop.call_later(self.config.gate_read_timeout, self._head_deadline)

    def _head_deadline(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def check_startup(options: Options, server: str, tls: TLSFiles | None) -> None:
    """What can be refused before serving, whatever model a call names: the gates file, the
    --prometheus URL and the monitoring config (each call checks the rest, as `verify` does).

    Raises:
        rc.RefusalError: one of them cannot be used.
    """
    from serving.rollout import metrics, prometheus
    from serving.rollout.gates import GatesError, load_gates

    try:
        load_gates(options.gates)
        if options.prometheus is not None:
            prometheus.check_url(options.prometheus)
        if options.monitoring_config is not None:
            metrics.metrics_url(server, options.rest_port, options.monitoring_config, tls)
    except (GatesError, prometheus.PrometheusError, metrics.MetricsError) as error:
        raise rc.RefusalError(str(error)) from None


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) to listen on.

    Raises:
        ValueError: not HOST:PORT with a port from 1 to 65535.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen expects HOST:PORT (e.g. 0.0.0.0:8080), got {text!r}")
    return host, int(port)


def serve(service: GateService, host: str, port: int, read_timeout: float) -> int:
    """Serves until SIGINT or SIGTERM; 0 after a clean stop."""
    config = uvicorn.Config(
        make_app(service, read_timeout),
        host=host,
        port=port,
        http=_BoundedH11,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_graceful_shutdown=5,
    )
    config.gate_read_timeout = read_timeout
    print(f"gate service on http://{host}:{port}/gate (model server {service.server})", flush=True)
    # uvicorn stops gracefully on SIGINT or SIGTERM, then raises the signal again for the
    # handler it found: this one, so that a stop is a clean exit (0), not a death by signal.
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        service.pool.shutdown(wait=False, cancel_futures=True)
    print("gate service stopped", file=sys.stderr, flush=True)
    return 0
