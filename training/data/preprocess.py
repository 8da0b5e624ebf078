"""The training pipeline's image pre-processing, driven by the model's serving contract.

The export's in-graph bytes signature calls these same functions, and the client reproduces them
in NumPy; a skew test holds the three together.
"""

from __future__ import annotations

import tensorflow as tf

from common.contract import JPEG_SCALES, Preprocessing


def prepare_image(image: tf.Tensor, pre: Preprocessing) -> tf.Tensor:
    """Maps a uint8 image `[H, W, C]` or batch `[N, H, W, C]` to the model's float32 input.

    Gray images gain channels and RGBA images lose alpha to match `pre.channels`.
    """
    image = tf.convert_to_tensor(image)
    image = _match_channels(image, pre.channels)
    image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, pre.size, method=pre.resize_method, antialias=pre.antialias)
    # Antialiased resizing can overshoot slightly; keep the input in the uint8 range.
    image = tf.clip_by_value(image, 0.0, 255.0)
    return image * pre.scale + pre.offset


def decode_image(data: tf.Tensor, pre: Preprocessing) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) the contract's way.

    A JPEG is decoded at the contract's DCT scale (`common.contract.jpeg_scale`, here in graph
    ops on the size its header declares); other formats at full size.

    Returns:
        (uint8 `[h, w, pre.channels]`, maybe scaled down; int32 `[2]` the image's own height and
        width, which answers at the original size need).
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(data)
        scale = _jpeg_scale(shape[0], shape[1], pre)
        # `ratio` is an attribute of the op, so each scale is a branch of its own.
        branches = [
            lambda ratio=ratio: tf.io.decode_jpeg(data, channels=pre.channels, ratio=ratio)
            for ratio in JPEG_SCALES
        ]
        index = tf.argmax(tf.equal(tf.constant(JPEG_SCALES), scale), output_type=tf.int32)
        return tf.switch_case(index, branches), shape[:2]

    def other():
        image = tf.io.decode_image(data, channels=pre.channels, expand_animations=False)
        return image, tf.shape(image)[:2]

    image, size = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, pre.channels])
    return image, size


def _jpeg_scale(height: tf.Tensor, width: tf.Tensor, pre: Preprocessing) -> tf.Tensor:
    """`common.contract.jpeg_scale` in graph ops (a test holds the two to one answer)."""
    if pre.jpeg_margin <= 0:
        return tf.constant(1)
    need_h = tf.cast(tf.math.ceil(pre.jpeg_margin * pre.size[0]), tf.int32)
    need_w = tf.cast(tf.math.ceil(pre.jpeg_margin * pre.size[1]), tf.int32)
    chosen = tf.constant(1)
    # From the smallest reduction up, so the largest one that still fits wins.
    for scale in reversed(JPEG_SCALES):
        fits = (-(-height // scale) >= need_h) & (-(-width // scale) >= need_w)
        chosen = tf.where(fits, tf.constant(scale), chosen)
    return chosen


def prepare_mask(mask: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Maps a mask `[H, W]` or `[H, W, 1]` (any non-zero value is foreground) to {0,1} float32
    `[size, size, 1]`, resizing the same way as the image and thresholding at one half."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank == 2:
        mask = mask[..., tf.newaxis]
    mask = tf.cast(mask > 0, tf.float32)
    mask = tf.image.resize(mask, size, method="bilinear", antialias=True)
    return tf.cast(mask >= 0.5, tf.float32)


def _match_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 4:
        image = image[..., :3]
        have = 3
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")
