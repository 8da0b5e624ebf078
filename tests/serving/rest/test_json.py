"""REST JSON <-> tensors: TF Serving's parse rules, error texts and exact output layout."""

import base64
import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from serving.errors import ServingError
from serving.rest.json.examples import parse_examples_request
from serving.rest.json.response import (
    classification_json,
    error_json,
    predict_response_json,
    regression_json,
)
from serving.rest.json.tensor import COLUMNAR, ROW, has_boolean_literal, parse_predict_request
from serving.rest.json.text import debug_string, decimal_tokens, loads, rapidjson_double
from serving.rest.json.values import to_array

F, D, I32, I64, S = (
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_STRING,
)


def parse(body, **dtypes):
    """Parses with a signature whose inputs have the given dtypes; records the name asked for."""
    asked = []

    def inputs(name):
        asked.append(name)
        return {alias: meta_graph_pb2.TensorInfo(dtype=dt) for alias, dt in dtypes.items()}

    name, request_format, arrays = parse_predict_request(body.encode(), inputs)
    assert asked == [name]
    return request_format, arrays


def error(body, code=grpc.StatusCode.INVALID_ARGUMENT, **dtypes):
    with pytest.raises(ServingError) as caught:
        parse(body, **dtypes)
    assert caught.value.code == code
    return caught.value.message


# -- floats: `WriteDecimal` --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "text"),
    [
        (2.0, np.float32, "2.0"),
        (0.1, np.float32, "0.1"),
        (1 / 3, np.float32, "0.333333343"),
        (1e-7, np.float32, "1e-07"),
        (1e20, np.float32, "1e+20"),
        (9000000, np.float32, "9e+06"),
        (123456789, np.float32, "123456792.0"),
        (-0.0, np.float32, "-0.0"),
        (np.nan, np.float32, "NaN"),
        (np.inf, np.float32, "Infinity"),
        (-np.inf, np.float64, "-Infinity"),
        (0.1, np.float64, "0.1"),
        (1 / 3, np.float64, "0.33333333333333331"),
        (2.5, np.float64, "2.5"),
        (1e300, np.float64, "1e+300"),
    ],
)
def test_decimal_formatting(value, dtype, text):
    assert decimal_tokens(np.array([value], dtype=dtype)) == [text]


def test_decimal_formatting_round_trips_every_value():
    values = np.random.default_rng(0).normal(0, 1e4, 5000).astype(np.float32)
    values[::7] = np.round(values[::7], 2)  # some short decimals too
    tokens = decimal_tokens(values)
    np.testing.assert_array_equal(np.array(tokens, dtype=np.float64).astype(np.float32), values)
    assert all(len(t.replace("-", "").replace(".", "").split("e")[0]) <= 10 for t in tokens)


def test_rapidjson_writer_numbers_in_debug_strings():
    cases = {1.0: "1.0", 1e-7: "1e-7", 1e20: "100000000000000000000.0", 1e21: "1e21"}
    cases.update({123.456: "123.456", -2.5e-10: "-2.5e-10", 0.000001: "0.000001"})
    for value, text in cases.items():
        assert rapidjson_double(value) == text


def test_debug_string_layout_and_limit():
    assert debug_string({"a": [1, 2.5, "x\n"], "b": {}}) == (
        '{\n    "a": [1, 2.5, "x\\n"],\n    "b": {}\n}'
    )
    long = debug_string(list(range(1000)))
    assert long.startswith("[0, 1, 2") and 256 <= len(long) < 270 and not long.endswith("]")
    assert debug_string([1, float("nan"), 2]) == "[1"  # rapidjson's Writer refuses NaN


# -- requests: row format ---------------------------------------------------------------------


def test_row_single_input_batches_instances():
    request_format, arrays = parse('{"instances": [1.0, 2, 5]}', x=F)
    assert request_format == ROW
    assert arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [1.0, 2.0, 5.0]
    _, arrays = parse('{"instances": [[1, 2], [3, 4]], "signature_name": "s"}', x=I32)
    assert arrays["x"].dtype == np.int32 and arrays["x"].shape == (2, 2)


