"""REST response bodies: TF Serving's rapidjson PrettyWriter layout byte for byte, or compact."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import numpy as np
from tensorflow_serving.apis import classification_pb2, regression_pb2

from serving.errors import invalid_argument
from serving.rest.json import compact
from serving.rest.json.floats import decimal_bytes
from serving.rest.json.tensor import ROW
from serving.rest.json.text import INDENT, decimal_tokens, quote, render_array, render_rows
from serving.tensors import data_type, dtype_name

# --rest_api_json_layout: how :predict answers are written. Both give the same JSON values.
COMPACT, TF_SERVING = "compact", "tf_serving"
LAYOUTS = (COMPACT, TF_SERVING)


def predict_response(
    outputs: Mapping[str, np.ndarray], request_format: str, layout: str = COMPACT
) -> bytes:
    """The :predict answer body in `layout`, with the same errors in either layout.

    Args:
        outputs: Output alias -> array (as decoded from the PredictResponse).
        request_format: `ROW` or `COLUMNAR`, as returned by `parse_predict_request`.
        layout: `COMPACT` (no whitespace, shortest round-trip digits, see
            `serving.rest.json.compact`) or `TF_SERVING` (`predict_response_json`).

    Raises:
        ServingError: As `predict_response_json`.
        ValueError: For a layout that is neither.
    """
    if layout == TF_SERVING:
        return predict_response_json(outputs, request_format).encode("utf-8", "surrogateescape")
    if layout != COMPACT:
        raise ValueError(f"unknown JSON layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    arrays = _sorted_arrays(outputs)
    if request_format == ROW:
        batch = _batch_size(arrays)
        for array in arrays.values():
            _check_writable(array)
        return compact.predict_rows(arrays, batch)
    for array in arrays.values():
        _check_writable(array)
    return compact.predict_columns(arrays)


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
    arrays = _sorted_arrays(outputs)
    names = list(arrays)
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


def _sorted_arrays(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    return {name: np.asarray(outputs[name]) for name in sorted(outputs)}


def _batch_size(arrays: dict[str, np.ndarray]) -> int:
    """The common dimension 0 of row outputs; each must have one."""
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
    return batch


def _check_writable(array: np.ndarray) -> None:
    """Refuses, like `_tokens`, a non-empty tensor of a dtype JSON cannot carry."""
    kind = array.dtype.kind
    if (kind == "f" and array.dtype.itemsize >= 4) or kind in "bO" or array.size == 0:
        return
    if kind in "iu" and array.dtype != np.uint16:
        return
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {dtype_name(data_type(array.dtype))}"
    )


def _row_json(arrays: dict[str, np.ndarray]) -> str:
    batch = _batch_size(arrays)
    depth = 2 if len(arrays) == 1 else 3
    if batch == 0:
        body = "[]"
    elif len(arrays) == 1:
        # The rows joined by ", " are the whole tensor on one line, but for the last bracket.
        name, array = next(iter(arrays.items()))
        text = render_array(_tokens(name, array, depth + array.ndim - 1), array.shape, 1, True)
        body = text[:-1] + "\n" + INDENT + "]"
    else:
        rows = {
            name: render_rows(_tokens(name, array, depth + array.ndim - 1), array.shape, depth)
            for name, array in arrays.items()
        }
        items = []
        for i in range(batch):
            members = [f"\n{INDENT * 3}{quote(name)}: {rows[name][i]}" for name in rows]
            items.append(f"\n{INDENT * 2}{{" + ",".join(members) + f"\n{INDENT * 2}}}")
        body = "[" + ",".join(items) + "\n" + INDENT + "]"
    return '{\n    "predictions": ' + body + "\n}"


def _tokens(name: str, array: np.ndarray, depth: int) -> list[str] | np.ndarray:
    """Rendered elements (floats as an `S` array); `depth` is the nesting level of an element."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize >= 4:
        return decimal_bytes(array)
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


def classification_json(result: classification_pb2.ClassificationResult) -> str:
    """`MakeJsonFromClassificationResult`: `{"results": [[[label, score], ...], ...]}`."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        scores = np.array([c.score for c in classifications.classes], dtype=np.float32)
        pairs = zip(classifications.classes, decimal_tokens(scores), strict=True)
        rows.append("[" + ", ".join(f"[{quote(c.label)}, {s}]" for c, s in pairs) + "]")
    return '{\n    "results": [' + ", ".join(rows) + "\n" + INDENT + "]\n}"


def regression_json(result: regression_pb2.RegressionResult) -> str:
    """`MakeJsonFromRegressionResult`: `{"results": [value, ...]}` on one line."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return '{\n    "results": [' + ", ".join(decimal_tokens(values)) + "]\n}"


def error_json(message: str) -> str:
    """`MakeJsonFromStatus`: the status message (no code prefix, not truncated)."""
    return '{\n    "error": ' + quote(message) + "\n}"
