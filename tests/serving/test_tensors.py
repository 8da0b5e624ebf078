"""TensorProto <-> numpy codec: TF's decoding rules, both encodings, and parity with TensorFlow."""

import grpc
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import ServingError
from serving.tensors import data_type, declared, dtype_name, from_numpy, numpy_dtype, to_numpy

# Every dtype the codec supports, with TF's name and a sample of awkward values.
SAMPLES = {
    types_pb2.DT_FLOAT: ("float", np.array([[1.5, -0.0], [np.inf, 3.4e38]], np.float32)),
    types_pb2.DT_DOUBLE: ("double", np.array([1e-300, -2.5, np.nan], np.float64)),
    types_pb2.DT_INT32: ("int32", np.array([-(2**31), 0, 2**31 - 1], np.int32)),
    types_pb2.DT_UINT8: ("uint8", np.array([0, 128, 255], np.uint8)),
    types_pb2.DT_INT16: ("int16", np.array([-32768, 7, 32767], np.int16)),
    types_pb2.DT_INT8: ("int8", np.array([-128, 0, 127], np.int8)),
    types_pb2.DT_UINT16: ("uint16", np.array([0, 40000, 65535], np.uint16)),
    types_pb2.DT_INT64: ("int64", np.array([-(2**63), 2**63 - 1], np.int64)),
    types_pb2.DT_BOOL: ("bool", np.array([True, False, True], np.bool_)),
    types_pb2.DT_HALF: ("half", np.array([0.5, -65504, np.inf], np.float16)),
    types_pb2.DT_BFLOAT16: ("bfloat16", np.array([1.0, -3.5, 1e30], ml_dtypes.bfloat16)),
    types_pb2.DT_UINT32: ("uint32", np.array([0, 2**32 - 1], np.uint32)),
    types_pb2.DT_UINT64: ("uint64", np.array([0, 2**64 - 1], np.uint64)),
    types_pb2.DT_COMPLEX64: ("complex64", np.array([1 + 2j, -3.5j], np.complex64)),
    types_pb2.DT_COMPLEX128: ("complex128", np.array([[1e200 - 1j]], np.complex128)),
    types_pb2.DT_STRING: ("string", np.array([[b"a", b""], [b"\xff\x00", b"xyz"]], object)),
}
NUMERIC = [dt for dt in SAMPLES if dt != types_pb2.DT_STRING]


def proto(dtype, shape, **fields):
    message = tensor_pb2.TensorProto(dtype=dtype, **fields)
    message.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    return message


def tf_from_proto(message):
    """TensorFlow's C++ `Tensor::FromProto` (through ParseTensor), the behaviour we copy."""
    out_type = tf.dtypes.as_dtype(message.dtype)
    return tf.io.parse_tensor(message.SerializeToString(), out_type).numpy()


def assert_parse_error(message, alias="x"):
    with pytest.raises(ServingError) as caught:
        to_numpy(message, alias)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == f"tensor parsing error: {alias}"


@pytest.mark.parametrize("dtype", list(SAMPLES))
def test_names_and_numpy_types(dtype):
    name, sample = SAMPLES[dtype]
    assert dtype_name(dtype) == name
    assert numpy_dtype(dtype) == sample.dtype
    assert data_type(sample.dtype) == dtype


def test_dtype_names_for_types_without_numpy_form():
    assert dtype_name(types_pb2.DT_INVALID) == "INVALID"
    assert dtype_name(types_pb2.DT_RESOURCE) == "resource"
    assert dtype_name(types_pb2.DT_FLOAT_REF) == "float_ref"
    assert dtype_name(12345) == "unknown dtype enum (12345)"
    assert data_type(np.dtype("U3")) == data_type(np.dtype("S3")) == types_pb2.DT_STRING
    assert data_type(np.dtype(">f4")) == types_pb2.DT_FLOAT
    with pytest.raises(ServingError):
        numpy_dtype(types_pb2.DT_VARIANT)
    with pytest.raises(ServingError):
        data_type(np.dtype("datetime64[s]"))


