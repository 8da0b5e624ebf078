"""What the gRPC and REST transports share: the interface, the deadline and retry rules, the
cap on answers, and the shape of the metadata and status answers they both return."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from client.errors import ClientError
from common import codec
from common.wire import get_model_status_pb2 as status_pb2

T = TypeVar("T")

# The largest answer a transport accepts by default (the server's own cap on REST bodies): a
# hostile or broken server cannot make the client buffer more.
MAX_RESPONSE_BYTES = 64 * 2**20

# Indirection so that tests can record the backoff delays.
_sleep = time.sleep


class Transport:
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
        output_filter: Sequence[str] = (),
    ) -> tuple[dict[str, np.ndarray], int]:
        """Runs a signature of a model.

        Args:
            model: The model name.
            inputs: Input alias -> array (numeric, or str/bytes for DT_STRING).
            signature: The signature name.
            version: A version number to pin, or None for the latest.
            label: A version label ("stable", "canary") to pin instead, or None.
            timeout: Deadline in seconds, retries included; None for the transport's default.
            output_filter: The output aliases to answer with (Predict's `output_filter`); empty
                for all of them. gRPC only: TF Serving's REST API has no such field, so a REST
                answer holds every output.

        Returns:
            Output alias -> array (strings as object arrays of bytes), and the version that
            answered (-1 if unknown; see RestTransport for REST).

        Raises:
            ClientError: The server's status, or BAD_INPUT for an array that cannot be sent.
            ValueError: For both `version` and `label`.
        """
        _check_pin(version, label)
        return self._predict(model, inputs, signature, version, label, timeout, output_filter)

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
        """Runs `attempt(seconds_left)`; the deadline bounds the whole call, retries included.

        The REST transport's retry loop. gRPC retries by itself, under the same rules, as the
        channel's service config says (`client.transports.grpc.service_config`).
        """
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


def _check_pin(version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError("pass a version or a label, not both")


def enum_name(enum: Any, value: int) -> str:
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def code_name(code: int | str) -> str:
    # JSON usually spells the enum by name, but a number is valid proto3 JSON too.
    return code if isinstance(code, str) else enum_name(status_pb2.StatusProto.Code, code)


def metadata_dict(model: str, version: int, signatures: dict) -> dict:
    return {"name": model, "version": version, "signatures": dict(sorted(signatures.items()))}


def signature_dict(sig: Any) -> dict:
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
