"""The in-graph pixel budget: image sizes read from headers, refused before decoding.

Every check is one image's alone, so a request's answer does not depend on the requests a
server batches it with; the request's total is the server's (`serving.servables.pixels`).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.contract import (
    DEFAULT_MAX_JPEG_SCANS,
    DEFAULT_MAX_PIXELS,
    localizer_contract,
    pads_outputs,
    unet_contract,
)
from export.models.images import decode_images
from export.models.pixels import GIF_BLOCK_LIMIT, GIF_SUB_BLOCK_LIMIT, image_size

BUDGET_TEXT = (
    f"serve_bytes takes at most {DEFAULT_MAX_PIXELS} pixels per image "
    "(max_pixels of the model contract)"
)
SIDE_TEXT = (
    "serve_bytes pads every output to the largest image, so it takes at most 4096 pixels a "
    "side (max_pixels of the model contract)"
)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def size_of():
    read = tf.function(image_size, input_signature=[tf.TensorSpec([], tf.string)])
    return lambda data: read(tf.constant(data)).numpy().tolist()


@pytest.fixture(scope="module")
def decode():
    contract = unet_contract(16)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(image_bytes):
        return decode_images(image_bytes, contract, padded=True)[1]

    def call(*images):
        return run(tf.constant(list(images))).numpy().tolist()

    call(encode(noise(4, 4), "PNG"))  # traced here, so tests time only the run
    return call


def repeat_last_scan(data: bytes, times: int) -> bytes:
    """A progressive JPEG with its last scan repeated: libjpeg warns of a bogus progression
    but reads every repeat, each one a pass over all the image's coefficients. A flat image's
    refinement scan is a few bytes, so thousands of scans fit in tens of kilobytes."""
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[data.rindex(b"\xff\xda") : end] * times + data[end:]


def refusal(decode, *images) -> str:
    """The assertion's text of a refused request."""
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        decode(*images)
    message = caught.value.message
    start = message.index("assertion failed: [") + len("assertion failed: [")
    return message[start : message.index("]", start)]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_sizes_come_from_the_header(size_of, fmt):
    data = encode(noise(37, 53), fmt)
    # width, height, frames, pixels, problem, scans (a baseline JPEG has one)
    assert size_of(data) == [53, 37, 1, 53 * 37, 0, int(fmt == "JPEG")]


def test_bmp_heights_may_be_negative(size_of):
    data = bytearray(encode(noise(37, 53), "BMP"))
    data[22:26] = (-37).to_bytes(4, "little", signed=True)
    assert size_of(bytes(data))[:4] == [53, 37, 1, 53 * 37]


