"""The compact :predict layout against TF Serving's: the same JSON values, in fewer bytes.

Each answer is parsed back into arrays of the outputs' dtypes and compared bit for bit with the
tensors written (and so with the other layout's answer); the errors must be the same texts.
"""

import base64
import json

import numpy as np
import pytest

from serving.errors import ServingError
from serving.rest.json.response import COMPACT, TF_SERVING, predict_response
from serving.rest.json.tensor import COLUMNAR, ROW

_CONSTANTS = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
SPECIAL32 = np.array(
    [0.0, -0.0, np.nan, np.inf, -np.inf, 0.1, 1 / 3, 1.0, 2.0, 1e-5, 1e-7, 1e-38, 1.4e-45, 1e16,
     1e38, 3.4028235e38, 123456789.0, 16777217.0, 0.99999994, 65504.0],
    np.float32,
)  # fmt: skip


def _parse(body: bytes):
    return json.loads(body.decode("utf-8", "surrogateescape"), parse_constant=_CONSTANTS.get)


def _as_array(value, like: np.ndarray, name: str) -> np.ndarray:
    """A parsed JSON value back as an array of `like`'s dtype and shape."""
    if like.dtype.kind == "O":
        flat = np.array(value, dtype=object).reshape(like.shape).ravel()
        if name.endswith("_bytes"):
            items = [base64.b64decode(item["b64"]) for item in flat]
        else:
            items = [item.encode("utf-8", "surrogateescape") for item in flat]
        out = np.empty(len(items), object)
        out[:] = items
        return out.reshape(like.shape)
    # Through float64 first: a JSON number is a double, and float32 is parsed from it.
    wide = np.array(value, dtype=np.float64 if like.dtype.kind == "f" else like.dtype)
    return wide.astype(like.dtype).reshape(like.shape)


def _decoded(body: bytes, outputs: dict[str, np.ndarray], request_format: str) -> dict:
    doc = _parse(body)
    names = sorted(outputs)
    if request_format == COLUMNAR:
        values = doc["outputs"] if len(names) > 1 else {names[0]: doc["outputs"]}
    elif len(names) == 1:
        values = {names[0]: doc["predictions"]}
    else:
        values = {name: [row[name] for row in doc["predictions"]] for name in names}
    return {name: _as_array(values[name], outputs[name], name) for name in names}


def _bits(array: np.ndarray):
    """Comparable contents: float bit patterns (so -0.0 and NaN count), else the values."""
    if array.dtype.kind == "f":
        return array.view(f"u{array.dtype.itemsize}").tolist()
    return array.tolist()


def _assert_same_values(outputs: dict[str, np.ndarray], request_format: str) -> bytes:
    compact = predict_response(outputs, request_format, COMPACT)
    pretty = predict_response(outputs, request_format, TF_SERVING)
    for body in (compact, pretty):
        decoded = _decoded(body, outputs, request_format)
        for name, array in outputs.items():
            got = decoded[name]
            nan = np.isnan(array) if array.dtype.kind == "f" else np.zeros(array.shape, bool)
            assert np.array_equal(np.isnan(got) if nan.any() else nan, nan), name
            assert _bits(np.where(nan, 0, got).astype(array.dtype)) == _bits(
                np.where(nan, 0, array).astype(array.dtype)
            ), (name, body[:200])
    assert len(compact) < len(pretty)
    return compact


def _rng_float32(count: int) -> np.ndarray:
    """float32s of every exponent: random bit patterns, the non-finite ones dropped."""
    bits = np.random.default_rng(7).integers(0, 2**32, count, dtype=np.uint64)
    values = bits.astype(np.uint32).view(np.float32)
    return values[np.isfinite(values)]


@pytest.mark.parametrize("request_format", [ROW, COLUMNAR])
def test_float32_values_are_bit_equal_after_parsing(request_format):
    values = np.concatenate([SPECIAL32, _rng_float32(50_000)])
    _assert_same_values({"y": values}, request_format)
    _assert_same_values({"y": values[:48_000].reshape(4, 5, 2400)}, request_format)


def test_float32_digits_are_the_shortest_that_round_trip():
    """A writer going through float64 (`0.10000000149011612` for 0.1f) would fail here."""
    values = _rng_float32(20_000)
    body = predict_response({"y": values}, COLUMNAR, COMPACT)
    tokens = body[len(b'{"outputs":[') : -2].split(b",")
    for value, token in zip(values.tolist(), tokens, strict=True):
        shortest = np.format_float_scientific(np.float32(value), unique=True, trim="-")
        digits = shortest.split("e")[0].lstrip("-").replace(".", "").strip("0") or "0"
        mantissa = token.split(b"e")[0].lstrip(b"-").replace(b".", b"").strip(b"0") or b"0"
        assert len(mantissa) == len(digits), (value, token, shortest)
    assert b'{"outputs":[0.1,' in predict_response({"y": SPECIAL32[5:7]}, COLUMNAR, COMPACT)


