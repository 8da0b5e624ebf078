"""The REST response writer as it was before `serving.rest.json.floats`: the tests' oracle.

These are the per-element implementations, copied unchanged (but for imports) from
`serving/rest/json/text.py` and `response.py` at the commit before the vectorised writer, so
that `test_json_writer.py` and `benchmarks/json_bench.py` can compare the new code with them
byte for byte. Not used by the server.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping

import numpy as np

from serving.errors import invalid_argument
from serving.rest.json.tensor import ROW
from serving.rest.json.text import INDENT, quote
from serving.tensors import data_type, dtype_name


def decimal_tokens(values: np.ndarray) -> list[str]:
    """`WriteDecimal` for every element of a float32 or float64 array.

    TF Serving prints `%.6g` (absl::StrCat) when that parses back to the same value, else
    `%.9g` for float and `%.17g` for double; whole numbers get `.0`; non-finite values are
    `NaN`, `Infinity` and `-Infinity`. Formatting dominates the cost, so each element is
    formatted once, except the few that a cheap numeric test says might be short.
    """
    flat = np.asarray(values).ravel()
    floats = flat.tolist()
    finite = np.isfinite(flat)
    long_format = "%.9g" if flat.dtype == np.float32 else "%.17g"
    candidates = np.flatnonzero(finite & _maybe_six_digits(flat)).tolist()
    short_at: dict[int, str] = {}
    if candidates:
        short = [format(floats[i], ".6g") for i in candidates]
        same = np.array(short, dtype=np.float64).astype(flat.dtype) == flat[candidates]
        short_at = {i: t for i, t, ok in zip(candidates, short, same.tolist(), strict=True) if ok}
    if short_at:
        tokens = [short_at.get(i) or long_format % v for i, v in enumerate(floats)]
    else:
        tokens = list(map(long_format.__mod__, floats))
    tokens = [t if ("." in t or "e" in t) else t + ".0" for t in tokens]
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            v = floats[i]
            tokens[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
    return tokens


def _maybe_six_digits(flat: np.ndarray) -> np.ndarray:
    """False only where `%.6g` certainly does not round-trip (a conservative pre-filter).

    The value rounded to six significant digits is rebuilt in float64; if it lies further from
    the value than half a unit in the last place (plus generous slack for float64 error), it
    cannot parse back to the value. Ties and exponent edge cases are left to the exact check.
    """
    with np.errstate(all="ignore"):
        x = np.abs(flat.astype(np.float64))
        scale = 10.0 ** (5 - np.floor(np.log10(x)))
        scaled = x * scale
        mantissa = np.rint(scaled)
        near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
        odd_range = ~((scaled >= 99999.5) & (scaled < 999999.5))
        tolerance = 0.5 * np.abs(np.spacing(flat)).astype(np.float64) * (1 + 1e-6)
        tolerance += 16 * np.spacing(x)
        close = np.abs(mantissa / scale - x) <= tolerance
    return close | near_tie | odd_range


def render_array(tokens: list[str], shape: tuple[int, ...], depth: int, single_line: bool) -> str:
    """Nested JSON arrays of pre-rendered tokens, laid out like rapidjson's PrettyWriter.

    Args:
        tokens: One rendered element per tensor element, in C order.
        shape: The tensor shape; `()` writes the single token bare.
        depth: How many containers are open where the value starts (sets the indentation).
        single_line: `kFormatSingleLineArray` (`[1, 2]`) instead of one element per line.
    """
    items = tokens
    for axis in reversed(range(len(shape))):
        size = shape[axis]
        count = math.prod(shape[:axis])
        if size == 0:
            items = ["[]"] * count
            continue
        if single_line:
            head, sep, tail = "[", ", ", "]"
        else:
            inner = "\n" + INDENT * (depth + axis + 1)
            head, sep, tail = "[" + inner, "," + inner, "\n" + INDENT * (depth + axis) + "]"
        items = [head + sep.join(items[i * size : (i + 1) * size]) + tail for i in range(count)]
    return items[0]


def predict_response_json(outputs: Mapping[str, np.ndarray], request_format: str) -> str:
    """`MakeJsonFromTensors`: `{"predictions": ...}` for row requests, `{"outputs": ...}` else.

    The text is laid out byte for byte like TF Serving's rapidjson PrettyWriter.

    Args:
        outputs: Output alias -> array (as decoded from the PredictResponse).
        request_format: `ROW` or `COLUMNAR`, as returned by `parse_predict_request`.

    Raises:
        ServingError: INVALID_ARGUMENT for row outputs without a common batch dimension and for
            dtypes JSON cannot carry (`Failed to write JSON value for tensor type: half`).
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if request_format == ROW:
        return _row_json(arrays)
    if len(names) == 1:
        array = arrays[names[0]]
        tokens = _tokens(names[0], array, 1 + array.ndim)
        return '{\n    "outputs": ' + render_array(tokens, array.shape, 1, False) + "\n}"
    members = []
    for name, array in arrays.items():
        tokens = _tokens(name, array, 2 + array.ndim)
        text = render_array(tokens, array.shape, 2, False)
        members.append("\n" + INDENT * 2 + quote(name) + ": " + text)
    return '{\n    "outputs": {' + ",".join(members) + "\n" + INDENT + "}\n}"


def _row_json(arrays: dict[str, np.ndarray]) -> str:
    batch = -1
    for name, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    depth = 2 if len(arrays) == 1 else 3
    rows = {}
    for name, array in arrays.items():
        tokens = _tokens(name, array, depth + array.ndim - 1)
        step = math.prod(array.shape[1:])
        rows[name] = [
            render_array(tokens[i * step : (i + 1) * step], array.shape[1:], depth, True)
            for i in range(batch)
        ]
    if batch == 0:
        body = "[]"
    elif len(arrays) == 1:
        body = "[" + ", ".join(next(iter(rows.values()))) + "\n" + INDENT + "]"
    else:
        items = []
        for i in range(batch):
            members = [f"\n{INDENT * 3}{quote(name)}: {rows[name][i]}" for name in rows]
            items.append(f"\n{INDENT * 2}{{" + ",".join(members) + f"\n{INDENT * 2}}}")
        body = "[" + ",".join(items) + "\n" + INDENT + "]"
    return '{\n    "predictions": ' + body + "\n}"


def _tokens(name: str, array: np.ndarray, depth: int) -> list[str]:
    """Rendered elements; `depth` is the nesting level of an element (for b64 objects)."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize >= 4:
        return decimal_tokens(array)
    if kind in "iu" and array.dtype != np.uint16:
        return list(map(str, array.ravel().tolist()))
    if kind == "b":
        return ["true" if v else "false" for v in array.ravel().tolist()]
    if kind == "O":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
        if name.endswith("_bytes"):
            inner, outer = "\n" + INDENT * (depth + 1), "\n" + INDENT * depth
            return [
                "{" + inner + '"b64": ' + quote(base64.b64encode(v).decode()) + outer + "}"
                for v in values
            ]
        return [quote(v.decode("utf-8", "surrogateescape")) for v in values]
    if array.size == 0:
        return []
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {dtype_name(data_type(array.dtype))}"
    )
