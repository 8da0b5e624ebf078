"""TensorProto <-> NumPy with TensorFlow's exact rules: the one codec of client and server.

It reads and writes any message with TensorProto's fields: the TF-free `common.wire` protos of
the client and TensorFlow's own `tensor_pb2.TensorProto` in the server. Decoding follows TF's
`Tensor::FromProto`: `tensor_content` must hold exactly the tensor's bytes; without it the typed
`*_val` field is read, a short list is padded with its last value, extra values are ignored and
no values at all give zeros (b"" for strings). No TensorFlow import.

Example:
    >>> proto = encode(np.ones((2, 3), np.float32))
    >>> decode(proto).shape
    (2, 3)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from common.wire import tensor_pb2 as wire

# TensorShape::IsValid rejects more dimensions than this, and more elements than int64 holds.
MAX_DIMS = 254
# NumPy 2 arrays hold at most this many dimensions (NPY_MAXDIMS), fewer than TensorFlow allows.
NUMPY_MAX_DIMS = 64
_INT64_MAX = 2**63 - 1
# protobuf refuses to serialize a message of 2 GiB or more.
MAX_CONTENT_BYTES = 2**31 - 1


class TensorError(ValueError):
    """A TensorProto that does not decode (bad shape, wrong content size, unsupported type)."""


class _Spec(NamedTuple):
    """How one DataType is held in NumPy and carried in TensorProto's typed fields."""

    numpy: np.dtype
    field: str
    # The typed field's protobuf number, and whether its elements are fixed-width on the wire
    # (packed floats, doubles, complex parts), which `encode` writes as raw bytes directly.
    number: int
    fixed: bool


_SPECS: dict[int, _Spec] = {
    wire.DT_FLOAT: _Spec(np.dtype(np.float32), "float_val", 5, True),
    wire.DT_DOUBLE: _Spec(np.dtype(np.float64), "double_val", 6, True),
    wire.DT_INT32: _Spec(np.dtype(np.int32), "int_val", 7, False),
    wire.DT_UINT8: _Spec(np.dtype(np.uint8), "int_val", 7, False),
    wire.DT_INT16: _Spec(np.dtype(np.int16), "int_val", 7, False),
    wire.DT_INT8: _Spec(np.dtype(np.int8), "int_val", 7, False),
    wire.DT_UINT16: _Spec(np.dtype(np.uint16), "int_val", 7, False),
    wire.DT_STRING: _Spec(np.dtype(object), "string_val", 8, False),
    wire.DT_COMPLEX64: _Spec(np.dtype(np.complex64), "scomplex_val", 9, True),
    wire.DT_INT64: _Spec(np.dtype(np.int64), "int64_val", 10, False),
    wire.DT_BOOL: _Spec(np.dtype(np.bool_), "bool_val", 11, False),
    wire.DT_COMPLEX128: _Spec(np.dtype(np.complex128), "dcomplex_val", 12, True),
    wire.DT_HALF: _Spec(np.dtype(np.float16), "half_val", 13, False),
    # bfloat16 bit patterns travel in `half_val` too (TF's ProtoHelper<bfloat16>); NumPy has no
    # bfloat16, so they decode as uint16 bits first (see `_bfloat16`).
    wire.DT_BFLOAT16: _Spec(np.dtype(np.uint16), "half_val", 13, False),
    wire.DT_UINT32: _Spec(np.dtype(np.uint32), "uint32_val", 16, False),
    wire.DT_UINT64: _Spec(np.dtype(np.uint64), "uint64_val", 17, False),
    # Quantized types decode as their storage integers, as tf.make_ndarray does.
    wire.DT_QINT8: _Spec(np.dtype(np.int8), "int_val", 7, False),
    wire.DT_QUINT8: _Spec(np.dtype(np.uint8), "int_val", 7, False),
    wire.DT_QINT16: _Spec(np.dtype(np.int16), "int_val", 7, False),
    wire.DT_QUINT16: _Spec(np.dtype(np.uint16), "int_val", 7, False),
    wire.DT_QINT32: _Spec(np.dtype(np.int32), "int_val", 7, False),
}
QUANTIZED = frozenset(
    (wire.DT_QINT8, wire.DT_QUINT8, wire.DT_QINT16, wire.DT_QUINT16, wire.DT_QINT32)
)
# NumPy dtype -> DataType for encoding (one DataType per NumPy type; quantized types never).
_BY_NUMPY: dict[np.dtype, int] = {
    spec.numpy: dt
    for dt, spec in _SPECS.items()
    if dt not in QUANTIZED and dt not in (wire.DT_STRING, wire.DT_BFLOAT16)
}


