"""Client-side pre-processing in NumPy and Pillow (no TensorFlow), following the contract.

It reproduces `training.data.preprocess.prepare_image`: Pillow's bilinear filter on float
("F" mode) images widens with the downscale factor exactly as TensorFlow's antialiased bilinear
resize does, so the two agree to within float rounding.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from common.contract import Preprocessing

ImageLike = Union[str, Path, bytes, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)


def load_rgb(image: ImageLike, channels: int = 3) -> np.ndarray:
    """Any supported image input as uint8 `[H, W, channels]`.

    Paths, encoded bytes and PIL images honour their EXIF orientation. NumPy arrays may be gray
    `[H, W]` or `[H, W, 1]`, RGB or RGBA, uint8 or float in [0, 1].

    Raises:
        ValueError: for an unsupported type, shape or channel count (the message lists the
            supported ones).
    """
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return load_rgb(ImageOps.exif_transpose(opened), channels)
    if isinstance(image, (bytes, bytearray)):
        with Image.open(io.BytesIO(image)) as opened:
            return load_rgb(ImageOps.exif_transpose(opened), channels)
    if isinstance(image, Image.Image):
        mode = "L" if channels == 1 else "RGB"
        return _with_channels(np.asarray(image.convert(mode)), channels)
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"unsupported array dtype {array.dtype}; use uint8 or float")
            array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
        return _with_channels(array, channels)
    raise ValueError(
        f"unsupported image type {type(image).__name__}; use a path, encoded bytes, a PIL "
        "image or a NumPy array"
    )


def _with_channels(array: np.ndarray, channels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"unsupported image shape {array.shape}; use [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]"
        )
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.shape[-1] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    gray = array.astype(np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    return np.round(gray)[..., np.newaxis].astype(np.uint8)


def prepare_image(image: ImageLike, pre: Preprocessing) -> np.ndarray:
    """The model input for one image: float32 `[height, width, channels]` per the contract."""
    array = load_rgb(image, pre.channels)
    if pre.resize_method != "bilinear" or not pre.antialias:
        raise ValueError(
            f"client pre-processing supports antialiased bilinear resizing, not "
            f"{pre.resize_method!r} (antialias={pre.antialias})"
        )
    height, width = pre.size
    planes = [
        np.asarray(
            Image.fromarray(array[..., c].astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(array.shape[-1])
    ]
    resized = np.clip(np.stack(planes, axis=-1), 0.0, 255.0)
    return (resized * pre.scale + pre.offset).astype(np.float32)