def test_row_named_inputs():
    body = '{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": {"b64": "eQ=="}}]}'
    _, arrays = parse(body, a=I64, b=S)
    assert arrays["a"].tolist() == [1, 2] and arrays["b"].tolist() == [b"x", b"y"]


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        ('{"instances": [[1.0], [2, 3]]}', {"x": F},
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting tensor size: 1 but got: 2"),
        ('{"instances": [[1, 2], [[3], [4]]]}', {"x": F},
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting shape [2] but got: [2,1]"),
        ('{"instances": ["a"]}', {"x": F},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         'JSON Value: "a" Type: String is not of expected type: float'),
        ('{"instances": [1.5]}', {"x": I32},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        ('{"instances": [1]}', {"x": types_pb2.DT_HALF},
         "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
         "Conversion of JSON Value: 1 to type: half"),
        ('{"instances": [1]}', {"a": F, "b": F},
         "instances is a plain list, but expecting list of objects as multiple input tensors "
         "required as per tensorinfo_map"),
        ('{"instances": [{"a": 1}]}', {"a": F, "b": F},
         "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} "
         "keys must be equal to: a,b"),
        ('{"instances": [{"a": 1, "c": 1}]}', {"a": F},
         "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON object: does not have named input: c"),
        ('{"instances": [{"a": 1}, [1]]}', {"a": F},
         "Expecting object but got list at item 1 of input list"),
        ('{"instances": [1, {"a": 1}]}', {"a": F},
         "Expecting value/list but got object at item 1 of input list"),
        ('{"instances": [{"b64": "!"}]}', {"s": S},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Unable to base64 decode"),
        ('{"instances": 5}', {"x": F},
         "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an list/array"),
        ('{"instances": []}', {"x": F},
         "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
    ],
)  # fmt: skip
def test_row_errors(body, dtypes, message):
    assert error(body, **dtypes) == message


# -- requests: columnar format and shared rules -----------------------------------------------


def test_columnar_inputs_keep_their_own_shapes():
    request_format, arrays = parse('{"inputs": {"a": [[1, 2]], "b": 3.5, "c": "z"}}', a=D, b=F, c=S)
    assert request_format == COLUMNAR
    assert arrays["a"].shape == (1, 2) and arrays["a"].dtype == np.float64
    assert arrays["b"].shape == () and arrays["c"].tolist() == b"z"
    _, arrays = parse('{"inputs": {"b64": "aGk="}, "extra": 1}', s=S)
    assert arrays["s"].tolist() == b"hi"
    _, arrays = parse('{"inputs": [NaN, Infinity, -Infinity]}', x=F)
    assert np.isnan(arrays["x"][0]) and arrays["x"][1:].tolist() == [np.inf, -np.inf]


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        ('{"inputs": {"a": 1}}', {"a": F, "b": F}, "Missing named input: b in 'inputs' object."),
        ('{"inputs": [1]}', {"a": F, "b": F},
         "inputs is a plain value/list, but expecting an object as multiple input tensors "
         "required as per tensorinfo_map"),
        ('{"inputs": [[1, 2], [3]]}', {"x": F},
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ('{"inputs": [1, [2]]}', {"x": F},
         "Encountered list at unexpected level: 1 expected < 1"),
        ('{"inputs": [[1, 2], 3]}', {"x": F},
         "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ('{"inputs": [true]}', {"x": F},
         "JSON Value: true Type: True is not of expected type: float"),
        ('{"inputs": null}', {"x": F},
         "JSON Value: null Type: Null is not of expected type: float"),
        ('{"inputs": [{"a": 1}]}', {"x": F},
         'JSON Value: {\n    "a": 1\n} Type: Object is not of expected type: float'),
        ('{"inputs": [{"b64": 1}]}', {"s": S},
         'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'),
        ('{"inputs": [2147483648]}', {"x": I32},
         "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        ('{"inputs": [-1]}', {"x": types_pb2.DT_UINT32},
         "JSON Value: -1 Type: Number is not of expected type: uint32"),
        ('{"inputs": [1]}', {"x": S},
         "JSON Value: 1 Type: Number is not of expected type: string"),
        ("", {"x": F}, "JSON Parse error: The document is empty"),
        ("  ", {"x": F}, "JSON Parse error: The document is empty. at offset: 2"),
        ("{", {"x": F}, "JSON Parse error: Missing a name for object member. at offset: 1"),
        ('{"a": 1,}', {"x": F}, "JSON Parse error: Missing a name for object member. at offset: 8"),
        ('{"a" 1}', {"x": F},
         "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
        ('{"a": 1 "b": 2}', {"x": F},
         "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
        ('{"a": [1 2]}', {"x": F},
         "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9"),
        ('{"a": 1} x', {"x": F},
         "JSON Parse error: The document root must not be followed by other values. at offset: 9"),
        ('{"a": tru}', {"x": F}, "JSON Parse error: Invalid value. at offset: 6"),
        ("[1]", {"x": F}, "JSON Value: [1] Is not object"),
        ('{"signature_name": 1, "inputs": [1]}', {"x": F},
         'JSON Value: {\n    "signature_name": 1,\n    "inputs": [1]\n} not formatted correctly. '
         "'signature_name' key must be a string value."),
        ('{"inputs": [1], "instances": [1]}', {"x": F},
         'JSON Value: {\n    "inputs": [1],\n    "instances": [1]\n} Not formatted correctly '
         "expecting only one of 'inputs' or 'instances' keys to exist "),
        ('{"input": [1]}', {"x": F}, "Missing 'inputs' or 'instances' key"),
    ],
)  # fmt: skip
def test_columnar_and_parse_errors(body, dtypes, message):
    assert error(body, **dtypes) == message


@pytest.mark.parametrize("dtype", [types_pb2.DT_HALF, types_pb2.DT_BFLOAT16, types_pb2.DT_UINT16])
def test_types_json_cannot_carry_are_unimplemented(dtype):
    name = {19: "half", 14: "bfloat16", 17: "uint16"}[dtype]
    message = error('{"inputs": [1.5]}', code=grpc.StatusCode.UNIMPLEMENTED, x=dtype)
    assert message == f"Conversion of JSON Value: 1.5 to type: {name}"


def test_integer_inputs_wrap_like_the_cpp_cast_and_floats_accept_integers():
    assert to_array([300, -1], types_pb2.DT_UINT8).tolist() == [44, 255]
    assert to_array([2**63 - 1], I64).tolist() == [2**63 - 1]
    assert to_array([2**64 - 1], types_pb2.DT_UINT64).tolist() == [2**64 - 1]
    assert to_array([[True], [False]], types_pb2.DT_BOOL).tolist() == [[True], [False]]
    assert to_array([7, 1e39], F).tolist() == [7.0, np.inf]
    assert to_array([], F).shape == (0,) and to_array([[], []], S).shape == (2, 0)


def test_fast_and_exact_paths_agree():
    rng = np.random.default_rng(0)
    images = rng.random((2, 8, 8, 3)).astype(np.float32)
    _, fast = parse(json.dumps({"instances": images.tolist()}), x=F)
    np.testing.assert_array_equal(fast["x"], images)
    # An odd element forces the element-by-element walk; the rest must parse identically.
    rows = images.tolist()
    rows[1][0][0][0] = {"b64": "AA=="}
    assert "Object is not of expected type: float" in error(json.dumps({"instances": rows}), x=F)


def test_non_utf8_bytes_survive_as_raw_strings():
    _, arrays = parse_predict_request(b'{"inputs": ["\xff\xfe"]}', lambda _: _infos(x=S))[1:]
    assert arrays["x"].tolist() == [b"\xff\xfe"]
    assert loads(b"\xef\xbb\xbf[1]") == [1]  # a UTF-8 byte-order mark is skipped


def _infos(**dtypes):
    return {alias: meta_graph_pb2.TensorInfo(dtype=dt) for alias, dt in dtypes.items()}


# -- responses ----------------------------------------------------------------------------------


def test_row_response_single_output_layout():
    text = predict_response_json({"y": np.array([3.5, 4.0, 5.5], np.float32)}, ROW)
    assert text == '{\n    "predictions": [3.5, 4.0, 5.5\n    ]\n}'
    text = predict_response_json({"y": np.array([[1, 2], [3, 4]], np.float32)}, ROW)
    assert json.loads(text) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}
    assert predict_response_json({"y": np.zeros((0, 2), np.float32)}, ROW) == (
        '{\n    "predictions": []\n}'
    )


def test_row_response_several_outputs_are_objects_per_row():
    outputs = {"b_bytes": np.array([b"hi", b"\xff"], object), "a": np.array([[1], [2]], np.int32)}
    text = predict_response_json(outputs, ROW)
    assert text.startswith('{\n    "predictions": [\n        {\n            "a": [1],\n')
    assert json.loads(text) == {
        "predictions": [
            {"a": [1], "b_bytes": {"b64": "aGk="}},
            {"a": [2], "b_bytes": {"b64": "/w=="}},
        ]
    }


def test_row_response_needs_a_common_batch_dimension():
    with pytest.raises(ServingError, match=r"^Tensor name: s has no shape information $"):
        predict_response_json({"s": np.float32(1), "y": np.ones(2, np.float32)}, ROW)
    with pytest.raises(ServingError) as caught:
        predict_response_json({"a": np.ones(2), "b": np.ones(3)}, ROW)
    assert caught.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


def test_columnar_response_layout_and_values():
    text = predict_response_json({"y": np.array([[1, 2]], np.float32)}, COLUMNAR)
    assert text == (
        '{\n    "outputs": [\n        [\n            1.0,\n            2.0\n        ]\n    ]\n}'
    )
    outputs = {
        "box": np.array([[0.1, 0.25]], np.float32),
        "label": np.array([b"caf\xc3\xa9"], object),
        "ok": np.array(True),
        "n": np.array([2**40], np.int64),
        "nan": np.array([np.nan, -np.inf]),
    }
    text = predict_response_json(outputs, COLUMNAR)
    assert '"nan": [\n            NaN,\n            -Infinity\n        ]' in text
    parsed = json.loads(text)["outputs"]
    assert np.isnan(parsed.pop("nan")[0])
    assert parsed == {"box": [[0.1, 0.25]], "label": ["café"], "n": [2**40], "ok": True}


def test_output_types_json_cannot_carry():
    with pytest.raises(ServingError, match="Failed to write JSON value for tensor type: half"):
        predict_response_json({"h": np.ones(1, np.float16)}, COLUMNAR)
    with pytest.raises(ServingError, match="Cannot convert empty tensor map to JSON"):
        predict_response_json({}, COLUMNAR)


def test_large_response_round_trips():
    mask = np.random.default_rng(1).random((1, 64, 64, 1), dtype=np.float32)
    parsed = json.loads(predict_response_json({"mask": mask}, ROW))["predictions"]
    np.testing.assert_array_equal(np.array(parsed, dtype=np.float32), mask)


# -- classify / regress ------------------------------------------------------------------------


def test_examples_request_with_context():
    body = json.dumps({
        "signature_name": "c",
        "context": {"lang": "en"},
        "examples": [{"x": [1, 2], "y": 0.5, "z": {"b64": base64.b64encode(b"\0").decode()},
                      "t": True, "e": []}],
    }).encode()  # fmt: skip
    name, request_input = parse_examples_request(body)
    assert name == "c"
    listed = request_input.example_list_with_context
    assert listed.context.features.feature["lang"].bytes_list.value == [b"en"]
    feature = listed.examples[0].features.feature
    assert feature["x"].int64_list.value == [1, 2] and feature["y"].float_list.value == [0.5]
    assert feature["z"].bytes_list.value == [b"\0"] and feature["t"].int64_list.value == [1]
    assert feature["e"].WhichOneof("kind") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"example": []}',
         "JSON Value: {\n    \"example\": []\n} When method is classify, key 'examples' is "
         "expected and was not found"),
        ('{"examples": {}}', "JSON Value: {\n    \"examples\": {}\n} Expecting 'examples' value "
         "to be an list/array"),
        ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an "
         "empty array"),
        ('{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        ('{"examples": [{"x": [1, 2.5]}]}',
         "Unexpected element type in feature: x expecting type: int64"),
        ('{"examples": [{"x": null}]}', "Feature: x has element with unexpected JSON type: Null"),
        ('{"examples": [{"x": [[1]]}]}', "Feature: x has element with unexpected JSON type: Array"),
        ('{"examples": [{"x": 18446744073709551615}]}',
         "Feature: x has uint64 element. Only int64 is supported."),
    ],
)  # fmt: skip
def test_examples_request_errors(body, message):
    with pytest.raises(ServingError) as caught:
        parse_examples_request(body.encode())
    assert caught.value.message == message


