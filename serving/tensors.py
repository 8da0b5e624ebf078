"""The shared codec (`common.codec`) with TF Serving's error codes and texts.

The server decodes and encodes TensorFlow's own TensorProto messages; every codec failure becomes
the ServingError TF Serving answers with, such as `tensor parsing error: <alias>`.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2

from common import codec
from serving.errors import ServingError, invalid_argument, unimplemented

# TF names every DataType the same way; re-exported for the server's messages.
dtype_name = codec.dtype_name


def numpy_dtype(dtype: int) -> np.dtype:
    """The NumPy dtype holding a DataType (`ml_dtypes.bfloat16` for DT_BFLOAT16).

    Raises:
        ServingError: UNIMPLEMENTED for types with no NumPy form (resource, variant, quantized).
    """
    if dtype in codec.QUANTIZED:
        raise unimplemented(f"Unsupported data type: {dtype_name(dtype)}")
    try:
        return codec.numpy_dtype(dtype)
    except codec.TensorError:
        raise unimplemented(f"Unsupported data type: {dtype_name(dtype)}") from None


def data_type(array_dtype: np.dtype | type) -> int:
    """The DataType for a NumPy dtype.

    Raises:
        ServingError: UNIMPLEMENTED for NumPy types TF has no equivalent for.
    """
    try:
        return codec.data_type(array_dtype)
    except TypeError:
        raise unimplemented(f"Unsupported numpy dtype: {np.dtype(array_dtype)}") from None


def to_numpy(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """Decodes a request tensor exactly like TF's `Tensor::FromProto`.

    Raises:
        ServingError: INVALID_ARGUMENT `tensor parsing error: <alias>` for an unsupported dtype,
            an invalid or unknown shape, or a `tensor_content` of the wrong size.
    """
    if proto.dtype in codec.QUANTIZED:
        # No SavedModel signature served here takes quantized tensors: refused as unparseable.
        raise _parse_error(alias)
    try:
        return codec.decode(proto)
    except codec.TensorError:
        raise _parse_error(alias) from None


def declared(proto: tensor_pb2.TensorProto, alias: str) -> codec.Declared:
    """What a request tensor declares (shape, elements, bytes), checked but not decoded.

    It makes the checks of `to_numpy` that cost nothing, so a server can refuse a tensor that
    is too large before `to_numpy` allocates it.

    Raises:
        ServingError: INVALID_ARGUMENT `tensor parsing error: <alias>` where `to_numpy` would
            give it (DT_STRING `tensor_content` is only checked by `to_numpy`).
    """
    if proto.dtype in codec.QUANTIZED:
        raise _parse_error(alias)
    try:
        return codec.declared(proto)
    except codec.TensorError:
        raise _parse_error(alias) from None


def from_numpy(
    array: np.ndarray,
    *,
    tensor_content: bool = False,
    out: tensor_pb2.TensorProto | None = None,
) -> tensor_pb2.TensorProto:
    """Encodes an array as TF Serving does (typed `*_val` fields unless `tensor_content`).

    Args:
        array: any array-like; `str` elements are encoded as UTF-8.
        tensor_content: numeric values in `tensor_content` instead of the typed fields.
        out: a message to fill in place (e.g. `response.outputs[name]`); a new one when None.

    Raises:
        ServingError: UNIMPLEMENTED for NumPy types or string elements TF cannot carry.
    """
    message = tensor_pb2.TensorProto() if out is None else out
    try:
        return codec.encode(array, message, tensor_content=tensor_content)
    except (TypeError, ValueError) as error:
        raise unimplemented(f"Cannot encode the tensor: {error}") from None


def shape_text(shape) -> str:
    """TF's `TensorShape::DebugString` of a shape tuple: `[2,3]`, `[]` for a scalar, `?` for an
    unknown size (None or -1)."""
    return "[" + ",".join("?" if size is None or size < 0 else str(size) for size in shape) + "]"


def _parse_error(alias: str) -> ServingError:
    return invalid_argument(f"tensor parsing error: {alias}")
