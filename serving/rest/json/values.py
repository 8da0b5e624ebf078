"""JSON values (scalars, nested lists, base64 objects) to arrays of a signature dtype."""

from __future__ import annotations

import base64
import binascii
import itertools
import math
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from common.codec import NUMPY_MAX_DIMS
from serving.errors import ServingError, invalid_argument, unimplemented
from serving.rest.json.text import debug_string, json_type
from serving.tensors import dtype_name, numpy_dtype

_INT32 = (types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8)
# Inclusive integer ranges rapidjson's IsInt/IsInt64/IsUint/IsUint64 accept, per signature dtype.
_INT_RANGES = {
    **dict.fromkeys(_INT32, (-(2**31), 2**31 - 1)),
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOATS = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)
_OTHER_FAST = (types_pb2.DT_BOOL, types_pb2.DT_STRING)


def is_b64(value: Any) -> bool:
    """`IsValBase64Object`: exactly one key, `b64`, holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value: Any) -> bytes:
    """`JsonDecodeBase64Object`, accepting what absl::Base64Unescape accepts."""
    if not is_b64(value):
        raise invalid_argument(
            f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        )
    text = "".join(value["b64"].split())
    # absl accepts missing padding; Python insists on it, so pad first.
    if len(text) % 4 == 1:
        raise invalid_argument("Unable to base64 decode")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def dense_shape(value: Any) -> tuple[int, ...]:
    """`GetDenseTensorShape`: follow the first element of each nested list."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def check_rank(rank: int, what: str = "JSON Value", batch: bool = False) -> None:
    """Refuses lists nested deeper than a tensor's dimensions can be held here.

    TensorFlow allows 254 dimensions, but the arrays this server decodes JSON into hold 64;
    without the check NumPy's own ValueError would be an HTTP 500.

    Args:
        rank: the nesting depth of lists, which is the tensor's rank.
        what: what nests, for the message.
        batch: the depth includes the batch dimension the `instances` list adds.

    Raises:
        ServingError: INVALID_ARGUMENT naming the depth and the limit.
    """
    if rank > NUMPY_MAX_DIMS:
        each = f" (the batch and {rank - 1} in each instance)" if batch else ""
        raise invalid_argument(
            f"{what} nests lists {rank} levels deep{each}; a tensor has at most "
            f"{NUMPY_MAX_DIMS} dimensions here (NumPy's limit)"
        )


def to_array(value: Any, dtype: int, booleans: bool = True) -> np.ndarray:
    """One JSON value (scalar or nested lists) as an array of a signature dtype (`FillTensorProto`).

    Raises:
        ServingError: TF Serving's text for ragged lists, wrong JSON types, bad base64, or
            UNIMPLEMENTED for dtypes JSON cannot carry (half, bfloat16, complex, ...).
    """
    shape = dense_shape(value)
    check_rank(len(shape))
    array = fast_array(value, shape, dtype, booleans)
    if array is not None:
        return array
    values: list = []
    try:
        _fill(value, 0, shape, dtype, values)
    except RecursionError:
        raise invalid_argument("JSON Value is nested too deeply to be a tensor") from None
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    with np.errstate(over="ignore"):
        if dtype in _INT_RANGES:
            wide = np.array(values, dtype=np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64)
            # Narrow ints wrap like the C++ static_cast in Tensor::FromProto.
            return wide.astype(numpy_dtype(dtype)).reshape(shape)
        return np.array(values, dtype=numpy_dtype(dtype)).reshape(shape)


def _fill(value: Any, level: int, shape: tuple[int, ...], dtype: int, out: list) -> None:
    """`FillTensorProto`: the exact walk and error texts, used when the fast path declines."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(decode_b64(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _scalar(value: Any, dtype: int) -> Any:
    """`AddValueToTensor`: one JSON scalar checked against the signature dtype."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in _FLOATS:
        if not is_number:
            raise _type_error(value, dtype)
        try:
            return float(value)
        except OverflowError:
            # rapidjson stores such integers as doubles, which overflow to infinity.
            return math.copysign(math.inf, value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (isinstance(value, int) and is_number and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogateescape")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise unimplemented(
        f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}"
    )