def test_classify_and_regress_results_use_the_results_key():
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="", score=12)
    assert classification_json(result) == '{\n    "results": [[["", 12.0]]\n    ]\n}'
    assert json.loads(classification_json(result)) == {"results": [[["", 12]]]}
    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=42)
    assert regression_json(regression) == '{\n    "results": [42.0]\n}'
    with pytest.raises(ServingError, match="Cannot convert empty RegressionResults to JSON"):
        regression_json(regression_pb2.RegressionResult())


def test_error_body():
    assert error_json('bad "x"\n') == '{\n    "error": "bad \\"x\\"\\n"\n}'
    assert json.loads(error_json("é")) == {"error": "é"}


# -- the bulk path for numbers agrees with the exact walk ---------------------------------------


@pytest.mark.parametrize(
    "value, dtype",
    [
        ([[1, 2.5], [3, -4e38]], F),
        ([[1, 2], [3, 4]], I32),
        ([[1, 2.5]], I32),
        ([[1, 2], [3, 4, 5], [6]], F),
        ([[1, 2, 3], [4], [5, 6]], F),
        ([1.5, "2"], F),
        ([1.5, None], F),
        ([[1.5], [[2.0]]], F),
        ([2**63 - 1, -(2**63)], I64),
        ([2**63], I64),
        ([2**64 - 1], types_pb2.DT_UINT64),
        ([-1], types_pb2.DT_UINT64),
        ([12345678901234567890123], F),
        ([2147483648], I32),
        ([[True, False]], types_pb2.DT_BOOL),
        # Where lists belong: strings or objects of the right length, numbers, null.
        ([[1.0, 2.0], "ab"], F),
        ([[1.0, 2.0], {"a": 1, "b": 2}], F),
        ([[[1.0], [2.0]], [[3.0], "x"]], F),
        ([[1.0, 2.0], 3.0], F),
        ([[1.0], None], F),
        # Lists where numbers belong, and zero dimensions with look-alikes of empty lists.
        ([[1.0, 2.0], [3.0, [4.0]]], F),
        ([[1.0, 2.0], [[3.0, 4.0], [5.0, 6.0]]], F),
        ([[], {}], F),
        ([[], ""], F),
        ([[[], []], [[], []]], F),
        ([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], I64),
        ([[[1.5, 2], [3, 4e300]], [[5, -6], [7, 8]]], F),
    ],
)
def test_numbers_in_bulk_agree_with_the_walk(value, dtype):
    """Without `true`/`false` in a document, NumPy converts numbers in bulk; same answers."""

    def convert(booleans):
        try:
            return to_array(value, dtype, booleans=booleans)
        except ServingError as caught:
            return caught.message

    bulk, walked = convert(False), convert(True)
    if isinstance(walked, str):
        assert bulk == walked
    else:
        assert bulk.dtype == walked.dtype and bulk.shape == walked.shape
        np.testing.assert_array_equal(bulk, walked)