def dtype_name(dtype: int) -> str:
    """TF's `DataTypeString`, as TF Serving's error texts print it: `float`, `int32`, `half`.

    Returns:
        The lower-case name, `float_ref` for reference types, `INVALID` for DT_INVALID and
        `unknown dtype enum (N)` for values TF does not define.
    """
    if dtype == wire.DT_INVALID:
        return "INVALID"
    try:
        name = wire.DataType.Name(dtype)
    except ValueError:
        return f"unknown dtype enum ({dtype})"
    if name.endswith("_REF"):
        return dtype_name(dtype - 100) + "_ref"
    return name[len("DT_") :].lower()


def enum_name(dtype: int) -> str:
    """The DataType enum name as GetModelMetadata JSON spells it (`DT_FLOAT`), or the number."""
    try:
        return wire.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def numpy_dtype(dtype: int) -> np.dtype:
    """The NumPy dtype that holds a DataType (DT_STRING: object arrays of `bytes`).

    Raises:
        TensorError: for types with no NumPy form (resource, variant, float8, ...).
    """
    if dtype == wire.DT_BFLOAT16:
        return _ml_bfloat16()
    spec = _SPECS.get(dtype)
    if spec is None:
        raise TensorError(f"no NumPy form for {dtype_name(dtype)} tensors")
    return spec.numpy


def data_type(array_dtype: np.dtype | type | str) -> int:
    """The DataType for a NumPy dtype: numeric types 1:1, `str`/`bytes`/object to DT_STRING.

    Raises:
        TypeError: for dtypes TensorFlow has no DataType for (datetime, float128, ...).
    """
    dtype = np.dtype(array_dtype)
    if dtype.kind in "OSU":
        return wire.DT_STRING
    if dtype.name == "bfloat16":  # ml_dtypes' type, recognised without importing it
        return wire.DT_BFLOAT16
    found = _BY_NUMPY.get(dtype.newbyteorder("="))
    if found is None:
        raise TypeError(f"no TensorFlow DataType for NumPy dtype {dtype}")
    return found


def shape_of(proto) -> tuple[int, ...]:
    """The tensor's shape, checked like `TensorShape::IsValid` (and no unknown rank).

    Raises:
        TensorError: for an unknown rank, too many dimensions, a negative dimension or more
            elements than int64 counts.
    """
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise TensorError("a tensor cannot have an unknown rank")
    if len(shape_proto.dim) > MAX_DIMS:
        raise TensorError(f"a tensor has at most {MAX_DIMS} dimensions, not {len(shape_proto.dim)}")
    shape = tuple(dim.size for dim in shape_proto.dim)
    if any(size < 0 for size in shape):
        raise TensorError(f"a tensor cannot have negative dimensions: {list(shape)}")
    if math.prod(shape) > _INT64_MAX:
        raise TensorError(f"a tensor of shape {list(shape)} has more elements than int64 counts")
    return shape


class Declared(NamedTuple):
    """What a TensorProto declares, read from its header fields without decoding it."""

    shape: tuple[int, ...]
    # The number of elements the shape declares.
    count: int
    # What decoding it and feeding it to TensorFlow costs: `count` times the NumPy item size;
    # for strings see `STRING_ELEMENT_BYTES`.
    nbytes: int


# A DT_STRING element costs its 8-byte NumPy pointer, a Python bytes object (33 bytes and up)
# and the 24-byte string TF copies it into when it is fed (measurements:
# docs/benchmarks.md#measurements-behind-code-choices). On top of that every element's bytes
# are copied once by TF, and the values the message carries once more as Python bytes.
STRING_ELEMENT_BYTES = 64


