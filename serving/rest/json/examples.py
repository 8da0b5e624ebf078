"""Classify/Regress REST bodies (`examples`, `context`) to `tensorflow.serving.Input` protos."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

from serving.errors import invalid_argument
from serving.rest.json.tensor import format_error, parse_object, signature_name
from serving.rest.json.text import json_type, printable
from serving.rest.json.values import decode_b64, is_b64

_KIND_NAMES = {
    "bytes_list": "bytes",
    "float_list": "float",
    "int64_list": "int64",
    None: "UNKNOWN",
}


def parse_examples_request(body: bytes) -> tuple[str, input_pb2.Input]:
    """`FillClassifyRegressRequestFromJson`: the signature name and the Example input.

    TF Serving's missing-`examples` message says "classify" for regress requests too.

    Args:
        body: The HTTP request body.

    Returns:
        (signature name, Input holding an `example_list` or an `example_list_with_context`).

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's message for a malformed body.
    """
    doc = parse_object(body)
    name = signature_name(doc)
    request_input = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        context = request_input.example_list_with_context.context
        _fill_example(doc["context"], context)
    if "examples" not in doc:
        raise format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(doc, "'examples' value is an empty array")
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for value in examples:
        _fill_example(value, target.add())
    return name, request_input


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    """`MakeExampleFromJsonObject`: each key is a feature; a scalar is a one-element list."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            # Feature names are protobuf map keys, which must be UTF-8 text.
            raise invalid_argument(
                f"Feature name is not valid UTF-8: '{printable(name)}'"
            ) from None
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _add_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    """`AddValueToFeature`: the JSON type picks the list kind; all values must agree."""
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64(value)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
        )
    if isinstance(value, bool):
        _require_kind(feature, "int64_list", name).value.append(int(value))
    elif isinstance(value, dict):
        _require_kind(feature, "bytes_list", name).value.append(decode_b64(value))
    elif isinstance(value, str):
        text = value.encode("utf-8", "surrogateescape")
        _require_kind(feature, "bytes_list", name).value.append(text)
    elif isinstance(value, float) or not -(2**63) <= value < 2**64:
        # rapidjson stores decimals, and integers beyond 64 bits, as doubles.
        float_list = _require_kind(feature, "float_list", name)
        try:
            number = float(value)
        except OverflowError:
            number = math.copysign(math.inf, value)
        with np.errstate(over="ignore"):
            float_list.value.append(float(np.float32(number)))
    elif value >= 2**63:
        raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
    else:
        _require_kind(feature, "int64_list", name).value.append(value)


def _require_kind(feature: feature_pb2.Feature, kind: str, name: str):
    """`IsFeatureOfKind`: an empty feature takes any kind; otherwise the kinds must match."""
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}"
        )
    return getattr(feature, kind)