@pytest.mark.parametrize("tensor_content", [False, True])
@pytest.mark.parametrize("dtype", list(SAMPLES))
def test_round_trip_and_tensorflow_parity(dtype, tensor_content):
    sample = SAMPLES[dtype][1]
    message = from_numpy(sample, tensor_content=tensor_content)
    assert message.dtype == dtype
    assert [d.size for d in message.tensor_shape.dim] == list(sample.shape)
    assert bool(message.tensor_content) == (tensor_content and dtype != types_pb2.DT_STRING)
    back = to_numpy(message, "x")
    assert back.dtype == sample.dtype and back.shape == sample.shape
    np.testing.assert_array_equal(back, sample)
    # TensorFlow reads our encoding to the same values ...
    np.testing.assert_array_equal(tf.make_ndarray(message).astype(sample.dtype), sample)
    # ... and we read TensorFlow's own (tensor_content for numbers, string_val for bytes).
    np.testing.assert_array_equal(to_numpy(tf.make_tensor_proto(sample), "x"), sample)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_typed_fields_match_tensorflow_as_proto_field(dtype):
    # `tf.constant(...)` protos built in-graph use AsProtoField for small tensors.
    sample = SAMPLES[dtype][1]
    ours = from_numpy(sample)
    theirs = tf.make_tensor_proto(sample)
    if theirs.tensor_content:
        # Numeric make_tensor_proto writes tensor_content; compare decoded values instead.
        np.testing.assert_array_equal(to_numpy(ours, "x"), tf.make_ndarray(theirs))
    else:
        assert ours == theirs


def test_single_value_broadcasts_to_the_whole_shape():
    message = proto(types_pb2.DT_FLOAT, [2, 2], float_val=[7.0])
    np.testing.assert_array_equal(to_numpy(message, "x"), np.full((2, 2), 7.0, np.float32))
    np.testing.assert_array_equal(tf_from_proto(message), np.full((2, 2), 7.0, np.float32))


def test_extra_values_are_ignored():
    message = proto(types_pb2.DT_FLOAT, [2, 2], float_val=[1, 2, 3, 4, 5])
    np.testing.assert_array_equal(to_numpy(message, "x"), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(tf_from_proto(message), [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("dtype", "fields", "expected"),
    [
        (types_pb2.DT_INT32, {"int_val": [1, 2]}, [1, 2, 2, 2]),
        (types_pb2.DT_INT64, {"int64_val": [9]}, [9, 9, 9, 9]),
        (types_pb2.DT_BOOL, {"bool_val": [False, True]}, [False, True, True, True]),
        (types_pb2.DT_STRING, {"string_val": [b"a", b"b"]}, [b"a", b"b", b"b", b"b"]),
        (types_pb2.DT_UINT8, {"int_val": [300]}, [44, 44, 44, 44]),  # C++ static_cast wraps
        (types_pb2.DT_HALF, {"half_val": [0x3C00]}, [1.0] * 4),
        (types_pb2.DT_COMPLEX64, {"scomplex_val": [1, 2, 3]}, [1 + 2j] * 4),  # odd value dropped
        (types_pb2.DT_DOUBLE, {}, [0.0] * 4),
        (types_pb2.DT_STRING, {}, [b""] * 4),
        (types_pb2.DT_UINT64, {}, [0] * 4),
    ],
)
def test_short_lists_pad_with_the_last_value_and_empty_lists_give_zeros(dtype, fields, expected):
    result = to_numpy(proto(dtype, [4], **fields), "x")
    assert result.tolist() == expected
    assert tf_from_proto(proto(dtype, [4], **fields)).tolist() == expected


def test_scalar_and_empty_tensors():
    assert to_numpy(proto(types_pb2.DT_FLOAT, [], float_val=[3.0]), "x").shape == ()
    empty = to_numpy(proto(types_pb2.DT_FLOAT, [0, 3], tensor_content=b"junk"), "x")
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert from_numpy(np.zeros((0, 2), np.int32)).int_val == []


def test_tensor_content_must_hold_exactly_the_elements():
    good = proto(types_pb2.DT_FLOAT, [2], tensor_content=np.float32([1, 2]).tobytes())
    np.testing.assert_array_equal(to_numpy(good, "x"), [1, 2])
    assert to_numpy(good, "x").flags.writeable
    assert_parse_error(proto(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 8), alias="images")
    assert_parse_error(proto(types_pb2.DT_FLOAT, [1], tensor_content=b"\0" * 8))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf_from_proto(proto(types_pb2.DT_FLOAT, [1], tensor_content=b"\0" * 8))


def test_string_tensor_content_uses_the_varint_string_list():
    message = proto(types_pb2.DT_STRING, [2], tensor_content=b"\x01\x02a" + b"bc")
    assert to_numpy(message, "x").tolist() == [b"a", b"bc"] == tf_from_proto(message).tolist()
    assert_parse_error(proto(types_pb2.DT_STRING, [2], tensor_content=b"\x01\x02abcd"))
    assert_parse_error(proto(types_pb2.DT_STRING, [2], tensor_content=b"\x01"))


@pytest.mark.parametrize(
    "message",
    [
        proto(types_pb2.DT_INVALID, [1]),
        proto(types_pb2.DT_RESOURCE, [1]),
        proto(types_pb2.DT_VARIANT, [1]),
        proto(types_pb2.DT_FLOAT, [-1, 2], float_val=[1.0]),
        proto(types_pb2.DT_FLOAT, [2**62, 4], float_val=[1.0]),
        proto(types_pb2.DT_FLOAT, [1] * 255),
    ],
    ids=["invalid", "resource", "variant", "negative-dim", "overflow", "too-many-dims"],
)
def test_unparseable_tensors(message):
    assert_parse_error(message)
    # `declared` refuses them the same way, before anything is decoded.
    with pytest.raises(ServingError) as caught:
        declared(message, "x")
    assert caught.value.message == "tensor parsing error: x"


def test_declared_reads_the_size_without_decoding():
    broadcast = proto(types_pb2.DT_FLOAT, [400_000_000], float_val=[1.0])
    assert declared(broadcast, "x").nbytes == 1_600_000_000
    sample = SAMPLES[types_pb2.DT_INT16][1]
    assert declared(from_numpy(sample, tensor_content=True), "x").nbytes == sample.nbytes
    # Quantized types decode nowhere in the server, so they are parse errors here too.
    with pytest.raises(ServingError, match="tensor parsing error: q"):
        declared(proto(types_pb2.DT_QINT8, [1], int_val=[1]), "q")
    short = from_numpy(np.ones(3, np.float32), tensor_content=True)
    short.tensor_content = short.tensor_content[:-1]
    with pytest.raises(ServingError, match="tensor parsing error: x"):
        declared(short, "x")


def test_unknown_rank_is_rejected():
    message = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    message.tensor_shape.unknown_rank = True
    assert_parse_error(message)


def test_strings_encode_to_string_val_even_with_tensor_content():
    message = from_numpy(np.array(["é", "b"]), tensor_content=True)
    assert list(message.string_val) == ["é".encode(), b"b"] and not message.tensor_content
    with pytest.raises(ServingError):
        from_numpy(np.array([b"a", 5], dtype=object))


def test_big_float_arrays_use_packed_fields():
    images = np.random.default_rng(0).random((1, 128, 128, 3), dtype=np.float32)
    message = from_numpy(images)
    assert len(message.float_val) == images.size
    np.testing.assert_array_equal(to_numpy(message, "x"), images)
    # Non-contiguous and big-endian inputs are normalised first.
    np.testing.assert_array_equal(to_numpy(from_numpy(images[..., ::2]), "x"), images[..., ::2])
    swapped = images.astype(">f4")
    np.testing.assert_array_equal(to_numpy(from_numpy(swapped, tensor_content=True), "x"), images)