def fast_array(
    value: Any, shape: tuple[int, ...], dtype: int, booleans: bool = True
) -> np.ndarray | None:
    """Converts a rectangular, correctly typed value in bulk; None means "walk it instead".

    Args:
        value: the parsed JSON value.
        shape: its dense shape (`dense_shape`).
        dtype: the signature's DataType.
        booleans: whether the document may hold `true`/`false`. Without them, NumPy's own
            conversion of the nested lists (in C) is exact for numbers: it refuses ragged
            lists, and anything but numbers changes the array's kind. With them it is not (a
            bool among floats becomes 1.0), so each element's type is checked instead.
    """
    if not shape or not (dtype in _FLOATS or dtype in _INT_RANGES or dtype in _OTHER_FAST):
        return None
    if not booleans and (dtype in _FLOATS or dtype in _INT_RANGES):
        return _numbers(value, shape, dtype)
    try:
        objects = np.array(value, dtype=object)
    except (ValueError, RecursionError):
        return None
    if objects.shape != shape:
        return None
    kinds = set(map(type, objects.ravel().tolist()))
    try:
        if dtype in _FLOATS and kinds <= {int, float}:
            with np.errstate(over="ignore"):
                return objects.astype(np.float64).astype(numpy_dtype(dtype))
        if dtype in _INT_RANGES and kinds <= {int}:
            return _in_range(objects.astype(np.int64), dtype)
        if dtype == types_pb2.DT_BOOL and kinds <= {bool}:
            return objects.astype(np.bool_)
        if dtype == types_pb2.DT_STRING and kinds <= {str}:
            flat = objects.ravel()
            flat[:] = [text.encode("utf-8", "surrogateescape") for text in flat.tolist()]
            return flat.reshape(shape)
    except OverflowError:
        pass
    return None


def _numbers(value: Any, shape: tuple[int, ...], dtype: int) -> np.ndarray | None:
    """Nested lists of numbers (no booleans in the document) converted by NumPy alone."""
    flat = _flatten(value, shape)
    try:
        # A flat list converts about twice as fast as nested ones (NumPy walks no nesting).
        numbers = np.array(value if flat is None else flat)
    except (ValueError, RecursionError, OverflowError):
        return None  # ragged, or not numbers: the walk says exactly what is wrong
    if flat is not None and numbers.ndim == 1:
        numbers = numbers.reshape(shape)
    if numbers.shape != shape:
        return None
    if dtype in _FLOATS and numbers.dtype.kind in "iuf":
        # JSON numbers are doubles: float64 first (no copy when they are already), then the
        # signature's dtype, rounding once from the double as rapidjson's static_cast does.
        with np.errstate(over="ignore"):
            return numbers.astype(np.float64, copy=False).astype(numpy_dtype(dtype), copy=False)
    if dtype in _INT_RANGES and numbers.dtype.kind in "iu":
        return _in_range(numbers, dtype)
    return None


def _flatten(value: list, shape: tuple[int, ...]) -> list | None:
    """The elements of rectangular nested lists in C order, or None (then NumPy nests).

    Only list lengths are checked here. An element that is no list where lists belong either
    has no length (a number, null) or is a string or object of that length, whose characters
    or keys then reach NumPy as strings and give an array of the wrong kind; an element that
    is a list where numbers belong makes NumPy refuse the flat list or give it two dimensions.
    Either way the caller falls back. With a zero dimension an empty string or object would
    pass for an empty list, so those shapes take NumPy's nested conversion.
    """
    if len(shape) < 2 or 0 in shape:
        return None
    level = value
    for size in shape[1:]:
        try:
            if set(map(len, level)) != {size}:
                return None
        except TypeError:
            return None
        level = list(itertools.chain.from_iterable(level))
    return level


def _in_range(wide: np.ndarray, dtype: int) -> np.ndarray | None:
    low, high = _INT_RANGES[dtype]
    if wide.size and (int(wide.min()) < low or int(wide.max()) > high):
        return None
    return wide.astype(numpy_dtype(dtype))
