"""The pixel budget of `serve_bytes`, enforced in the graph for each image before it is decoded.

TensorFlow's decoders allocate what an image's header declares: a 34 KB PNG that says
6000x6000 costs hundreds of megabytes, and `decode_image` accepts up to 2^29 pixels. The
budget lives in the SavedModel itself, so TF Serving running the same model is protected too.
Sizes come from the headers: JPEG through `tf.image.extract_jpeg_shape`; PNG from IHDR
(big-endian width and height at bytes 16..24); BMP from little-endian int32 width and height
at bytes 18..26 (a negative height means top-down rows); GIF from every frame's image
descriptor, because TF's GIF decoder reads all frames into buffers of their own declared size
and answers at the largest frame's size, whatever the logical screen (bytes 6..10) says.
Other formats TF could decode (WebP, JPEG XL) are refused: their size is not checked here.
A JPEG's scans are counted too: libjpeg passes over every coefficient once a scan, so a few
kilobytes of repeated progressive scans cost seconds of CPU.

Every check here is one image's alone (`Preprocessing` in `common.contract` states the rule):
a graph run by a batching server sees several requests' images at once, and must not let one
request fail another. The request's total is the server's (`serving.servables.pixels`).
"""

from __future__ import annotations

import tensorflow as tf

from common.contract import Preprocessing, pixel_refusals

_HEAD = 32
# Problems a header can have; 0 is none.
_OK, _TRUNCATED, _MALFORMED, _UNKNOWN, _TOO_MANY_BLOCKS, _TOO_LARGE, _TOO_WIDE, _TOO_MANY_SCANS = (
    range(8)
)
# What a GIF walk reads at most, since every step costs microseconds in a graph loop (the
# limits bound it to about a second): blocks (a frame is two or three: its control extension,
# its descriptor) and data sub-blocks (of 255 bytes: a 2^24-pixel GIF of noise needs 100,000).
GIF_BLOCK_LIMIT = 2**12
GIF_SUB_BLOCK_LIMIT = 2**17
# Sub-blocks skipped per loop iteration: unrolling spreads the loop's own cost over several.
_UNROLL = 8
_SIGNATURES = (  # (format, leading bytes), checked in this order
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("gif", b"GIF8"),
    ("bmp", b"BM"),
)


def _unsigned(head: tf.Tensor, start: int, size: int, big_endian: bool = False) -> tf.Tensor:
    order = range(start, start + size) if big_endian else range(start + size - 1, start - 1, -1)
    value = tf.constant(0, tf.int64)
    for index in order:
        value = value * 256 + head[index]
    return value


def _color_table(packed: tf.Tensor) -> tf.Tensor:
    """Bytes of a GIF colour table whose flags byte is `packed` (3 * 2^(n+1) if present)."""
    size = 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8)
    return tf.where(packed >= 128, size, tf.constant(0, tf.int64))


def _gif(data: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """(width, height, frames, pixels, problem) of a GIF, walking its blocks like giflib."""
    body = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    last = tf.maximum(length - 1, 0)

    def byte(pos):
        pos = tf.convert_to_tensor(pos, tf.int64)
        return tf.gather(body, tf.clip_by_value(pos, tf.constant(0, tf.int64), last))

    def skip_sub_blocks(pos, hops):
        # Data sub-blocks: a length byte, then that many bytes, until a zero length.
        def skip(pos, hops, going):
            for _ in range(_UNROLL):
                size = byte(pos)
                going = going & (size > 0) & (pos < length)
                pos = tf.where(going, pos + 1 + size, pos)
            return pos, hops + _UNROLL, going

        pos, hops, _ = tf.while_loop(
            lambda pos, hops, going: going & (hops < GIF_SUB_BLOCK_LIMIT),
            skip,
            (pos, hops, tf.constant(True)),
        )
        return pos, hops

    def step(pos, blocks, hops, frames, total, width, height, done):
        kind = byte(pos)
        image = kind == 0x2C
        w = byte(pos + 5) + 256 * byte(pos + 6)
        h = byte(pos + 7) + 256 * byte(pos + 8)
        # An image descriptor: 10 bytes, a local colour table, the LZW code size byte.
        start = tf.where(image, pos + 11 + _color_table(byte(pos + 9)), pos + 2)
        after, hops = skip_sub_blocks(start, hops)
        count = tf.cast(image, tf.int64)
        # Anything but an extension or an image (the trailer, or garbage giflib rejects)
        # ends the walk: giflib decodes no frame after it.
        return (
            after + 1,
            blocks + 1,
            hops,
            frames + count,
            total + count * w * h,
            tf.maximum(width, count * w),
            tf.maximum(height, count * h),
            tf.logical_not(image | (kind == 0x21)),
        )

    def more(pos, blocks, hops, frames, total, width, height, done):
        return (
            (pos < length)
            & tf.logical_not(done)
            & (blocks < GIF_BLOCK_LIMIT)
            & (hops < GIF_SUB_BLOCK_LIMIT)
        )

    zero = tf.constant(0, tf.int64)
    start = 13 + _color_table(byte(10))

    pos, _, _, frames, total, width, height, done = tf.while_loop(
        more, step, (start, zero, zero, zero, zero, zero, zero, tf.constant(False))
    )
    # A walk cut short by a limit has not seen every frame.
    cut = tf.logical_not(done) & (pos < length)
    problem = tf.where(length < 13, _TRUNCATED, tf.where(cut, _TOO_MANY_BLOCKS, _OK))
    # The rasters of all frames, or the output at the largest frame's size, whichever is more.
    pixels = tf.maximum(total, width * height)
    return tf.stack([width, height, frames, pixels, tf.cast(problem, tf.int64), zero])


def image_size(data: tf.Tensor) -> tf.Tensor:
    """What an encoded image's header declares, read without decoding it.

    Args:
        data: one encoded image (a scalar string).

    Returns:
        int64 [6]: width, height, frames, pixels to decode, a problem code (0 for none) and
        a JPEG's scans (0 for other formats).

    Raises:
        InvalidArgumentError: (when run) from `extract_jpeg_shape` for a broken JPEG header.
    """
    length = tf.cast(tf.strings.length(data), tf.int64)
    padded = tf.strings.join([tf.strings.substr(data, 0, _HEAD), b"\0" * _HEAD])
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, _HEAD), tf.uint8), tf.int64)

    def starts_with(signature: bytes) -> tf.Tensor:
        matches = [head[i] == byte for i, byte in enumerate(signature)]
        return tf.reduce_all(tf.stack(matches)) & (length >= len(signature))

    def result(width, height, problem, frames=1, scans=0):
        values = [width, height, frames, width * height, problem, scans]
        return tf.stack([tf.cast(value, tf.int64) for value in values])

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data, output_type=tf.int64)
        return result(shape[1], shape[0], _OK, scans=_jpeg_scans(data))

    def png():
        problem = tf.where(
            length < 24,
            _TRUNCATED,
            # libpng insists on IHDR as the first chunk.
            tf.where(tf.strings.substr(padded, 12, 4) == b"IHDR", _OK, _MALFORMED),
        )
        return result(_unsigned(head, 16, 4, True), _unsigned(head, 20, 4, True), problem)

    def bmp():
        def signed(start):
            value = _unsigned(head, start, 4)
            return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

        problem = tf.where(length < 26, _TRUNCATED, _OK)
        return result(signed(18), signed(22), problem)

    branches = {"jpeg": jpeg, "png": png, "gif": lambda: _gif(data, length), "bmp": bmp}
    index = tf.constant(len(_SIGNATURES), tf.int32)
    for position, (_, signature) in reversed(list(enumerate(_SIGNATURES))):
        index = tf.where(starts_with(signature), position, index)
    functions = [branches[name] for name, _ in _SIGNATURES]
    return tf.switch_case(index, [*functions, lambda: result(0, 0, _UNKNOWN, 0)])