def test_non_finite_tokens_are_tf_servings():
    values = np.array([np.nan, np.inf, -np.inf, 1.5, -np.nan], np.float32)
    assert predict_response({"y": values}, ROW) == (
        b'{"predictions":[NaN,Infinity,-Infinity,1.5,NaN]}'
    )
    assert predict_response({"y": np.array(-np.inf)}, COLUMNAR) == b'{"outputs":-Infinity}'
    _assert_same_values({"y": values.astype(np.float64), "z": values}, ROW)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, np.bool_]
)
def test_integers_and_booleans(dtype):
    info = np.iinfo(dtype) if dtype is not np.bool_ else None
    values = np.array([0, 1] if info is None else [info.min, info.max, 0, 7], dtype)
    body = _assert_same_values({"k": values.reshape(1, -1), "s": values.reshape(-1, 1)}, COLUMNAR)
    assert b"." not in body  # integers stay integers


def test_float64_keeps_its_round_trip():
    values = np.random.default_rng(3).normal(0, 1e6, 1000)
    values[:3] = [0.1, 1 / 3, 2.0**-1074]
    _assert_same_values({"d": values}, ROW)


def test_strings_bytes_and_several_outputs_row_and_columnar():
    texts = np.array(
        [b"plain", b'quote " back \\ nl \n tab \t', "é ✓".encode(), b"\xff\xfe"], object
    )
    outputs = {
        "text": texts,
        "raw_bytes": texts[::-1].copy(),
        "score": np.array([0.5, 1 / 3, np.nan, -0.0], np.float32),
        "label": np.array([1, 2, 3, 4], np.int64),
        "ok": np.array([True, False, True, True]),
        "mask": np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 7,
    }
    row = _assert_same_values(outputs, ROW)
    assert row.startswith(b'{"predictions":[{"label":1,"mask":[[0.0,0.14285715],')
    assert b'"raw_bytes":{"b64":"//4="}' in row and b'"text":"\xff\xfe"' in row
    _assert_same_values(outputs, COLUMNAR)
    # A 0-d string tensor and scalars of each kind, columnar.
    scalars = {"s": np.array(b"x\x01", object), "f": np.array(0.1, np.float32), "i": np.array(-3)}
    assert predict_response(scalars, COLUMNAR) == b'{"outputs":{"f":0.1,"i":-3,"s":"x\\u0001"}}'
    _assert_same_values(scalars, COLUMNAR)


def test_empty_tensors():
    assert predict_response({"y": np.zeros((2, 0, 3), np.float32)}, COLUMNAR) == (
        b'{"outputs":[[],[]]}'
    )
    assert predict_response({"y": np.zeros((0, 3), np.float32)}, ROW) == b'{"predictions":[]}'
    # An empty half tensor is written (nothing to convert); a full one is refused.
    assert predict_response({"h": np.zeros((1, 0), np.float16)}, COLUMNAR) == b'{"outputs":[[]]}'
    _assert_same_values({"a": np.zeros((0,), np.float32), "b": np.zeros((0, 2), np.int8)}, ROW)


@pytest.mark.parametrize(
    ("outputs", "request_format", "message"),
    [
        ({}, ROW, "Cannot convert empty tensor map to JSON"),
        ({"y": np.array(1.0, np.float32)}, ROW, "Tensor name: y has no shape information "),
        (
            {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)},
            ROW,
            "Tensor name: b has inconsistent batch size: 3 expecting: 2",
        ),
        ({"h": np.ones(2, np.float16)}, COLUMNAR, "tensor type: half"),
        ({"a": np.ones(2, np.float32), "u": np.ones(2, np.uint16)}, ROW, "tensor type: uint16"),
        ({"c": np.ones(1, np.complex64)}, COLUMNAR, "tensor type: complex64"),
    ],
)
def test_errors_are_the_same_in_both_layouts(outputs, request_format, message):
    texts = []
    for layout in (COMPACT, TF_SERVING):
        with pytest.raises(ServingError, match=message) as raised:
            predict_response(outputs, request_format, layout)
        texts.append(raised.value.message)
    assert texts[0] == texts[1]


def test_unknown_layout():
    with pytest.raises(ValueError, match="unknown JSON layout 'pretty'"):
        predict_response({"y": np.ones(1, np.float32)}, ROW, "pretty")
