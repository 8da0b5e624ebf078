"""NumPy arrays to and from the JSON values of TF Serving's REST API (the client's side)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
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


def predict_body(signature: str, inputs: Mapping[str, ArrayLike]) -> bytes:
    """The JSON body of a REST :predict call in the columnar ("inputs") format.

    Numeric arrays are written by orjson straight from NumPy (float32 in its shortest
    round-trip form, which TF Serving's double parser reads back to the same float32). NaN and
    infinities, which JSON lacks and orjson would write as null, are written as TF Serving's
    NaN and Infinity tokens by the standard library instead.

    Raises:
        TypeError: as `to_json`.
    """
    columns: dict[str, Any] = {}
    finite = True
    for alias, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "biuf" and array.dtype.itemsize <= 8:
            finite = finite and (array.dtype.kind != "f" or bool(np.isfinite(array).all()))
            # orjson writes a 0-d array as a list of one; a scalar is written bare.
            columns[alias] = np.ascontiguousarray(array) if array.ndim else array.item()
        else:
            columns[alias] = to_json(array)
    body = {"signature_name": signature, "inputs": columns}
    if finite:
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    lists = {a: v.tolist() if isinstance(v, np.ndarray) else v for a, v in columns.items()}
    return json.dumps({"signature_name": signature, "inputs": lists}).encode()


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
