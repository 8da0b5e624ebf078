"""Compact :predict answers: the same JSON values as TF Serving's, without its spaces and digits.

TF Serving's PrettyWriter layout with `%.6g`/`%.9g` digits (`serving.rest.json.response`) costs
more than writing the numbers themselves; here a numeric tensor is written by orjson in one
call: no whitespace, the shortest digits that parse back to the same float32 (or float64), and
integers and booleans as they are. Parsed, both layouts give the same values; only the bytes
differ. NaN and the infinities are written as TF Serving writes them (`NaN`, `Infinity`,
`-Infinity`); strings keep this server's quoting (non-UTF-8 bytes pass through as they are).
"""

from __future__ import annotations

import base64
import math

import numpy as np
import orjson

from serving.rest.json.text import quote

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def predict_rows(arrays: dict[str, np.ndarray], batch: int) -> bytes:
    """`{"predictions": [...]}`: one tensor as its list of rows, several as one object per row.

    Args:
        arrays: Output alias -> array, in key order, each with `batch` rows (already checked).
        batch: The common size of dimension 0.
    """
    if len(arrays) == 1:
        name, array = next(iter(arrays.items()))
        return b'{"predictions":' + tensor_json(name, array) + b"}"
    rows = {_key(name): _rows(name, array, batch) for name, array in arrays.items()}
    items = [
        b"{" + b",".join(key + values[i] for key, values in rows.items()) + b"}"
        for i in range(batch)
    ]
    return b'{"predictions":[' + b",".join(items) + b"]}"


def predict_columns(arrays: dict[str, np.ndarray]) -> bytes:
    """`{"outputs": ...}`: one tensor as is, several as an object keyed by alias."""
    if len(arrays) == 1:
        name, array = next(iter(arrays.items()))
        return b'{"outputs":' + tensor_json(name, array) + b"}"
    members = [_key(name) + tensor_json(name, array) for name, array in arrays.items()]
    return b'{"outputs":{' + b",".join(members) + b"}}"


def tensor_json(name: str, array: np.ndarray) -> bytes:
    """One tensor as nested JSON lists (a bare value for a scalar).

    The caller has refused the dtypes JSON cannot carry (half, uint16, complex, ...).
    """
    if array.dtype.kind == "O":
        return _nest(_string_tokens(name, array), array.shape)
    if array.size == 0:
        return _nest([], array.shape)  # of any dtype, even those refused when not empty
    if array.ndim == 0:
        return _scalar(array)
    # orjson takes C-contiguous arrays in native byte order only.
    array = np.ascontiguousarray(array, array.dtype.newbyteorder("="))
    text = orjson.dumps(array, option=_NUMPY)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        text = _non_finite(text, array)
    return text


def _key(name: str) -> bytes:
    return (quote(name) + ":").encode("utf-8", "surrogateescape")


def _rows(name: str, array: np.ndarray, batch: int) -> list[bytes]:
    """The JSON of `array[i]` for each row i."""
    if array.ndim > 1 or array.dtype.kind == "O":
        # `array[i, ...]` stays an array, 0-d for a vector's element.
        return [tensor_json(name, array[i, ...]) for i in range(batch)]
    # A vector's rows are its elements: one call writes them all, and commas split them (no
    # number token holds a comma).
    text = tensor_json(name, array)
    return text[1:-1].split(b",") if batch else []


def _scalar(array: np.ndarray) -> bytes:
    value = array.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return _non_finite_token(value)
        if array.dtype.itemsize == 4:
            return orjson.dumps(array.reshape(1), option=_NUMPY)[1:-1]
    return orjson.dumps(value)


def _non_finite_token(value: float) -> bytes:
    if value != value:
        return b"NaN"
    return b"Infinity" if value > 0 else b"-Infinity"


def _non_finite(text: bytes, array: np.ndarray) -> bytes:
    """orjson writes NaN and the infinities as `null`: each becomes TF Serving's token.

    A float tensor's JSON has no other `null`, and its nulls come in C order, as the elements.
    """
    parts = text.split(b"null")
    tokens = [_non_finite_token(v) for v in array[~np.isfinite(array)].tolist()]
    out = [parts[0]]
    for token, part in zip(tokens, parts[1:], strict=True):
        out += (token, part)
    return b"".join(out)


def _string_tokens(name: str, array: np.ndarray) -> list[bytes]:
    values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
    if name.endswith("_bytes"):
        return [b'{"b64":"' + base64.b64encode(v) + b'"}' for v in values]
    # Bytes that are not UTF-8 go out as they are, as TF Serving writes them.
    return [
        quote(v.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        for v in values
    ]


def _nest(tokens: list[bytes], shape: tuple[int, ...]) -> bytes:
    """Element tokens (C order) nested as lists of `shape`."""
    if not shape:
        return tokens[0]
    if 0 in shape:
        # Nothing below the first empty dimension: that many `[]`, nested by the dimensions above.
        outer = shape[: shape.index(0)]
        items = [b"[]"] * math.prod(outer)
    else:
        outer, items = shape, tokens
    for size in reversed(outer):
        items = [b"[" + b",".join(items[i : i + size]) + b"]" for i in range(0, len(items), size)]
    return items[0]
