"""NumPy arrays to and from the JSON values of TF Serving's REST API (the client's side)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from common.codec import as_bytes, numpy_dtype
from common.wire.tensor_pb2 import DataType


def to_json(array: ArrayLike) -> Any:
    """An array as REST's columnar JSON value: nested lists, strings as {"b64": ...} elements.

    Base64 is used for every string element because it carries any bytes losslessly, and TF
    Serving accepts it for any DT_STRING input whatever the alias.

    Raises:
        TypeError: For complex arrays or string elements that are not str or bytes.
    """
    array = np.asarray(array)
    if array.dtype.kind in "USO":
        flat = np.empty(array.size, dtype=object)
        flat[:] = [{"b64": base64.b64encode(as_bytes(v)).decode()} for v in array.ravel().tolist()]
        return flat.reshape(array.shape).tolist()
    if array.dtype.kind not in "biuf":
        raise TypeError(f"the REST API cannot carry {array.dtype} tensors")
    return array.tolist()


def from_json(value: Any, dtype: str | None = None) -> np.ndarray:
    """An array from a REST JSON value.

    Args:
        value: Nested lists (or a scalar) as parsed by `json.loads`.
        dtype: The tensor's DataType name ("DT_FLOAT") if known: JSON numbers say nothing of
            width. None infers it (float64 / int64 / bool, or strings).

    Returns:
        The array; strings (plain, or {"b64": ...} as TF Serving writes outputs whose alias ends
        in `_bytes`) become an object array of bytes, as `common.codec.decode` gives.
    """
    if dtype == "DT_STRING" or (dtype is None and _first_leaf_is_text(value)):
        leaves = np.array(value, dtype=object)
        flat = np.empty(leaves.size, dtype=object)
        flat[:] = [
            base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode("utf-8")
            for v in leaves.ravel().tolist()
        ]
        return flat.reshape(leaves.shape)
    numeric = None
    if dtype in DataType.keys() and dtype not in ("DT_BFLOAT16",):  # noqa: SIM118
        try:
            numeric = numpy_dtype(DataType.Value(dtype))
        except ValueError:
            numeric = None
    return np.asarray(value, dtype=numeric)


def _first_leaf_is_text(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, (str, dict))