def test_a_boolean_among_numbers_is_still_refused():
    assert error('{"instances": [1.5, true]}', x=F) == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: true Type: True is not of expected type: float"
    )
    assert error('{"inputs": [[2, false]]}', x=I32) == (
        "JSON Value: false Type: False is not of expected type: int32"
    )


def test_documents_orjson_refuses_parse_the_exact_way():
    assert loads(b'{"a": [NaN, -Infinity]}')["a"][1] == -np.inf
    assert loads('{"a": "\xff"}'.encode("latin-1"))["a"] == "\udcff"  # not UTF-8


def test_integers_beyond_64_bits_are_doubles_as_in_rapidjson():
    value = loads(b'{"a": 123456789012345678901234567890}')["a"]
    assert isinstance(value, float) and value == float(123456789012345678901234567890)
    assert error('{"inputs": [123456789012345678901234567890]}', x=I64) == (
        "JSON Value: 1.2345678901234568e29 Type: Number is not of expected type: int64"
    )


def test_boolean_literal_scan_agrees_with_bytes_search():
    """Catches a scan that misses a literal (e.g. one at the body's start, or past the
    candidate cap, where `bytes.__contains__` takes over) or reports one that is not there."""
    rng = np.random.default_rng(7)
    alphabet = np.frombuffer(b"truefalsn1.[],", np.uint8)
    bodies = [b"", b"tr", b"true", b"false", b"ue", b"al", b"[1, 2.5]", b'{"inputs": 1}']
    bodies += [b"u" * 300 + b"true", b"l" * 300, b"l" * 300 + b"false", b"u" * 300]
    bodies += [rng.choice(alphabet, int(rng.integers(0, 16))).tobytes() for _ in range(5000)]
    for body in bodies:
        assert has_boolean_literal(body) == (b"true" in body or b"false" in body), body
