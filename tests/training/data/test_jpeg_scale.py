"""One DCT-scale rule for JPEGs in the contract, the training pipeline/bytes signature and the
client; at 1/4 and 1/8 Pillow's and TensorFlow's libjpeg give the very same pixels."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from client.images import preprocess as client_pre
from common.contract import Preprocessing, jpeg_scale
from tests.known_models import tf
from training.data.preprocess import _jpeg_scale, decode_image, prepare_image


def _jpeg(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    # Smooth colour fields plus detail: a photograph-like image, not noise.
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=-1)
    image = (127.5 + 100 * image + rng.normal(0, 8, image.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_the_rule_in_graph_ops_equals_the_contract():
    sizes = [1, 15, 16, 63, 64, 127, 128, 255, 256, 257, 500, 511, 512, 513, 1023, 1280, 1918]
    for side, margin in itertools.product((32, 64, 128), (0.0, 1.0, 1.5, 2.0, 3.0)):
        pre = Preprocessing(size=(side, side), jpeg_margin=margin)
        expected = [[jpeg_scale(h, w, pre) for w in sizes] for h in sizes]
        heights, widths = np.meshgrid(sizes, sizes, indexing="ij")
        got = _jpeg_scale(tf.constant(heights, tf.int32), tf.constant(widths, tf.int32), pre)
        np.testing.assert_array_equal(np.broadcast_to(got.numpy(), heights.shape), expected)


def test_carvana_size_decodes_at_an_eighth():
    pre = Preprocessing(size=(128, 128))
    assert jpeg_scale(1280, 1918, pre) == 8  # 240x160 keeps 128 on both sides
    assert jpeg_scale(1280, 1918, Preprocessing(size=(128, 128), jpeg_margin=2.0)) == 4
    assert jpeg_scale(1280, 1918, Preprocessing(size=(512, 512))) == 2
    assert jpeg_scale(1280, 1918, Preprocessing(size=(1024, 1024))) == 1
    assert jpeg_scale(1280, 1918, Preprocessing(size=(128, 128), jpeg_margin=0)) == 1


@pytest.mark.parametrize(
    "height, width, side", [(1280, 1918, 128), (1001, 777, 64), (1280, 1918, 64), (300, 200, 64)]
)
def test_client_and_graph_decode_the_same_pixels_at_reduced_scale(height, width, side):
    pre = Preprocessing(size=(side, side))
    data = _jpeg(height, width)
    scale = jpeg_scale(height, width, pre)
    ours, own = client_pre.decode(data, pre)
    theirs, size = decode_image(tf.constant(data), pre)
    assert own == (height, width) and tuple(size.numpy()) == (height, width)
    assert ours.shape == tuple(theirs.shape) == (-(-height // scale), -(-width // scale), 3)
    if scale >= 4:
        # libjpeg's reduced IDCT: Pillow and TensorFlow agree to the bit.
        np.testing.assert_array_equal(ours, theirs.numpy())
        prepared = client_pre.resize_for_model(ours, pre)
        np.testing.assert_allclose(prepared, prepare_image(theirs, pre).numpy(), atol=1e-5)
    else:
        # At 1/1 and 1/2 their chroma upsampling differs slightly, as before this rule.
        assert np.abs(ours.astype(int) - theirs.numpy().astype(int)).max() <= 8


def test_exif_rotation_swaps_the_reported_size():
    pre = Preprocessing(size=(64, 64))
    image = Image.open(io.BytesIO(_jpeg(400, 600)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    pixels, own = client_pre.decode(buffer.getvalue(), pre)
    assert own == (600, 400)
    scale = jpeg_scale(400, 600, pre)  # from the stored size, as the graph reads the header
    assert scale == 4
    assert pixels.shape[:2] == (600 // scale, 400 // scale)  # decoded at 1/4, then turned