def declared(proto) -> Declared:
    """The shape, element count and decoded size a TensorProto declares, without decoding it.

    A typed `*_val` field broadcasts its last value to the whole shape, so a tiny message can
    declare gigabytes; this tells a server what `decode` would allocate before it does. It also
    makes `decode`'s cheap checks (supported type, valid shape, `tensor_content` size of a
    numeric tensor, at least a length byte per element of a DT_STRING `tensor_content`), so a
    proto it accepts fails `decode` only for a DT_STRING `tensor_content` whose length prefixes
    are broken. Its cost does not grow with the element count.

    Args:
        proto: a TensorProto (TensorFlow's, or `common.wire`'s).

    Returns:
        The declared shape, element count and bytes. For strings the bytes are an upper bound:
        the values present are counted as the message's size, which holds them all.

    Raises:
        TensorError: for a DataType with no NumPy form, a bad shape, or a `tensor_content`
            that cannot hold `count` elements.
    """
    spec = _SPECS.get(proto.dtype)
    if spec is None:
        raise TensorError(f"cannot decode a {dtype_name(proto.dtype)} tensor")
    shape = shape_of(proto)
    count = math.prod(shape)
    if spec.numpy.kind == "O":
        return Declared(shape, count, count and _string_bytes(proto, count))
    nbytes = count * spec.numpy.itemsize
    if proto.tensor_content and count and len(proto.tensor_content) != nbytes:
        raise TensorError(
            f"tensor_content has {len(proto.tensor_content)} bytes; {count} {spec.numpy} "
            f"elements need {nbytes}"
        )
    return Declared(shape, count, nbytes)


def _string_bytes(proto, count: int) -> int:
    """A DT_STRING tensor's cost (see `STRING_ELEMENT_BYTES`), read without decoding it."""
    content = proto.tensor_content
    if content:
        if count > len(content):
            raise TensorError(
                f"DT_STRING tensor_content of {len(content)} bytes cannot hold {count} elements "
                "(each needs a length byte)"
            )
        # The values, and their prefixes, are at most the content's size; TF copies them once.
        return count * STRING_ELEMENT_BYTES + 2 * len(content)
    values = proto.string_val
    if not values:
        return count * STRING_ELEMENT_BYTES
    # The message's size bounds the values present (summing them would convert each one); the
    # last value is repeated for the elements they do not cover, and TF copies every element.
    present = proto.ByteSize()
    padding = max(count - len(values), 0) * len(values[-1])
    return count * STRING_ELEMENT_BYTES + 2 * present + padding


def decode(proto, *, widen_bfloat16: bool = False) -> np.ndarray:
    """Decodes a TensorProto into a new, writable array, exactly as TF's `Tensor::FromProto`.

    Args:
        proto: a TensorProto (TensorFlow's, or `common.wire`'s).
        widen_bfloat16: give DT_BFLOAT16 as float32 (exact: bfloat16 is float32's top half)
            instead of `ml_dtypes.bfloat16`, so callers without ml_dtypes can read it.

    Returns:
        The array in `tensor_shape`'s shape; DT_STRING gives an object array of `bytes`.

    Raises:
        TensorError: for a bad shape, `tensor_content` of the wrong size, a DataType with no
            NumPy form, or more dimensions than NumPy holds (TensorFlow allows 254).
    """
    spec = _SPECS.get(proto.dtype)
    if spec is None:
        raise TensorError(f"cannot decode a {dtype_name(proto.dtype)} tensor")
    shape = shape_of(proto)
    if len(shape) > NUMPY_MAX_DIMS:
        raise TensorError(
            f"a tensor of {len(shape)} dimensions is valid in TensorFlow, but NumPy holds at "
            f"most {NUMPY_MAX_DIMS}"
        )
    count = math.prod(shape)
    try:
        if count == 0:
            # TF does not look at the values of an empty tensor at all.
            flat = np.empty(0, dtype=spec.numpy)
        elif proto.tensor_content:
            flat = _from_content(proto.tensor_content, spec, count)
        else:
            flat = _from_field(proto, spec, count)
    except (MemoryError, OverflowError) as error:
        # An absurd shape broadcast from one value; TF's allocation fails the same way.
        raise TensorError(f"cannot hold {count} elements: {type(error).__name__}") from None
    if proto.dtype == wire.DT_BFLOAT16:
        flat = _bfloat16(flat, widen_bfloat16)
    return flat.reshape(shape)