def test_gif_frames_count_not_the_logical_screen(size_of):
    # TensorFlow decodes a GIF at its largest frame's size, whatever the screen says.
    data = bytearray(encode(Image.new("P", (300, 200)), "GIF"))
    data[6:10] = b"\x01\x00\x01\x00"
    assert size_of(bytes(data))[:4] == [300, 200, 1, 60_000]
    frames = [Image.new("RGB", (100, 80), (40 * i, 0, 0)) for i in range(5)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert size_of(animated)[:4] == [100, 80, 5, 5 * 100 * 80]


def test_a_huge_declared_image_is_refused_before_decoding(decode):
    data = encode(Image.new("RGB", (6000, 6000)), "PNG")
    assert refusal(decode, data) == f"image 0 is 6000x6000 = 36000000 pixels; {BUDGET_TEXT}"
    # The signature and IHDR chunk (33 bytes) declare 6000x6000; what follows is no PNG data at
    # all. Decoding it would fail with libpng's error, so only a refusal read from the header
    # alone, before any decoding, can answer with the pixel budget.
    header_only = data[:33] + b"\x00\x00\x00\x04IDAT garbage, not zlib" * 4
    assert refusal(decode, header_only) == f"image 0 is 6000x6000 = 36000000 pixels; {BUDGET_TEXT}"


def test_every_format_is_checked(decode):
    big = Image.new("RGB", (4200, 4000))
    assert refusal(decode, encode(big, "JPEG")).startswith("image 0 is 4200x4000 = 16800000")
    assert refusal(decode, encode(big, "PNG")).endswith(BUDGET_TEXT)
    bmp = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
    bmp[18:26] = (5000).to_bytes(4, "little") + (-5000).to_bytes(4, "little", signed=True)
    assert refusal(decode, bytes(bmp)).startswith("image 0 is 5000x5000 = 25000000 pixels")
    gif = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    descriptor = gif.index(0x2C, 13)
    gif[descriptor + 5 : descriptor + 9] = b"\x10\x27\x10\x27"  # a 10000x10000 frame
    assert refusal(decode, bytes(gif)).startswith("image 0 is 10000x10000 = 100000000 pixels")
    frames = [Image.new("P", (1000, 1000), color) for color in range(20)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert refusal(decode, animated) == (
        f"image 0 is a GIF of 20 frames up to 1000x1000, 20000000 pixels to decode; {BUDGET_TEXT}"
    )


def test_each_image_is_checked_alone_so_batching_changes_nothing(decode):
    # Two 3000x3000 images are 18 Mpx together: the request total is the server's to refuse,
    # since a graph run by a batching server sees the images of several requests at once.
    three = encode(Image.new("RGB", (3000, 3000)), "PNG")
    small = encode(noise(20, 90), "PNG")
    assert decode(three, three, small) == decode(three) + decode(three) + decode(small)


def test_padded_outputs_bound_each_side(decode):
    # unet's serve_bytes pads every mask to the batch's largest height and width: with each
    # side within 4096, a padded mask is within the budget whatever its batch-mates are.
    tall = encode(Image.new("RGB", (1, 4097)), "PNG")
    assert refusal(decode, tall) == f"image 0 is 1x4097; {SIDE_TEXT}"
    wide = encode(Image.new("RGB", (4096, 1)), "PNG")
    assert decode(wide, encode(Image.new("RGB", (1, 4096)), "PNG")) == [[1, 4096], [4096, 1]]


def test_the_padded_signatures_are_the_contracts():
    # `pads_outputs` is what the server reads; the unet's serve_bytes is the one that pads.
    padding = [
        (contract.model_name, sig.name)
        for contract in (unet_contract(16), localizer_contract(16))
        for sig in contract.signatures
        if pads_outputs(sig)
    ]
    assert padding == [("unet", "serve_bytes")]


def test_a_progressive_jpeg_may_have_a_bounded_number_of_scans(size_of, decode):
    progressive = encode(noise(37, 53), "JPEG", progressive=True)
    assert progressive.count(b"\xff\xda") == 10
    assert decode(progressive) == [[37, 53]]
    crafted = repeat_last_scan(progressive, DEFAULT_MAX_JPEG_SCANS - 10)
    assert decode(crafted) == [[37, 53]]
    crafted = repeat_last_scan(progressive, DEFAULT_MAX_JPEG_SCANS - 9)
    assert refusal(decode, crafted) == (
        f"image 0 is a JPEG of {DEFAULT_MAX_JPEG_SCANS + 1} scans; serve_bytes takes at most "
        f"{DEFAULT_MAX_JPEG_SCANS} (libjpeg passes over the whole image once a scan)"
    )


def test_thousands_of_scans_are_refused_before_decoding(decode):
    # 60 KB that libjpeg took 11 s to decode (2000 scans of a 2048x2048 image).
    flat = encode(Image.new("RGB", (2048, 2048), (90, 20, 200)), "JPEG", progressive=True)
    crafted = repeat_last_scan(flat, 2000)
    assert len(crafted) < 100_000
    start = time.perf_counter()
    assert refusal(decode, crafted).startswith("image 0 is a JPEG of 2010 scans; ")
    assert time.perf_counter() - start < 5.0  # milliseconds on an idle machine


@pytest.mark.parametrize(
    "data, text",
    [
        (encode(noise(4, 4), "PNG")[:20], "image 0 is truncated before its size in the header"),
        (b"GIF89a\x01\x00", "image 0 is truncated before its size in the header"),
        (b"BM" + bytes(10), "image 0 is truncated before its size in the header"),
        (
            encode(noise(4, 4), "PNG")[:12] + b"tEXt" + encode(noise(4, 4), "PNG")[16:],
            "image 0 is a PNG whose first chunk is not IHDR",
        ),
        (
            encode(noise(4, 4), "WEBP"),
            "image 0 is not a JPEG, PNG, GIF or BMP image; serve_bytes reads their size "
            "before decoding and takes no other format",
        ),
        (
            b"",
            "image 0 is not a JPEG, PNG, GIF or BMP image; serve_bytes reads their size "
            "before decoding and takes no other format",
        ),
    ],
    ids=["png", "gif", "bmp", "no-ihdr", "webp", "empty"],
)
def test_bad_headers_are_a_clear_invalid_argument(decode, data, text):
    assert refusal(decode, data) == text


def test_a_broken_jpeg_header_is_tensorflows_invalid_argument(decode):
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid JPEG data, size 11"):
        decode(b"\xff\xd8\xff\xe0garbage")


def test_gif_walks_are_bounded(decode):
    small = encode(Image.new("P", (4, 4)), "GIF")
    table_end = 13 + 3 * 2 ** ((small[10] & 7) + 1)
    # Thousands of empty comment extensions: no pixels, but a walk of one block each.
    spam = small[:table_end] + b"\x21\xfe\x00" * (GIF_BLOCK_LIMIT + 10) + small[table_end:]
    start = time.perf_counter()
    assert refusal(decode, spam) == (
        f"image 0 is a GIF of more than {GIF_BLOCK_LIMIT} blocks or {GIF_SUB_BLOCK_LIMIT} "
        "data sub-blocks; serve_bytes reads at most that many before decoding"
    )
    assert time.perf_counter() - start < 20.0  # about half a second on an idle machine


def test_images_within_the_budget_decode_as_before(decode):
    assert decode(encode(noise(37, 53), "PNG"), encode(noise(20, 90), "JPEG")) == [
        [37, 53],
        [20, 90],
    ]
