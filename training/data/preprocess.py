"""The training pipeline's image pre-processing, driven by the model's serving contract.

The export's in-graph bytes signature calls these same functions, and the client reproduces them
in NumPy; a skew test holds the three together.
"""

from __future__ import annotations

import tensorflow as tf

from common.contract import Preprocessing


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
