"""gRPC and REST transports to TF Serving with one interface: predict, metadata, status."""

from __future__ import annotations

import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from client.errors import BAD_INPUT, ClientError
from client.tls import TLSFiles, grpc_channel
from common import codec
from common.wire import get_model_metadata_pb2 as metadata_pb2
from common.wire import get_model_status_pb2 as status_pb2
from common.wire import model_pb2, predict_pb2

T = TypeVar("T")

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"

# Request and response message of each gRPC method.
_GRPC_TYPES = {
    PREDICT: (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
    GET_MODEL_METADATA: (
        metadata_pb2.GetModelMetadataRequest,
        metadata_pb2.GetModelMetadataResponse,
    ),
    GET_MODEL_STATUS: (status_pb2.GetModelStatusRequest, status_pb2.GetModelStatusResponse),
}

# A REST predict answer names neither the served version nor (for one output) the output alias,
# so both come from the signature's metadata, read again once it is this many seconds old.
REST_INFO_TTL_S = 10.0

# The largest answer a transport accepts by default (the server's own cap on REST bodies): a
# hostile or broken server cannot make the client buffer more.
MAX_RESPONSE_BYTES = 64 * 2**20

# Indirection so that tests can record the backoff delays.
_sleep = time.sleep


class _Transport:
    """The interface both transports share, with the deadline and retry rules."""

    # Whether image models are better called with encoded images (REST, where a float image is
    # tens of thousands of JSON numbers) than with pre-processed tensors (gRPC).
    sends_encoded_images = False

    def __init__(self, timeout: float, retries: int, backoff: float, max_response_bytes: int):
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be at least 1, not {max_response_bytes}")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_response_bytes = max_response_bytes

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        signature: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """Runs a signature of a model.

        Args:
            model: The model name.
            inputs: Input alias -> array (numeric, or str/bytes for DT_STRING).
            signature: The signature name.
            version: A version number to pin, or None for the latest.
            label: A version label ("stable", "canary") to pin instead, or None.
            timeout: Deadline in seconds, retries included; None for the transport's default.

        Returns:
            Output alias -> array (strings as object arrays of bytes), and the version that
            answered (-1 if unknown; see RestTransport for REST).

        Raises:
            ClientError: The server's status, or BAD_INPUT for an array that cannot be sent.
            ValueError: For both `version` and `label`.
        """
        _check_pin(version, label)
        return self._predict(model, inputs, signature, version, label, timeout)

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        """The model's signatures (GetModelMetadata).

        Returns:
            {"name": model, "version": int, "signatures": {name: {"method_name": str,
            "inputs": {alias: {"dtype": "DT_FLOAT", "shape": [-1, 128, 128, 3]}},
            "outputs": {...}}}}; -1 is an unknown dimension, a None shape an unknown rank.

        Raises:
            ClientError: The server's status.
        """
        _check_pin(version, label)
        return self._metadata(model, version, label, timeout)

    def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[dict]:
        """The state of each version of a model, or of one (GetModelStatus).

        Returns:
            [{"version": 3, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}], in
            the server's order; error_code is a status name.

        Raises:
            ClientError: The server's status.
        """
        return self._status(model, version, timeout)

    def _call(self, attempt: Callable[[float], T], timeout: float | None) -> T:
        """Runs `attempt(seconds_left)`; the deadline bounds the whole call, retries included."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for tries in range(self.retries + 1):
            try:
                return attempt(max(deadline - time.monotonic(), 0.001))
            except ClientError as error:
                # Only UNAVAILABLE says the request was not served (server down, restarting,
                # shedding load), so only it is both safe and worth repeating.
                if error.code != "UNAVAILABLE" or tries == self.retries:
                    raise
                # Exponential backoff with full jitter spreads out clients that failed together.
                delay = random.uniform(0.0, self.backoff * 2**tries)
                if time.monotonic() + delay >= deadline:
                    raise
                _sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Releases the connections; the transport cannot be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class GrpcTransport(_Transport):
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
    ):
        """Opens the channel (lazily: nothing connects before the first call).

        Args:
            target: host:port of the gRPC server.
            timeout: Default deadline of each call in seconds, retries included.
            retries: Extra attempts after an UNAVAILABLE answer.
            backoff: Base of the backoff in seconds: retry n waits up to backoff * 2**n.
            max_message_bytes: Largest request sent (gRPC's default is 4 MiB).
            tls: The CA, client certificate and key for a TLS channel (`TLSFiles()` trusts
                the system's roots); None for plaintext.
            max_response_bytes: Largest answer received; gRPC fails a longer one with
                RESOURCE_EXHAUSTED before it is buffered whole.

        Raises:
            ClientError: BAD_INPUT for a TLS file that is missing or not PEM.
            ValueError: A max_response_bytes below 1.
        """
        super().__init__(timeout, retries, backoff, max_response_bytes)
        # After a refused connection gRPC waits 1 s (and more) before it tries to reconnect,
        # failing calls at once meanwhile, which would make short client backoffs useless.
        reconnect_ms = max(int(backoff * 1000), 20)
        options = [
            ("grpc.max_receive_message_length", min(max_response_bytes, 2**31 - 1)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, 2000)),
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
        method = self._methods[path]

        def attempt(seconds: float) -> Any:
            try:
                return method(request, timeout=seconds)
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

        return self._call(attempt, timeout)

    def _predict(self, model, inputs, signature, version, label, timeout):
        request = predict_pb2.PredictRequest(model_spec=_spec(model, version, label, signature))
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
            model_spec=_spec(model, version, label), metadata_field=["signature_def"]
        )
        response = self._rpc(GET_MODEL_METADATA, request, timeout)
        # Any.Unpack would check the type_url, which names TF's package rather than ours.
        signature_map = metadata_pb2.SignatureDefMap.FromString(
            response.metadata["signature_def"].value
        )
        signatures = {
            name: _signature_dict(sig) for name, sig in signature_map.signature_def.items()
        }
        return _metadata_dict(model, response.model_spec.version.value, signatures)

    def _status(self, model, version, timeout):
        request = status_pb2.GetModelStatusRequest(model_spec=_spec(model, version, None))
        response = self._rpc(GET_MODEL_STATUS, request, timeout)
        return [
            {
                "version": s.version,
                "state": _enum_name(status_pb2.ModelVersionStatus.State, s.state),
                "error_code": _enum_name(status_pb2.StatusProto.Code, s.status.error_code),
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def close(self) -> None:
        self._channel.close()


def _check_pin(version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError("pass a version or a label, not both")


def _spec(model: str, version: int | None, label: str | None, signature: str = ""):
    spec = model_pb2.ModelSpec(name=model, signature_name=signature)
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec


def _path(model: str, version: int | None, label: str | None) -> str:
    path = "/v1/models/" + urllib.parse.quote(model, safe="")
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += "/labels/" + urllib.parse.quote(label, safe="")
    return path


def _enum_name(enum: Any, value: int) -> str:
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def _code_name(code: int | str) -> str:
    # JSON usually spells the enum by name, but a number is valid proto3 JSON too.
    return code if isinstance(code, str) else _enum_name(status_pb2.StatusProto.Code, code)


def _metadata_dict(model: str, version: int, signatures: dict) -> dict:
    return {"name": model, "version": version, "signatures": dict(sorted(signatures.items()))}


def _signature_dict(sig: Any) -> dict:
    """{"method_name", "inputs", "outputs"} of a SignatureDef message or its JSON form."""
    if isinstance(sig, dict):
        method, inputs, outputs = (sig.get(k, {}) for k in ("method_name", "inputs", "outputs"))
    else:
        method, inputs, outputs = sig.method_name, sig.inputs, sig.outputs
    return {
        "method_name": method or "",
        "inputs": {alias: _info_dict(info) for alias, info in sorted(inputs.items())},
        "outputs": {alias: _info_dict(info) for alias, info in sorted(outputs.items())},
    }


def _info_dict(info: Any) -> dict:
    """{"dtype", "shape"} of a TensorInfo message or its JSON form (sizes are strings there)."""
    if isinstance(info, dict):
        shape = info.get("tensor_shape", {})
        dtype, unknown_rank = info.get("dtype", "DT_INVALID"), shape.get("unknown_rank", False)
        sizes = [int(dim.get("size", 0)) for dim in shape.get("dim", [])]
    else:
        dtype, unknown_rank = codec.enum_name(info.dtype), info.tensor_shape.unknown_rank
        sizes = [dim.size for dim in info.tensor_shape.dim]
    return {"dtype": dtype, "shape": None if unknown_rank else sizes}
