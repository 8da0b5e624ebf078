"""The gRPC transport: TF Serving's PredictionService and ModelService over one channel.

The channel balances calls round-robin over every address its target resolves to (a headless
Kubernetes Service gives one per ready pod), and gRPC itself retries the idempotent calls after
UNAVAILABLE, as the service config built by `service_config` says:

    >>> with GrpcTransport("dns:///tfserving-headless.tfserving.svc.cluster.local:8500") as t:
    ...     t.status("unet")
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import grpc

from client.errors import BAD_INPUT, ClientError
from client.transports.base import (
    MAX_RESPONSE_BYTES,
    Transport,
    enum_name,
    metadata_dict,
    signature_dict,
)
from client.transports.tls import TLSFiles, grpc_channel
from common import codec
from common.wire import get_model_metadata_pb2 as metadata_pb2
from common.wire import get_model_status_pb2 as status_pb2
from common.wire import model_pb2, predict_pb2

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"

# The calls gRPC may repeat after UNAVAILABLE: TF Serving's PredictionService methods only run
# the model (nothing on the server changes) and GetModelStatus only reads, so a second attempt
# cannot do anything twice. ModelService/HandleReloadConfigRequest is left out on purpose: it
# replaces the server's model list, and the rollout tool must see its first answer.
RETRIED_METHODS = (
    ("tensorflow.serving.PredictionService", "Predict"),
    ("tensorflow.serving.PredictionService", "Classify"),
    ("tensorflow.serving.PredictionService", "Regress"),
    ("tensorflow.serving.PredictionService", "MultiInference"),
    ("tensorflow.serving.PredictionService", "GetModelMetadata"),
    ("tensorflow.serving.ModelService", "GetModelStatus"),
)

# gRPC makes at most 5 attempts per call, whatever maxAttempts says.
MAX_RETRIES = 4

# Keepalive pings only while calls are in flight, and at most every 5 minutes: both
# tensorflow_model_server and the embedded server keep gRPC's server defaults (a ping with no
# call open counts as a strike unless the server permits it, and so does one within
# grpc.http2.min_ping_interval_without_data_ms, 5 minutes, of the last; the third strike gets
# GOAWAY "too_many_pings" and drops the connection).
KEEPALIVE_S = 300.0
KEEPALIVE_TIMEOUT_MS = 20_000

# Targets that name another protocol: gRPC would read them as a DNS name and fail later.
_NOT_GRPC = re.compile(r"^(https?|grpcs?)://", re.IGNORECASE)

# Request and response message of each gRPC method.
_GRPC_TYPES = {
    PREDICT: (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
    GET_MODEL_METADATA: (
        metadata_pb2.GetModelMetadataRequest,
        metadata_pb2.GetModelMetadataResponse,
    ),
    GET_MODEL_STATUS: (status_pb2.GetModelStatusRequest, status_pb2.GetModelStatusResponse),
}


class GrpcTransport(Transport):
    """TF Serving's gRPC API over one channel, which all threads share."""

    def __init__(
        self,
        target: str = "127.0.0.1:8500",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_message_bytes: int = 2**31 - 1,
        tls: TLSFiles | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        keepalive: float = KEEPALIVE_S,
    ):
        """Opens the channel (lazily: nothing connects before the first call).

        Args:
            target: A gRPC target: host:port, dns:///host:port (also dns://DNS-SERVER/host:port)
                or unix:PATH. Calls go round-robin over every address the name resolves to.
            timeout: Default deadline of each call in seconds, retries included.
            retries: Extra attempts after an UNAVAILABLE answer (0 to 4), for the idempotent
                methods (`RETRIED_METHODS`); gRPC makes them, within the deadline.
            backoff: Base of the backoff in seconds: retry n waits up to backoff * 2**n.
            max_message_bytes: Largest request sent (gRPC's default is 4 MiB).
            tls: The CA, client certificate and key for a TLS channel (`TLSFiles()` trusts
                the system's roots); None for plaintext.
            max_response_bytes: Largest answer received; gRPC fails a longer one with
                RESOURCE_EXHAUSTED before it is buffered whole.
            keepalive: Seconds between keepalive pings while calls are in flight. Lower it
                only for servers that allow it (see `KEEPALIVE_S`).

        Raises:
            ClientError: BAD_INPUT for a TLS file that is missing or not PEM.
            ValueError: A target of another protocol (http://...), retries outside 0 to 4,
                a backoff or keepalive that is not a positive number, or a max_response_bytes
                below 1.
        """
        if _NOT_GRPC.match(target):
            raise ValueError(
                f"{target!r} is not a gRPC target: give host:port or dns:///host:port (a URL "
                "is for REST)"
            )
        if not (isinstance(keepalive, int | float) and math.isfinite(keepalive) and keepalive > 0):
            raise ValueError(f"keepalive must be a positive number of seconds, not {keepalive!r}")
        config = service_config(retries, backoff)
        super().__init__(timeout, retries, backoff, max_response_bytes)
        # After a refused connection gRPC waits 1 s (and more) before it tries to reconnect,
        # failing calls at once meanwhile, which would make short client backoffs useless; a
        # long backoff must not delay reconnecting to a restarted server either.
        reconnect_ms = min(max(int(backoff * 1000), 20), 1000)
        options = [
            ("grpc.max_receive_message_length", min(max_response_bytes, 2**31 - 1)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, 2000)),
            ("grpc.service_config", json.dumps(config)),
            # Ours is the only service config: a DNS TXT record may not change the balancing or
            # the retries.
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.enable_retries", 1),
            # gRPC retries only a request it still holds whole, 256 KiB by default; images
            # are larger, and must be retried too.
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
            ("grpc.keepalive_time_ms", int(keepalive * 1000)),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
        ]
        self._channel = grpc_channel(target, tls, options)
        self._methods = {
            path: self._channel.unary_unary(
                path,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for path, (request, response) in _GRPC_TYPES.items()
        }

    def _rpc(self, path: str, request: Any, timeout: float | None) -> Any:
        # One call: the retries happen inside gRPC (the service config), under this deadline.
        try:
            return self._methods[path](
                request, timeout=self.timeout if timeout is None else timeout
            )
        except grpc.RpcError as error:
            code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
            details = (error.details() if isinstance(error, grpc.Call) else str(error)) or ""
            if code == "RESOURCE_EXHAUSTED" and "Received message larger" in details:
                details += (
                    f": the answer is over the client's limit of {self.max_response_bytes}"
                    " bytes; raise max_response_bytes (--max-response-mib on the command"
                    " line) if answers this large are expected"
                )
            raise ClientError(code, details) from None

    def _predict(self, model, inputs, signature, version, label, timeout, output_filter):
        request = predict_pb2.PredictRequest(
            model_spec=model_spec(model, version, label, signature), output_filter=output_filter
        )
        for alias, array in inputs.items():
            try:
                # Encoding straight into the request saves copying big tensors once more.
                codec.encode(array, out=request.inputs[alias])
            except (TypeError, ValueError) as error:
                raise ClientError(BAD_INPUT, f"input {alias!r}: {error}") from None
        response = self._rpc(PREDICT, request, timeout)
        try:
            # A typed field broadcasts its last value to the whole shape: a few bytes on the
            # wire may declare gigabytes, so the cap holds for the decoded arrays too.
            size = sum(codec.declared(tensor).nbytes for tensor in response.outputs.values())
            if size > self.max_response_bytes:
                raise ClientError(
                    "RESOURCE_EXHAUSTED",
                    f"the answer declares {size} bytes of outputs, over the client's limit of "
                    f"{self.max_response_bytes} bytes: raise max_response_bytes "
                    "(--max-response-mib on the command line) if answers this large are expected",
                )
            # NumPy has no bfloat16: such outputs come back widened (exactly) to float32.
            outputs = {
                alias: codec.decode(tensor, widen_bfloat16=True)
                for alias, tensor in response.outputs.items()
            }
        except codec.TensorError as error:
            raise ClientError("INTERNAL", f"unexpected answer: {error}") from None
        spec = response.model_spec
        return outputs, spec.version.value if spec.HasField("version") else -1

    def _metadata(self, model, version, label, timeout):
        request = metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(model, version, label), metadata_field=["signature_def"]
        )
        response = self._rpc(GET_MODEL_METADATA, request, timeout)
        # Any.Unpack would check the type_url, which names TF's package rather than ours.
        signature_map = metadata_pb2.SignatureDefMap.FromString(
            response.metadata["signature_def"].value
        )
        signatures = {
            name: signature_dict(sig) for name, sig in signature_map.signature_def.items()
        }
        return metadata_dict(model, response.model_spec.version.value, signatures)

    def _status(self, model, version, timeout):
        request = status_pb2.GetModelStatusRequest(model_spec=model_spec(model, version, None))
        response = self._rpc(GET_MODEL_STATUS, request, timeout)
        return [
            {
                "version": s.version,
                "state": enum_name(status_pb2.ModelVersionStatus.State, s.state),
                "error_code": enum_name(status_pb2.StatusProto.Code, s.status.error_code),
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def close(self) -> None:
        self._channel.close()


def service_config(retries: int, backoff: float) -> dict:
    """The channel's gRPC service config: round_robin, and the idempotent calls' retry policy.

    Retry n waits a random time up to backoff * 2**n (gRPC's full jitter), as the REST
    transport does.

    Raises:
        ValueError: retries outside 0 to 4, or a backoff that is not a positive number.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ValueError(
            f"retries must be 0 to {MAX_RETRIES} over gRPC, not {retries!r}: gRPC makes at most "
            f"{MAX_RETRIES + 1} attempts per call"
        )
    if not (isinstance(backoff, int | float) and math.isfinite(backoff) and backoff > 0):
        raise ValueError(f"backoff must be a positive number of seconds, not {backoff!r}")
    # round_robin keeps a connection to every address and spreads calls over the ready ones;
    # gRPC's default, pick_first, sends every call to the first address that answers.
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries:
        policy = {
            "maxAttempts": retries + 1,
            "initialBackoff": _duration(backoff),
            "maxBackoff": _duration(backoff * 2 ** (retries - 1)),
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        names = [{"service": service, "method": method} for service, method in RETRIED_METHODS]
        config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    return config


def _duration(seconds: float) -> str:
    # A protobuf Duration in JSON: decimal seconds, here to the millisecond (at least 1 ms).
    millis = max(round(seconds * 1000), 1)
    return f"{millis // 1000}.{millis % 1000:03d}s"


def model_spec(
    model: str, version: int | None, label: str | None, signature: str = ""
) -> model_pb2.ModelSpec:
    """The ModelSpec naming `model` at a version, or at a label, or at the newest (neither)."""
    spec = model_pb2.ModelSpec(name=model, signature_name=signature)
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec
