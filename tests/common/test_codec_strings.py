"""DT_STRING tensors in `common.codec`: what they declare, and `tensor_content`'s bounded decoder.

A string tensor costs per element, not per byte on the wire: one `string_val` broadcasts to every
element and TensorFlow copies each one, and `tensor_content` holds a length prefix per element.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from common import codec
from common.wire import tensor_pb2 as wire


def proto(shape, **fields):
    message = wire.TensorProto(dtype=wire.DT_STRING, **fields)
    message.tensor_shape.dim.extend(wire.TensorShapeProto.Dim(size=d) for d in shape)
    return message


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string_list(values: list[bytes]) -> bytes:
    """TF's `EncodeStringList`: every length as a varint, then every value."""
    return b"".join(varint(len(v)) for v in values) + b"".join(values)


def test_a_broadcast_string_counts_once_per_element():
    # The request: one 1 MB value for 4000 elements, which TF copies 4000 times.
    value = b"\x89PNG" + bytes(2**20 - 4)
    message = proto([4000], string_val=[value])
    assert message.ByteSize() < 2**20 + 64
    found = codec.declared(message)
    assert found.count == 4000
    assert found.nbytes >= 4000 * len(value)


def test_string_elements_cost_more_than_their_pointer():
    # 20 million empty strings in 20 MB: a NumPy pointer, a Python object and TF's own string
    # header each, far over the 160 MB that 8 bytes an element would say.
    found = codec.declared(proto([20_000_000], tensor_content=bytes(20_000_000)))
    assert found.nbytes >= 20_000_000 * codec.STRING_ELEMENT_BYTES
    assert codec.STRING_ELEMENT_BYTES >= 8 + 24


def test_present_values_and_padding_are_counted():
    values = [b"car", b"", b"\xff\x00bytes"]
    exact = 3 * codec.STRING_ELEMENT_BYTES + 2 * (3 + 0 + 7)
    found = codec.declared(codec.encode(np.array(values, dtype=object)))
    # The values present are bounded by the message's own size (a few bytes of tags over).
    assert exact <= found.nbytes <= exact + 2 * 32
    padded = codec.declared(proto([5], string_val=[b"ab", b"cdef"]))
    # Three more copies of the last value.
    assert padded.nbytes >= 5 * codec.STRING_ELEMENT_BYTES + 2 * 6 + 3 * 4


def test_a_short_tensor_content_is_refused_without_reading_it():
    # Every element needs at least one length byte: 20 million cannot fit in 1000 bytes.
    message = proto([20_000_000], tensor_content=bytes(1000))
    with pytest.raises(codec.TensorError, match="20000000 elements"):
        codec.declared(message)
    with pytest.raises(codec.TensorError):
        codec.decode(message)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tensor_content_decodes_like_tensorflow(seed):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    # Lengths with one, two and three varint bytes, empties among them.
    sizes = rng.choice([0, 1, 5, 127, 128, 300, 16383, 16384, 70000], size=200)
    values = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in sizes]
    message = proto([10, 20], tensor_content=string_list(values))
    decoded = codec.decode(message)
    assert decoded.shape == (10, 20) and decoded.dtype == object
    assert decoded.ravel().tolist() == values
    parsed = tf.io.parse_tensor(message.SerializeToString(), tf.string).numpy()
    assert parsed.ravel().tolist() == values
    assert codec.declared(message).nbytes >= decoded.size * codec.STRING_ELEMENT_BYTES


@pytest.mark.parametrize(
    "content",
    [
        b"\x80\x80",  # ends inside the first prefix
        b"\x01a\xff",  # ends inside the second prefix
        b"\x80\x80\x80\x80\x80\x01" + b"a",  # a six-byte varint, more than varint32 allows
        b"\x01\x01ab" + b"c",  # a byte too many
        b"\x02\x01ab",  # a byte too few
    ],
    ids=["first-prefix", "second-prefix", "six-byte-varint", "extra-byte", "missing-byte"],
)
def test_broken_tensor_content_is_a_tensor_error(content):
    import tensorflow as tf

    message = proto([2], tensor_content=content)
    with pytest.raises(codec.TensorError):
        codec.decode(message)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_tensor(message.SerializeToString(), tf.string)


def test_a_five_byte_prefix_keeps_32_bits_as_tensorflow():
    # TF's GetVarint32 reads five bytes into a uint32: bits past 32 are dropped.
    content = b"\x83\x80\x80\x80\x10" + b"abc"
    assert codec.decode(proto([1], tensor_content=content)).tolist() == [b"abc"]


def test_twenty_million_empty_strings_decode_in_bounded_time_and_memory():
    content = bytes(20_000_000)
    message = proto([20_000_000], tensor_content=content)
    tracemalloc.start()
    start = time.perf_counter()
    decoded = codec.decode(message)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert decoded.shape == (20_000_000,) and decoded[-1] == b""
    # The object array itself is 160 MB; the parse around it must stay small (it built a
    # 160 MB list of sizes and another of values before), and fast (8 s before; ~0.3 s now).
    assert peak < 160_000_000 + 64 * 2**20
    assert elapsed < 6.0


def test_only_the_elements_of_the_shape_are_converted():
    message = proto([2], string_val=[b"a", b"b", b"c", b"d"])
    assert codec.decode(message).tolist() == [b"a", b"b"]
