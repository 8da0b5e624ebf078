"""The gRPC transport: TF Serving's PredictionService and ModelService over one channel."""

from __future__ import annotations

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
            name: signature_dict(sig) for name, sig in signature_map.signature_def.items()
        }
        return metadata_dict(model, response.model_spec.version.value, signatures)

    def _status(self, model, version, timeout):
        request = status_pb2.GetModelStatusRequest(model_spec=_spec(model, version, None))
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


def _spec(model: str, version: int | None, label: str | None, signature: str = ""):
    spec = model_pb2.ModelSpec(name=model, signature_name=signature)
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec
