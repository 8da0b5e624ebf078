"""`codec.declared`: what a TensorProto declares (shape, elements, bytes), read without decoding."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from common import codec
from common.wire import tensor_pb2 as wire


def proto(dtype, shape, **fields):
    message = wire.TensorProto(dtype=dtype, **fields)
    message.tensor_shape.dim.extend(wire.TensorShapeProto.Dim(size=d) for d in shape)
    return message


@pytest.mark.parametrize(
    "array",
    [
        np.ones((2, 3), np.float32),
        np.arange(5, dtype=np.int64),
        np.array([True, False]),
        np.array([1 + 2j], np.complex128),
        np.zeros((0, 7), np.float16),
        np.float64(2.5),
    ],
    ids=lambda a: f"{a.dtype}{list(np.shape(a))}",
)
@pytest.mark.parametrize("tensor_content", [False, True])
def test_numeric_tensors_declare_what_decoding_allocates(array, tensor_content):
    message = codec.encode(array, tensor_content=tensor_content)
    found = codec.declared(message)
    decoded = codec.decode(message)
    assert found == codec.Declared(decoded.shape, decoded.size, decoded.nbytes)


def test_a_broadcast_value_declares_its_whole_shape_without_allocating_it():
    message = proto(wire.DT_FLOAT, [400_000_000], float_val=[1.0])
    assert message.ByteSize() < 64
    tracemalloc.start()
    start = time.perf_counter()
    found = codec.declared(message)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert found == codec.Declared((400_000_000,), 400_000_000, 1_600_000_000)
    assert peak < 64 * 1024 and elapsed < 0.1


def test_strings_declare_a_cost_per_element_and_the_bytes_present():
    # A string element costs far more than its bytes (test_codec_strings.py has the details).
    per = codec.STRING_ELEMENT_BYTES
    message = codec.encode(np.array([b"car", b"", b"\xff\x00bytes"], dtype=object))
    assert codec.declared(message).nbytes == 3 * per + 2 * message.ByteSize()
    broadcast = proto(wire.DT_STRING, [100_000_000], string_val=[b"x"])
    padding = (100_000_000 - 1) * 1
    assert (
        codec.declared(broadcast).nbytes == 100_000_000 * per + 2 * broadcast.ByteSize() + padding
    )
    content = proto(wire.DT_STRING, [2], tensor_content=b"\x01a\x02bc")
    assert codec.declared(content).nbytes == 2 * per + 2 * 5


def test_bfloat16_and_scalars():
    assert codec.declared(proto(wire.DT_BFLOAT16, [4], half_val=[1])).nbytes == 8
    assert codec.declared(proto(wire.DT_DOUBLE, [])) == codec.Declared((), 1, 8)


@pytest.mark.parametrize(
    "message, text",
    [
        (proto(wire.DT_FLOAT, [-1]), "negative"),
        (proto(wire.DT_FLOAT, [1] * (codec.MAX_DIMS + 1)), "at most 254 dimensions"),
        (proto(wire.DT_FLOAT, [2**40, 2**40]), "more elements than int64"),
        (proto(wire.DT_FLOAT, [3], tensor_content=b"\0" * 11), "tensor_content has 11 bytes"),
        (proto(wire.DT_RESOURCE, [1]), "cannot decode a resource tensor"),
        (proto(wire.DT_INVALID, [1]), "cannot decode a INVALID tensor"),
    ],
    ids=["negative", "too-many-dims", "int64-overflow", "content-size", "resource", "invalid"],
)
def test_what_decode_would_refuse_is_refused_undecoded(message, text):
    with pytest.raises(codec.TensorError, match=text):
        codec.declared(message)
    with pytest.raises(codec.TensorError):
        codec.decode(message)


def test_empty_tensors_ignore_their_content_as_tensorflow_does():
    message = proto(wire.DT_FLOAT, [0, 5], tensor_content=b"junk")
    assert codec.declared(message) == codec.Declared((0, 5), 0, 0)
    assert codec.decode(message).shape == (0, 5)


def test_more_dimensions_than_numpy_holds_is_a_tensor_error_not_a_crash():
    message = proto(wire.DT_FLOAT, [1] * (codec.NUMPY_MAX_DIMS + 1), float_val=[1.0])
    # Valid for TensorFlow (254 dimensions), so `declared` accepts it ...
    assert len(codec.declared(message).shape) == codec.NUMPY_MAX_DIMS + 1
    # ... but NumPy cannot hold it: a TensorError naming the limit, not NumPy's ValueError.
    with pytest.raises(codec.TensorError, match="NumPy holds at most 64"):
        codec.decode(message)