def _jpeg_scans(data: tf.Tensor) -> tf.Tensor:
    """The SOS markers (FF DA) in a JPEG: one a scan.

    Entropy-coded data never holds them (an FF there is followed by 00 or a restart marker),
    so only a segment's payload (EXIF, a comment) can add one that is not a scan: a count
    that is never short, found in one vectorised pass.
    """
    body = tf.io.decode_raw(data, tf.uint8)
    pairs = (body[:-1] == 0xFF) & (body[1:] == 0xDA)
    return tf.reduce_sum(tf.cast(pairs, tf.int64))


def check_image(
    data: tf.Tensor, index: tf.Tensor, pre: Preprocessing, *, padded: bool = False
) -> tf.Tensor:
    """Reads one image's header and fails unless the image alone is within the contract.

    Args:
        data: one encoded image (a scalar string).
        index: its position in the request, for the message.
        pre: the contract's pre-processing (`max_pixels`, `max_side`, `max_jpeg_scans`).
        padded: the signature pads every output to the largest image (the unet's masks), so
            each side is bounded too.

    Returns:
        int64 [6] as `image_size`, once the check has passed.

    Raises:
        InvalidArgumentError: (when run) naming the image, its size and the limit, or why its
            header cannot be read.
    """
    budget, side, max_scans = pre.max_pixels, pre.max_side, pre.max_jpeg_scans
    size = image_size(data)
    width, height, frames, pixels, problem, scans = tf.unstack(size)
    over = [
        (pixels > budget, _TOO_LARGE),
        ((width > side) | (height > side) if padded else tf.constant(False), _TOO_WIDE),
        (scans > max_scans, _TOO_MANY_SCANS),
    ]
    for condition, code in over:  # the first that holds is the one reported
        problem = tf.where((problem == _OK) & condition, tf.constant(code, tf.int64), problem)
    # The graph can't know its signature's name: every bytes signature says serve_bytes.
    refusals = pixel_refusals("serve_bytes", pre)
    # One message per problem code, then the animated GIF's (all its frames are decoded).
    messages = [
        ("", []),
        ("image {} is truncated before its size in the header", [index]),
        ("image {} is a PNG whose first chunk is not IHDR", [index]),
        (
            "image {} is not a JPEG, PNG, GIF or BMP image; serve_bytes reads their size "
            "before decoding and takes no other format",
            [index],
        ),
        (
            f"image {{}} is a GIF of more than {GIF_BLOCK_LIMIT} blocks or "
            f"{GIF_SUB_BLOCK_LIMIT} data sub-blocks; serve_bytes reads at most that many "
            "before decoding",
            [index],
        ),
        (refusals["pixels"], [index, width, height, pixels]),
        (refusals["side"], [index, width, height]),
        (refusals["scans"], [index, scans]),
        (refusals["frames"], [index, frames, width, height, pixels]),
    ]
    texts = tf.stack([tf.strings.format(text, args) for text, args in messages])
    animated = tf.constant(len(messages) - 1, tf.int64)
    choice = tf.where((problem == _TOO_LARGE) & (frames > 1), animated, problem)
    check = tf.debugging.Assert(problem == _OK, [tf.gather(texts, choice)])
    with tf.control_dependencies([check]):
        return tf.identity(size)