def _from_content(content: bytes, spec: _Spec, count: int) -> np.ndarray:
    """`Helper<T>::Decode`: the raw little-endian buffer must hold exactly `count` elements."""
    if spec.numpy.kind == "O":
        return _decode_string_list(content, count)
    expected = count * spec.numpy.itemsize
    if len(content) != expected:
        raise TensorError(
            f"tensor_content has {len(content)} bytes; {count} {spec.numpy} elements need "
            f"{expected}"
        )
    if spec.numpy == np.bool_:
        return np.frombuffer(content, dtype=np.uint8) != 0
    # frombuffer is a read-only view of the message's bytes; the copy makes it the caller's.
    return np.frombuffer(content, dtype=spec.numpy.newbyteorder("<")).astype(spec.numpy)


# Elements parsed at a time, which bounds the parse's own arrays to a few MB.
_CHUNK = 1 << 16
# A varint32 has at most five bytes (TF's GetVarint32 gives up after the fifth).
_VARINT32_BYTES = 5


def _decode_string_list(content: bytes, count: int) -> np.ndarray:
    """TF's `DecodeStringList`: `count` varint32 lengths, then the bytes, and nothing more.

    The prefixes are parsed with NumPy a chunk of elements at a time, twice (to check them all,
    then to cut the values), so nothing but the result grows with `count`; only the values
    themselves become Python objects, one per element.
    """
    data = np.frombuffer(content, dtype=np.uint8)
    if count > len(data):
        raise TensorError("DT_STRING tensor_content ends inside its length prefixes")
    # First pass: check every prefix and the total; each chunk's first prefix is remembered.
    chunks, pos, total, longest = [], 0, 0, 0
    for first in range(0, count, _CHUNK):
        sizes, after = _varints(data, pos, min(_CHUNK, count - first))
        chunks.append((first, pos, sizes.size))
        total, longest, pos = total + int(sizes.sum()), max(longest, int(sizes.max())), after
    if total != len(content) - pos:
        raise TensorError("DT_STRING tensor_content lengths do not add up to its size")
    values = np.empty(count, dtype=object)
    if not longest:
        values.fill(b"")
        return values
    # Second pass: the same prefixes again, a chunk's values at a time.
    start = pos
    for first, prefix, n in chunks:
        sizes, _ = _varints(data, prefix, n)
        ends = (np.cumsum(sizes) + start).tolist()
        starts = [start, *ends[:-1]]
        values[first : first + n] = [content[a:b] for a, b in zip(starts, ends, strict=True)]
        start = ends[-1]
    return values


def _varints(data: np.ndarray, pos: int, n: int) -> tuple[np.ndarray, int]:
    """`n` varint32s from `data[pos:]`, as TF's GetVarint32 reads them; and the position after."""
    window = data[pos : pos + _VARINT32_BYTES * n]
    ends = np.flatnonzero(window < 0x80)[:n]
    if len(ends) < n:
        raise TensorError("DT_STRING tensor_content ends inside its length prefixes")
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    widths = ends - starts + 1
    if int(widths.max()) > _VARINT32_BYTES:
        raise TensorError("DT_STRING tensor_content has a length prefix over five bytes")
    values = np.zeros(n, dtype=np.int64)
    for k in range(int(widths.max())):
        rows = np.flatnonzero(widths > k)
        values[rows] |= (window[starts[rows] + k].astype(np.int64) & 0x7F) << (7 * k)
    # GetVarint32 accumulates into a uint32: bits past the 32nd are dropped.
    values &= 0xFFFFFFFF
    return values, pos + int(ends[-1]) + 1


