"""Client-side pre-processing in NumPy and Pillow (no TensorFlow), following the contract.

It reproduces `training.data.preprocess.prepare_image`: Pillow's bilinear filter on float
("F" mode) images widens with the downscale factor exactly as TensorFlow's antialiased bilinear
resize does, so the two agree to within float rounding. A JPEG much larger than the model's
input is decoded at the contract's DCT scale (`common.contract.jpeg_scale`) through Pillow's
`draft`, which runs libjpeg's scaled decoding as TensorFlow's `decode_jpeg(ratio=...)` does.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from common.contract import DEFAULT_MAX_PIXELS, Preprocessing, jpeg_scale

ImageLike = Union[str, Path, bytes, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)


class ImageTooLargeError(ValueError):
    """An image with more pixels than the contract's `max_pixels`, refused before decoding."""


def _budget(max_pixels: int) -> str:
    return f"the client takes at most {max_pixels} pixels (max_pixels of the model contract)"


def check_pixels(size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuses an image of `size` (width, height) with more than `max_pixels` pixels.

    Raises:
        ImageTooLargeError: naming the image's size and the limit.
    """
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; {_budget(max_pixels)}"
        )


def _open(source, max_pixels: int) -> Image.Image:
    """Opens an encoded image lazily: Pillow reads the header, so its size costs nothing."""
    try:
        opened = Image.open(source)
    except Image.DecompressionBombError as error:
        # Pillow's own, far larger limit; its text names the size.
        raise ImageTooLargeError(f"{error} ({_budget(max_pixels)})") from None
    try:
        check_pixels(opened.size, max_pixels)
    except ImageTooLargeError:
        opened.close()
        raise
    return opened


def load_rgb(
    image: ImageLike, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Any supported image input as uint8 `[H, W, channels]`.

    Paths, encoded bytes and PIL images honour their EXIF orientation. NumPy arrays may be gray
    `[H, W]` or `[H, W, 1]`, RGB or RGBA, uint8 or float in [0, 1].

    Args:
        image: the image.
        channels: 1 (gray) or 3 (RGB).
        max_pixels: encoded and PIL images with more pixels are refused before they are
            decoded (the contract's pixel budget, which the server's bytes signature enforces
            too); arrays are already decoded and are not checked.

    Raises:
        ImageTooLargeError: for an image over `max_pixels`.
        ValueError: for an unsupported type, shape or channel count (the message lists the
            supported ones).
    """
    if isinstance(image, (str, Path, bytes, bytearray)):
        source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
        with _open(source, max_pixels) as opened:
            return load_rgb(ImageOps.exif_transpose(opened), channels, max_pixels)
    if isinstance(image, Image.Image):
        check_pixels(image.size, max_pixels)
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


# EXIF orientations that swap width and height (the rotations by 90 degrees).
_SWAPS_SIDES = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def decode(image: ImageLike, pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int]]:
    """An image's pixels for the model, and its own size.

    An encoded JPEG (a path or bytes) is decoded at the contract's DCT scale; everything else
    as `load_rgb` does. EXIF orientation is honoured either way.

    Returns:
        (uint8 `[h, w, pre.channels]`, maybe scaled down; the image's (height, width) as shown,
        which post-processing answers at).

    Raises:
        ImageTooLargeError: for an image over `pre.max_pixels`.
        OSError, ValueError: for an unreadable image.
    """
    if not isinstance(image, (str, Path, bytes, bytearray)):
        array = load_rgb(image, pre.channels, pre.max_pixels)
        return array, array.shape[:2]
    source = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    with _open(source, pre.max_pixels) as opened:
        width, height = opened.size
        if opened.getexif().get(_EXIF_ORIENTATION) in _SWAPS_SIDES:
            own = (width, height)
        else:
            own = (height, width)
        if opened.format == "JPEG":
            scale = jpeg_scale(height, width, pre)
            if scale > 1:
                # Pillow picks the largest scale that keeps at least the requested size, which
                # for floor(side / scale) is exactly `scale`; libjpeg then makes ceil(side / scale).
                opened.draft(opened.mode, (width // scale, height // scale))
        array = load_rgb(ImageOps.exif_transpose(opened), pre.channels, pre.max_pixels)
    return array, own


def prepare_image(image: ImageLike, pre: Preprocessing) -> np.ndarray:
    """The model input for one image: float32 `[height, width, channels]` per the contract."""
    array, _ = decode(image, pre)
    return resize_for_model(array, pre)


def resize_for_model(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Decoded uint8 pixels `[h, w, C]` to the model input, float32 `[height, width, C]`."""
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
