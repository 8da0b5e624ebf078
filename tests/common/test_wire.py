"""The client's own protos and codec against TensorFlow's and TF Serving's official messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2 as tf_shape_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow.core.protobuf import meta_graph_pb2 as tf_meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tfs_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tfs_status_pb2
from tensorflow_serving.apis import model_pb2 as tfs_model_pb2
from tensorflow_serving.apis import predict_pb2 as tfs_predict_pb2
from tensorflow_serving.apis import status_pb2 as tfs_util_status_pb2

from client.transports.json_values import from_json, predict_body, to_json
from common import codec
from common.quiet import import_tensorflow
from common.wire import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2
from common.wire import tensor_pb2 as wire_tensor_pb2

tf = import_tensorflow()

SIGNATURE_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# Ours -> the official message with the same fields.
PAIRS = [
    (wire_tensor_pb2.TensorShapeProto, tf_shape_pb2.TensorShapeProto),
    (wire_tensor_pb2.TensorShapeProto.Dim, tf_shape_pb2.TensorShapeProto.Dim),
    (wire_tensor_pb2.TensorProto, tf_tensor_pb2.TensorProto),
    (model_pb2.ModelSpec, tfs_model_pb2.ModelSpec),
    (predict_pb2.PredictRequest, tfs_predict_pb2.PredictRequest),
    (predict_pb2.PredictResponse, tfs_predict_pb2.PredictResponse),
    (get_model_metadata_pb2.TensorInfo, tf_meta_graph_pb2.TensorInfo),
    (get_model_metadata_pb2.SignatureDef, tf_meta_graph_pb2.SignatureDef),
    (get_model_metadata_pb2.SignatureDefMap, tfs_metadata_pb2.SignatureDefMap),
    (get_model_metadata_pb2.GetModelMetadataRequest, tfs_metadata_pb2.GetModelMetadataRequest),
    (get_model_metadata_pb2.GetModelMetadataResponse, tfs_metadata_pb2.GetModelMetadataResponse),
    (get_model_status_pb2.GetModelStatusRequest, tfs_status_pb2.GetModelStatusRequest),
    (get_model_status_pb2.ModelVersionStatus, tfs_status_pb2.ModelVersionStatus),
    (get_model_status_pb2.GetModelStatusResponse, tfs_status_pb2.GetModelStatusResponse),
    (get_model_status_pb2.StatusProto, tfs_util_status_pb2.StatusProto),
]


def _field_key(field):
    kind = field.message_type or field.enum_type
    oneof = field.containing_oneof.name if field.containing_oneof else None
    return (field.number, field.type, field.is_repeated, field.is_packed, kind and kind.name, oneof)


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=lambda m: m.DESCRIPTOR.name)
def test_fields_match_upstream(ours, theirs):
    upstream = theirs.DESCRIPTOR.fields_by_name
    for field in ours.DESCRIPTOR.fields:
        assert field.name in upstream, field.name
        assert _field_key(field) == _field_key(upstream[field.name]), field.name
    # The client's messages live in their own package, never in TensorFlow's.
    assert ours.DESCRIPTOR.full_name.startswith("tfsclient.")


def test_enums_match_upstream():
    ours = {v.name: v.number for v in wire_tensor_pb2.DataType.DESCRIPTOR.values}
    assert ours == {v.name: v.number for v in tf_types_pb2.DataType.DESCRIPTOR.values}
    states = get_model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values
    upstream = tfs_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values
    assert {v.name: v.number for v in states} == {v.name: v.number for v in upstream}
    codes = {v.name: v.number for v in get_model_status_pb2.StatusProto.Code.DESCRIPTOR.values}
    upstream_codes = tfs_util_status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"]
    for value in upstream_codes.enum_type.values:
        if not value.name.startswith("DO_NOT_USE"):
            assert codes[value.name] == value.number


def _both_ways(ours, their_type):
    """Ours parsed as theirs and back gives the same fields."""
    theirs = their_type.FromString(ours.SerializeToString())
    as_dict = json_format.MessageToDict(ours, preserving_proto_field_name=True)
    assert json_format.MessageToDict(theirs, preserving_proto_field_name=True) == as_dict
    back = type(ours).FromString(theirs.SerializeToString())
    assert back == ours
    return theirs


def _tensor():
    tensor = wire_tensor_pb2.TensorProto(dtype=wire_tensor_pb2.DT_FLOAT, version_number=2)
    tensor.tensor_shape.dim.add(size=-1, name="batch")
    tensor.tensor_shape.dim.add(size=3)
    tensor.tensor_content = b"\x00\x01\x02\x03"
    tensor.half_val.extend([15360, 1])
    tensor.float_val.extend([1.5, -2.0])
    tensor.double_val.extend([3.25])
    tensor.int_val.extend([-7, 8])
    tensor.string_val.extend([b"a", b"\xff\x00"])
    tensor.scomplex_val.extend([1.0, 2.0])
    tensor.int64_val.extend([-(2**40)])
    tensor.bool_val.extend([True, False])
    tensor.dcomplex_val.extend([3.0, 4.0])
    tensor.uint32_val.extend([2**32 - 1])
    tensor.uint64_val.extend([2**64 - 1])
    return tensor


def _signature_map():
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    x = sig.inputs["x"]
    x.name, x.dtype = "serving_default_x:0", wire_tensor_pb2.DT_FLOAT
    x.tensor_shape.dim.add(size=-1)
    y = sig.outputs["y"]
    y.name, y.dtype = "StatefulPartitionedCall:0", wire_tensor_pb2.DT_STRING
    y.tensor_shape.unknown_rank = True
    return sig_map


def test_messages_round_trip_with_upstream():
    _both_ways(_tensor(), tf_tensor_pb2.TensorProto)
    for spec in (
        model_pb2.ModelSpec(name="m", signature_name="s"),
        model_pb2.ModelSpec(name="m", version={"value": 3}),
        model_pb2.ModelSpec(name="m", version_label="canary"),
    ):
        theirs = _both_ways(spec, tfs_model_pb2.ModelSpec)
        assert theirs.WhichOneof("version_choice") == spec.WhichOneof("version_choice")
    request = predict_pb2.PredictRequest(model_spec={"name": "m"}, output_filter=["y", "z"])
    request.inputs["x"].CopyFrom(_tensor())
    _both_ways(request, tfs_predict_pb2.PredictRequest)
    response = predict_pb2.PredictResponse(model_spec={"name": "m", "version": {"value": 7}})
    response.outputs["y"].CopyFrom(_tensor())
    _both_ways(response, tfs_predict_pb2.PredictResponse)
    _both_ways(_signature_map(), tfs_metadata_pb2.SignatureDefMap)
    _both_ways(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "m", "version_label": "stable"}, metadata_field=["signature_def"]
        ),
        tfs_metadata_pb2.GetModelMetadataRequest,
    )
    _both_ways(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}),
        tfs_status_pb2.GetModelStatusRequest,
    )
    status = get_model_status_pb2.GetModelStatusResponse()
    status.model_version_status.add(
        version=2, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    failed = status.model_version_status.add(
        version=1, state=get_model_status_pb2.ModelVersionStatus.END
    )
    failed.status.error_code = get_model_status_pb2.StatusProto.NOT_FOUND
    failed.status.error_message = "gone"
    theirs = _both_ways(status, tfs_status_pb2.GetModelStatusResponse)
    assert theirs.model_version_status[1].status.error_code == 5


def test_metadata_any_both_ways():
    # TF Serving's answer, with the Any packed by the official SignatureDefMap.
    upstream_map = tfs_metadata_pb2.SignatureDefMap.FromString(_signature_map().SerializeToString())
    theirs = tfs_metadata_pb2.GetModelMetadataResponse(
        model_spec={"name": "m", "version": {"value": 4}}
    )
    theirs.metadata["signature_def"].Pack(upstream_map)
    assert theirs.metadata["signature_def"].type_url == SIGNATURE_MAP_URL
    ours = get_model_metadata_pb2.GetModelMetadataResponse.FromString(theirs.SerializeToString())
    assert ours.model_spec.version.value == 4
    parsed = get_model_metadata_pb2.SignatureDefMap.FromString(ours.metadata["signature_def"].value)
    assert parsed == _signature_map()
    # And the reverse: ours, with the type_url TF Serving writes, unpacks with the official type.
    ours = get_model_metadata_pb2.GetModelMetadataResponse(model_spec={"name": "m"})
    ours.metadata["signature_def"].type_url = SIGNATURE_MAP_URL
    ours.metadata["signature_def"].value = _signature_map().SerializeToString()
    back = tfs_metadata_pb2.GetModelMetadataResponse.FromString(ours.SerializeToString())
    unpacked = tfs_metadata_pb2.SignatureDefMap()
    assert back.metadata["signature_def"].Unpack(unpacked)
    assert unpacked == upstream_map


def test_upstream_only_fields_are_skipped():
    theirs = tfs_predict_pb2.PredictRequest(model_spec={"name": "m"}, client_id=b"me")
    theirs.request_options.max_cache_length = 12
    theirs.inputs["x"].CopyFrom(tf.make_tensor_proto(np.arange(3, dtype=np.float32)))
    ours = predict_pb2.PredictRequest.FromString(theirs.SerializeToString())
    np.testing.assert_array_equal(codec.decode(ours.inputs["x"]), np.arange(3, dtype=np.float32))


DTYPES = [
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
    np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128,
]  # fmt: skip


def _sample(dtype, shape=(2, 3)) -> np.ndarray:
    values = np.arange(-3, np.prod(shape) - 3).reshape(shape)
    if np.dtype(dtype).kind == "u":
        values = values + 3
    if np.dtype(dtype).kind == "c":
        return (values + 1j * (values + 10)).astype(dtype)
    return values.astype(dtype) if dtype is not np.bool_ else values % 2 == 0


def _as_tf(proto) -> tf_tensor_pb2.TensorProto:
    return tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def _as_ours(proto) -> wire_tensor_pb2.TensorProto:
    return wire_tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_codec_matches_tensorflow(dtype):
    for shape in [(2, 3), (), (0, 4)]:
        array = _sample(dtype, shape) if shape != (0, 4) else np.zeros(shape, dtype)
        ours = codec.encode(array)
        assert ours.dtype == tf.as_dtype(dtype).as_datatype_enum
        _assert_same(tf.make_ndarray(_as_tf(ours)), array)
        # TF writes tensor_content for arrays and the typed field for single values.
        _assert_same(codec.decode(_as_ours(tf.make_tensor_proto(array))), array)
    # Typed values, fewer than the elements: both pad with the last one.
    theirs = tf.make_tensor_proto(_sample(dtype, (1,))[0], shape=[2, 2])
    assert not theirs.tensor_content
    _assert_same(codec.decode(_as_ours(theirs)), tf.make_ndarray(theirs))


def test_codec_strings_match_tensorflow():
    array = np.array([[b"a", b"\xff\x00"], [b"", "é".encode()]], dtype=object)
    ours = codec.encode(array)
    assert ours.dtype == wire_tensor_pb2.DT_STRING and not ours.tensor_content
    _assert_same(tf.make_ndarray(_as_tf(ours)), array)
    _assert_same(codec.decode(_as_ours(tf.make_tensor_proto(array))), array)
    # str elements are sent UTF-8 encoded, as TF does.
    text = np.array(["a", "é"])
    _assert_same(codec.decode(codec.encode(text)), tf.make_ndarray(tf.make_tensor_proto(text)))
    with pytest.raises(TypeError):
        codec.encode(np.array([b"a", 1], dtype=object))


def _parse_tensor(proto, dtype):
    """What TF's C++ Tensor::FromProto makes of a proto (the server's rules)."""
    return tf.io.parse_tensor(proto.SerializeToString(), out_type=dtype).numpy()


@pytest.mark.parametrize(
    "field, dtype, values",
    [
        ("float_val", np.float32, [1.5, -2.0]),
        ("double_val", np.float64, [3.25]),
        ("int_val", np.int32, [4, -5]),
        ("int_val", np.uint8, [7]),
        ("int_val", np.int16, [-300, 9]),
        ("int64_val", np.int64, [2**40]),
        ("uint32_val", np.uint32, [2**32 - 1, 1]),
        ("uint64_val", np.uint64, [2**63 + 1]),
        ("bool_val", np.bool_, [True]),
        ("scomplex_val", np.complex64, [1.0, 2.0]),
        ("dcomplex_val", np.complex128, [1.0, 2.0, 3.0, 4.0]),
        ("string_val", object, [b"x", b"yz"]),
    ],
)
def test_typed_field_rules_match_tensorflow(field, dtype, values):
    tf_dtype = tf.string if dtype is object else tf.as_dtype(dtype)
    for count in (0, 1, len(values) - 1, 5):
        # Fewer values than elements pad with the last, extra values are ignored, none are zeros.
        proto = wire_tensor_pb2.TensorProto(dtype=tf_dtype.as_datatype_enum)
        proto.tensor_shape.dim.add(size=count)
        getattr(proto, field).extend(values)
        expected = _parse_tensor(proto, tf_dtype)
        decoded = codec.decode(proto)
        _assert_same(decoded, expected.astype(object) if dtype is object else expected)
    empty = wire_tensor_pb2.TensorProto(dtype=tf_dtype.as_datatype_enum)
    empty.tensor_shape.dim.add(size=3)
    expected = _parse_tensor(empty, tf_dtype)
    _assert_same(codec.decode(empty), expected.astype(object) if dtype is object else expected)


def test_half_and_bfloat16_bit_patterns():
    bits = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00]  # 1, -2, max, smallest subnormal, inf
    proto = wire_tensor_pb2.TensorProto(dtype=wire_tensor_pb2.DT_HALF, half_val=bits)
    proto.tensor_shape.dim.add(size=6)
    expected = _parse_tensor(proto, tf.float16)
    _assert_same(codec.decode(proto), expected)
    assert codec.decode(proto)[-1] == np.inf
    bf16 = wire_tensor_pb2.TensorProto(dtype=wire_tensor_pb2.DT_BFLOAT16, half_val=[0x3F80, 0xC0A0])
    bf16.tensor_shape.dim.add(size=2)
    widened = codec.decode(bf16, widen_bfloat16=True)
    _assert_same(widened, _parse_tensor(bf16, tf.bfloat16).astype(np.float32))
    # Without widening, the server's form: ml_dtypes' bfloat16, as TensorFlow holds it.
    _assert_same(codec.decode(bf16), _parse_tensor(bf16, tf.bfloat16))
    content = tf.make_tensor_proto(np.array([1.5, -3.0], tf.bfloat16.as_numpy_dtype))
    _assert_same(
        codec.decode(_as_ours(content), widen_bfloat16=True), np.array([1.5, -3.0], np.float32)
    )


def test_tensor_content_of_the_wrong_size_is_refused():
    proto = codec.encode(np.arange(4, dtype=np.float32))
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(tf.errors.InvalidArgumentError):
        _parse_tensor(proto, tf.float32)
    with pytest.raises(ValueError, match="tensor_content"):
        codec.decode(proto)
    proto.tensor_shape.dim[0].size = -1
    with pytest.raises(ValueError, match="negative"):
        codec.decode(proto)


def test_codec_details():
    big_endian = np.arange(5, dtype=">i4")
    assert codec.decode(codec.encode(big_endian)).dtype == np.int32
    np.testing.assert_array_equal(codec.decode(codec.encode(big_endian)), big_endian)
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    np.testing.assert_array_equal(codec.decode(codec.encode(transposed)), transposed)
    decoded = codec.decode(codec.encode(np.ones(3, np.float32)))
    decoded[0] = 5  # the caller's own array
    assert codec.data_type(np.float32) == tf_types_pb2.DT_FLOAT
    assert codec.data_type(np.str_) == codec.data_type(np.bytes_) == tf_types_pb2.DT_STRING
    with pytest.raises(TypeError):
        codec.encode(np.array(["2020-01-01"], dtype="datetime64[D]"))
    assert codec.enum_name(1) == "DT_FLOAT" and codec.enum_name(999) == "999"
    assert codec.dtype_name(1) == "float" and codec.dtype_name(999) == "unknown dtype enum (999)"


def test_json_values():
    text = np.array([[b"\xff", "é"]], dtype=object)
    as_json = to_json(text)
    assert as_json == [[{"b64": "/w=="}, {"b64": "w6k="}]]
    _assert_same(from_json(as_json, "DT_STRING"), np.array([[b"\xff", "é".encode()]], object))
    _assert_same(from_json(["a", "b"]), np.array([b"a", b"b"], object))
    _assert_same(from_json([[1, 2]], "DT_FLOAT"), np.array([[1, 2]], np.float32))
    _assert_same(from_json({"b64": "/w=="}), np.array(b"\xff", object))
    assert to_json(np.float32(0.1)) == float(np.float32(0.1))
    with pytest.raises(TypeError):
        to_json(np.array([1j]))


def test_predict_body_reads_back_exactly():
    """orjson's shortest float32 digits read back (as TF Serving does, via double) bit for bit."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    finite = bits.view(np.float32)[np.isfinite(bits.view(np.float32))]
    floats = finite[: finite.size // 2 * 2].reshape(-1, 2)
    inputs = {
        "x": floats.T,  # not contiguous
        "flag": np.array([True, False]),
        "n": np.array([[-(2**63), 2**63 - 1]], np.int64),
        "u": np.array(2**64 - 1, np.uint64),  # a scalar stays a scalar
        "text": np.array([b"\xff"], object),
    }
    body = json.loads(predict_body("sig", inputs))
    assert body["signature_name"] == "sig"
    columns = body["inputs"]
    back = np.array(columns["x"], np.float64).astype(np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), floats.T.view(np.uint32))
    assert columns["flag"] == [True, False] and columns["n"] == [[-(2**63), 2**63 - 1]]
    assert columns["u"] == 2**64 - 1 and columns["text"] == [{"b64": "/w=="}]


def test_predict_body_writes_nan_and_infinity_as_tf_serving_reads_them():
    body = predict_body("sig", {"x": np.array([np.nan, np.inf, -np.inf, 0.5], np.float32)})
    assert b"NaN" in body and b"Infinity" in body and b"null" not in body
    values = json.loads(body)["inputs"]["x"]
    assert np.isnan(values[0]) and values[1:] == [np.inf, -np.inf, 0.5]
    with pytest.raises(TypeError):
        predict_body("sig", {"x": np.array([1j])})