def _from_field(proto, spec: _Spec, count: int) -> np.ndarray:
    """`FromProtoField<T>`: extras ignored, a short list padded with its last value, none -> 0."""
    field = getattr(proto, spec.field)
    if spec.numpy.kind == "O":
        # Values past the shape are ignored, so they are not converted either.
        kept = field[:count] if len(field) > count else list(field)
        values = np.empty(len(kept), dtype=object)
        values[:] = kept
    elif spec.field == "half_val":
        # 16-bit patterns stored as int32; TF's static_cast<uint16> keeps the low 16 bits.
        bits = np.asarray(field, dtype=np.int32).astype(np.uint16)
        values = bits if spec.numpy == np.uint16 else bits.view(spec.numpy)
    elif spec.fixed and spec.numpy.kind == "c":
        # Complex values are interleaved (real, imag) pairs; an odd trailing value is ignored.
        parts = np.asarray(field, dtype=spec.numpy.type(0).real.dtype)
        values = parts[: len(parts) // 2 * 2].view(spec.numpy)
    elif spec.field == "int_val":
        # int_val is int32 on the wire; narrower types take C++'s wrapping static_cast.
        values = np.asarray(field, dtype=np.int32).astype(spec.numpy)
    else:
        # upb's repeated fields hand NumPy their buffer: no per-element Python loop.
        values = np.asarray(field, dtype=spec.numpy)
    have = len(values)
    if have == 0:
        empty = b"" if spec.numpy.kind == "O" else 0
        return np.full(count, empty, dtype=spec.numpy)
    if have >= count:
        return values[:count].copy() if have > count else values
    out = np.empty(count, dtype=spec.numpy)
    out[:have] = values
    out[have:] = values[-1]
    return out


def _bfloat16(bits: np.ndarray, widen: bool) -> np.ndarray:
    if widen:
        # bfloat16 is the top half of a float32, so shifting the bits up widens it exactly.
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(_ml_bfloat16())


def _ml_bfloat16() -> np.dtype:
    import ml_dtypes  # TensorFlow's own dependency; only bfloat16 tensors need it

    return np.dtype(ml_dtypes.bfloat16)


def encode(array: ArrayLike, out=None, *, tensor_content: bool = True):
    """Encodes an array as a TensorProto.

    Args:
        array: an array or anything `np.asarray` accepts; `str` elements are sent as UTF-8.
        out: a TensorProto to fill in place (it is cleared first), such as
            `request.inputs[alias]`, which saves copying a large tensor; None makes a new
            `common.wire` TensorProto.
        tensor_content: numeric values as raw little-endian `tensor_content` (what
            `tf.make_tensor_proto` and the client send) instead of the typed `*_val` fields
            (`Tensor::AsProtoField`, TF Serving's default for responses). Strings always go in
            `string_val`.

    Returns:
        `out`, or the new TensorProto.

    Raises:
        TypeError: for a dtype TF has no DataType for, or a string element that is not str or
            bytes.
        ValueError: for `tensor_content` of 2 GiB or more, which protobuf cannot carry.
    """
    array = np.asarray(array)
    proto = wire.TensorProto() if out is None else out
    proto.Clear()
    proto.dtype = data_type(array.dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if proto.dtype == wire.DT_STRING:
        proto.string_val.extend(as_bytes(value) for value in array.ravel().tolist())
        return proto
    if proto.dtype == wire.DT_BFLOAT16:
        flat = np.ascontiguousarray(array).ravel().view(np.uint16)
        spec = _SPECS[wire.DT_BFLOAT16]
    else:
        spec = _SPECS[proto.dtype]
        flat = np.ascontiguousarray(array, dtype=spec.numpy).ravel()
    if tensor_content:
        if flat.nbytes > MAX_CONTENT_BYTES:
            raise ValueError(f"a {flat.nbytes}-byte tensor is over protobuf's 2 GiB limit")
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    if not flat.size:
        return proto
    if spec.fixed:
        # Parsing merges fields, so the packed field's wire bytes land in the message at once.
        proto.MergeFromString(_packed_fixed_field(flat, spec))
        return proto
    if spec.field == "half_val":
        flat = flat.view(np.uint16)
    getattr(proto, spec.field).extend(flat.tolist())
    return proto


def _packed_fixed_field(flat: np.ndarray, spec: _Spec) -> bytes:
    """A packed float/double/complex field as wire bytes: tag, length, raw values.

    Parsing these bytes is far faster than `field.extend(...)`, which boxes every element into a
    Python object. Varint fields gain nothing from a NumPy encoder (it is slower than
    `extend(tolist())`), so they keep the plain path (measurements:
    docs/benchmarks.md#measurements-behind-code-choices).
    """
    payload = flat.astype(spec.numpy.newbyteorder("<"), copy=False).tobytes()
    return _varint(spec.number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def as_bytes(value: object) -> bytes:
    """A string tensor element as bytes: bytes unchanged, str UTF-8 encoded; else TypeError.

    (`bytes(5)` would silently give five zero bytes, so anything else is refused.)
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"string tensors take str or bytes elements, not {type(value).__name__}")
