"""Post-processing of model answers back to each image's own size and pixel coordinates."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def resize_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """A `[h, w]` or `[h, w, 1]` probability map bilinearly resized to `[height, width]`.

    The probabilities are resized first and thresholded afterwards: thresholding first and
    resizing a binary mask would give blocky edges at the original resolution.
    """
    plane = np.asarray(probabilities, np.float32).reshape(probabilities.shape[:2])
    if plane.shape == (height, width):
        return plane.copy()
    resized = Image.fromarray(plane, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


# Above this share of input cells on the mask's edge (a car's is 1-3 %), interpolating them one
# by one costs more than Pillow's 8-bit resize of the whole map (about 5 ms at 1918x1280).
_MOST_MIXED = 0.03


def _bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two input indices and the second one's weight.

    Pillow's bilinear upscaling: output pixel centres at `(i + 0.5) * size_in / size_out - 0.5`
    in input coordinates, clamped to the edge pixels beyond the first and last centre.
    """
    centre = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    low = np.floor(centre).astype(np.int64)
    weight = centre - low
    before, after = low < 0, low >= size_in - 1
    low[before], weight[before] = 0, 0.0
    low[after], weight[after] = size_in - 1, 0.0
    return low, np.minimum(low + 1, size_in - 1), weight


def mask_at_size(
    probabilities: np.ndarray, height: int, width: int, level: float = 0.5
) -> np.ndarray:
    """The boolean mask at `[height, width]` of a low-resolution probability map.

    The same mask as thresholding `resize_probabilities` at `level`, without resizing floats at
    the photo's size. Between four neighbouring map values, bilinear interpolation stays within
    their minimum and maximum: where all four are on one side of `level`, so is every output
    pixel between them, which a repeat of the low-resolution answer fills in. Only the pixels
    between neighbours on both sides (along the mask's edge) are interpolated.

    Shrinking (an output side smaller than the map's), which Pillow antialiases, takes the
    float path. A map whose edge is long (a noisy answer, not a car) is resized as 8-bit levels
    instead, moved first by an affine step that puts `level` on the boundary between two levels
    (bilinear resizing commutes with it); that mask differs only where a probability is within
    about one level (under 2/255) of `level` (Dice 0.9999 on the benchmark photo).
    """
    plane = np.asarray(probabilities, np.float64).reshape(probabilities.shape[:2])
    if plane.shape == (height, width):
        return plane >= level
    if height < plane.shape[0] or width < plane.shape[1]:
        return threshold(resize_probabilities(plane, height, width), level)
    rows_low, rows_high, rows_weight = _bilinear_axis(plane.shape[0], height)
    cols_low, cols_high, cols_weight = _bilinear_axis(plane.shape[1], width)
    # Each input cell (its pixel and the next one down and to the right) against the level.
    down = np.minimum(np.arange(plane.shape[0]) + 1, plane.shape[0] - 1)
    right = np.minimum(np.arange(plane.shape[1]) + 1, plane.shape[1] - 1)
    corners = (plane, plane[down], plane[:, right], plane[down][:, right])
    above = np.minimum.reduce(corners) >= level
    mixed = ~above & (np.maximum.reduce(corners) >= level)
    if mixed.mean() > _MOST_MIXED:
        return _mask_from_levels(plane, height, width, level)
    # Output pixels per cell along each axis, and where each cell's pixels start.
    row_count = np.bincount(rows_low, minlength=plane.shape[0])
    col_count = np.bincount(cols_low, minlength=plane.shape[1])
    mask = np.repeat(np.repeat(above, row_count, axis=0), col_count, axis=1)
    cell_rows, cell_cols = np.nonzero(mixed)
    if cell_rows.size:
        heights, widths = row_count[cell_rows], col_count[cell_cols]
        sizes = heights * widths
        # Every output pixel of the mixed cells: its offset inside its cell, then its place.
        inside = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        per_row = np.repeat(widths, sizes)
        rows = np.repeat(np.cumsum(row_count)[cell_rows] - heights, sizes) + inside // per_row
        cols = np.repeat(np.cumsum(col_count)[cell_cols] - widths, sizes) + inside % per_row
        y0, y1, wy = rows_low[rows], rows_high[rows], rows_weight[rows]
        x0, x1, wx = cols_low[cols], cols_high[cols], cols_weight[cols]
        top = plane[y0, x0] * (1.0 - wx) + plane[y0, x1] * wx
        bottom = plane[y1, x0] * (1.0 - wx) + plane[y1, x1] * wx
        mask[rows, cols] = top * (1.0 - wy) + bottom * wy >= level
    return mask


def _mask_from_levels(plane: np.ndarray, height: int, width: int, level: float) -> np.ndarray:
    scale = 0.5 / max(level, 1.0 - level)
    shifted = 0.5 + (np.clip(plane, 0.0, 1.0) - level) * scale
    # 0.5 maps to 127.5, which rounds (half to even) to 128: the mask is `levels >= 128`.
    levels = np.rint(shifted * 255.0).astype(np.uint8)
    resized = Image.fromarray(levels).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= np.uint8(128)


def png_levels(data: bytes) -> np.ndarray:
    """The 8-bit grey levels `[H, W]` of a PNG a model answered with."""
    if isinstance(data, np.ndarray):
        data = data.item()
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG" or image.mode != "L":
            raise ValueError(f"expected an 8-bit grey PNG, got {image.format} {image.mode}")
        return np.asarray(image)


def threshold(probabilities: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The boolean mask where the probability is at least `level`."""
    return np.asarray(probabilities) >= level


def box_to_pixels(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """A normalised (centre x, centre y, h, w) box as clipped pixel corners.

    Returns:
        (x_min, y_min, x_max, y_max), inclusive, inside the image.
    """
    cx, cy, h, w = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    x_min, x_max = (cx - w / 2) * width, (cx + w / 2) * width
    y_min, y_max = (cy - h / 2) * height, (cy + h / 2) * height

    def clip(value: float, limit: int) -> int:
        return int(min(max(round(value), 0), limit - 1))

    return clip(x_min, width), clip(y_min, height), clip(x_max, width), clip(y_max, height)


def to_uint8_images(images: np.ndarray) -> np.ndarray:
    """Generator output as uint8 `[N, H, W, C]` (it already is; floats are scaled defensively)."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array
    # A float generator answer in [-1, 1] (tanh): map to 0..255 as the export does.
    return np.round((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
