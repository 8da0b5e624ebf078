"""TF Serving's REST predict request JSON (`util/json_tensor.cc`) to input arrays."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import ServingError, invalid_argument
from serving.rest.json.text import debug_string, loads
from serving.rest.json.values import check_rank, dense_shape, fast_array, is_b64, to_array

ROW, COLUMNAR = "row", "columnar"


# A body with more candidate bytes than this is searched by `bytes.__contains__` instead.
_MAX_CANDIDATES = 256


def has_boolean_literal(body: bytes) -> bool:
    """Whether `true` or `false` occurs anywhere in `body` (as `b"true" in body or ...`).

    `bytes.__contains__` skips poorly over number text (the digits 2, 4 and 5 share its skip
    filter's bits with `true`), about 1.3 ms for a 1 MB body. Every `true` has a `u` and every
    `false` an `l`, letters number text never holds; `bytes.find` of one byte is a `memchr`
    (about 0.02 ms for 1 MB, against 0.16 ms for a NumPy comparison of the whole body), so
    each is found that way and only those places are compared.
    """
    for letter, literal in ((b"u", b"true"), (b"l", b"false")):
        # In both literals the letter is the third byte.
        at, seen = body.find(letter, 2), 0
        while at >= 0:
            if body.startswith(literal, at - 2):
                return True
            seen += 1
            if seen > _MAX_CANDIDATES:
                if literal in body:
                    return True
                break
            at = body.find(letter, at + 1)
    return False


def parse_object(body: bytes) -> dict:
    """`ParseJson`: the body must be a JSON object."""
    doc = loads(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    """`FillSignature`: the optional `signature_name` key, which must be a string."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def format_error(doc: Any, *parts: str) -> ServingError:
    """TF Serving's `FormatError`: the offending JSON, then the complaint."""
    return invalid_argument(f"JSON Value: {debug_string(doc)} " + "".join(parts))


def parse_predict_request(
    body: bytes,
    signature_inputs: Callable[[str], Mapping[str, meta_graph_pb2.TensorInfo]],
) -> tuple[str, str, dict[str, np.ndarray]]:
    """`FillPredictRequestFromJson`: a :predict body to input arrays.

    Args:
        body: The HTTP request body.
        signature_inputs: Called with the request's signature name ("" when absent) once the
            JSON is known to be well formed; returns that signature's inputs or raises.

    Returns:
        (signature name, `ROW` or `COLUMNAR`, alias -> array of the signature's dtype; strings
        are object arrays of `bytes`).

    Raises:
        ServingError: With TF Serving's message for any malformed body.
    """
    doc = parse_object(body)
    # Without a `true`/`false` literal anywhere, numbers convert in bulk (see `fast_array`).
    booleans = has_boolean_literal(body)
    name = signature_name(doc)
    infos = signature_inputs(name)
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    # C++ walks a protobuf Map in no promised order; sorted keeps our errors deterministic.
    dtypes = {alias: infos[alias].dtype for alias in sorted(infos)}
    if "instances" in doc:
        if "inputs" in doc:
            raise format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys ",
                "to exist ",
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(doc, "No values in 'instances' array")
        return name, ROW, _from_instances(instances, dtypes, booleans)
    if "inputs" in doc:
        return name, COLUMNAR, _from_inputs(doc["inputs"], dtypes, booleans)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _from_inputs(value: Any, dtypes: dict[str, int], booleans: bool) -> dict[str, np.ndarray]:
    """`FillTensorMapFromInputsMap` (columnar): one tensor per input, any shapes."""
    if not isinstance(value, dict) or is_b64(value):
        if len(dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        alias, dtype = next(iter(dtypes.items()))
        return {alias: to_array(value, dtype, booleans)}
    arrays = {}
    for alias, dtype in dtypes.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        arrays[alias] = to_array(value[alias], dtype, booleans)
    return arrays


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _from_instances(
    instances: list, dtypes: dict[str, int], booleans: bool
) -> dict[str, np.ndarray]:
    """`FillTensorMapFromInstancesList` (row): every instance adds one batch row per input."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    rows: dict[str, list[np.ndarray]] = {}
    if not _is_element_object(instances[0]):
        alias, dtype = next(iter(dtypes.items()))
        shape = dense_shape(instances)
        check_rank(len(shape), "'instances'", batch=True)
        # Fast path: equal-shaped instances convert as one tensor; any problem falls back to
        # the element-by-element walk below, which produces TF Serving's exact error.
        batch = fast_array(instances, shape, dtype, booleans)
        if batch is not None and batch.ndim >= 1:
            return {alias: batch}
        for index, element in enumerate(instances):
            if _is_element_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            _add_row(element, alias, dtypes, rows, f"{index}")
    else:
        names = sorted(dtypes)
        for index, element in enumerate(instances):
            if not _is_element_object(element):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for alias, item in element.items():
                _add_row(item, alias, dtypes, rows, f"{index} key: {alias}")
            if set(element) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(names)}"
                )
    return {alias: np.stack(arrays) for alias, arrays in rows.items()}


def _add_row(item: Any, alias: str, dtypes: dict, rows: dict, where: str) -> None:
    """`AddInstanceItem`, with its error wrapped the way the instances loop wraps it."""
    try:
        if alias not in dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {alias}")
        array = to_array(item, dtypes[alias])
        # Stacking the rows adds the batch dimension.
        check_rank(array.ndim + 1, "'instances'", batch=True)
        if rows.get(alias):
            first = rows[alias][0]
            if first.size != array.size:
                raise invalid_argument(f"Expecting tensor size: {first.size} but got: {array.size}")
            if first.shape != array.shape:
                raise invalid_argument(
                    f"Expecting shape {_shape_text(first.shape)} but got: "
                    f"{_shape_text(array.shape)}"
                )
        rows.setdefault(alias, []).append(array)
    except ServingError as error:
        raise invalid_argument(
            f"Failed to process element: {where} of 'instances' list. Error: {error.to_string()}"
        ) from None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"
