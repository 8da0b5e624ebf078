"""Admission: what a request may cost once decoded, checked before anything is decoded.

Three limits, for Predict, Classify, Regress and MultiInference over gRPC and REST alike:
items per request (dimension 0 of each batched input, or the number of examples), bytes per
request, and bytes of all requests in flight together. The first two refuse a request that can
never be served, the third one that could be served later.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

import grpc

from common import codec
from serving import errors, tensors
from serving.servables import inference


def batched(tensor_info) -> bool:
    """Whether a signature input's dimension 0 is a batch: an unknown rank or size there.

    A fixed dimension 0 is the model's own (a sequence length, say), not a count of items.
    """
    shape = tensor_info.tensor_shape
    return shape.unknown_rank or (len(shape.dim) > 0 and shape.dim[0].size < 0)


class Admission:
    """The server's admission limits, and the bytes of the requests it holds in flight.

    Args:
        max_request_bytes: `--max_request_tensor_bytes`; None for no limit.
        max_inflight_bytes: `--max_inflight_tensor_bytes`; None for no limit.
        max_items: `--max_request_items`; None for no limit.
    """

    def __init__(
        self,
        *,
        max_request_bytes: int | None = None,
        max_inflight_bytes: int | None = None,
        max_items: int | None = None,
    ):
        self.max_request_bytes = max_request_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.max_items = max_items
        self._lock = threading.Lock()
        self._inflight = 0

    def check_items(self, signature, request_inputs, declared: Mapping[str, codec.Declared]):
        """`--max_request_items`: dimension 0 of every batched input.

        INVALID_ARGUMENT, as batching's own `Task size N is larger than maximum input batch
        size`: the request is wrong whatever the server's load, and retrying cannot help.
        """
        if self.max_items is None:
            return
        for alias, size in declared.items():
            if size.shape and batched(signature.inputs[alias]) and size.shape[0] > self.max_items:
                raise errors.invalid_argument(
                    f'Input "{alias}" has {size.shape[0]} items (dimension 0 of shape '
                    f"[{_shape(size.shape)}] {tensors.dtype_name(request_inputs[alias].dtype)}); "
                    f"this server takes at most {self.max_items} items per request "
                    "(--max_request_items): split it into smaller requests"
                )

    def check_bytes(self, request_inputs, declared: Mapping[str, codec.Declared]) -> int:
        """`--max_request_tensor_bytes`: the inputs' declared bytes, summed, must fit.

        Returns:
            The total, for `hold`.

        Raises:
            ServingError: RESOURCE_EXHAUSTED naming the input that crosses the limit.
        """
        total, limit = 0, self.max_request_bytes
        for alias, size in declared.items():
            total += size.nbytes
            if limit is not None and total > limit:
                dtype = tensors.dtype_name(request_inputs[alias].dtype)
                before = f", {total} bytes with the inputs before it" if total > size.nbytes else ""
                raise errors.ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f'Input "{alias}" declares {size.nbytes} bytes (shape [{_shape(size.shape)}] '
                    f"{dtype}){before}; this server takes at most {limit} bytes of input tensors "
                    "per request (--max_request_tensor_bytes)",
                )
        return total

    def check_examples(self, count: int, nbytes: int) -> None:
        """Both per-request limits for the serialized examples of Classify and Regress."""
        if self.max_items is not None and count > self.max_items:
            raise errors.invalid_argument(
                f"The request has {count} examples; this server takes at most {self.max_items} "
                "items per request (--max_request_items): split it into smaller requests"
            )
        limit = self.max_request_bytes
        if limit is not None and nbytes > limit:
            raise errors.ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"The request's {count} examples take {nbytes} bytes once serialized; this "
                f"server takes at most {limit} bytes of input tensors per request "
                "(--max_request_tensor_bytes)",
            )

    @contextlib.contextmanager
    def examples(self, request_input) -> Iterator[None]:
        """Admits the `tf.Example`s of a Classify, Regress or MultiInference request.

        Raises:
            ServingError: as `check_examples` and `hold`.
        """
        count, nbytes = inference.declared_examples(request_input)
        self.check_examples(count, nbytes)
        with self.hold(nbytes):
            yield

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Counts `nbytes` as in flight until the block ends, however it ends.

        Raises:
            ServingError: RESOURCE_EXHAUSTED at once (nothing waits) when the requests in flight
                and this one would be over `--max_inflight_tensor_bytes`.
        """
        limit = self.max_inflight_bytes
        with self._lock:
            held = self._inflight
            if limit is not None and held + nbytes > limit:
                raise errors.ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"This request's input tensors take {nbytes} bytes and the requests in "
                    f"flight hold {held}; this server holds at most {limit} bytes of input "
                    "tensors at once (--max_inflight_tensor_bytes): retry later",
                )
            self._inflight = held + nbytes
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= nbytes


def _shape(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))
