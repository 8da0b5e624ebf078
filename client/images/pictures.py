"""Pillow pictures of the client's answers: mask overlays, instances, boxes and sample grids.

Example:
    >>> import numpy as np
    >>> from client.images.pictures import overlay_mask
    >>> image = np.zeros((32, 48, 3), np.uint8)
    >>> mask = np.zeros((32, 48), bool)
    >>> mask[8:24, 8:40] = True
    >>> overlay_mask(image, mask).size
    (48, 32)
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from client.images.preprocess import ImageLike, load_rgb

Color = tuple[int, int, int]

# Box pictures of small model inputs (32-64 px) would have unreadable labels, so they are
# upscaled (nearest neighbour, whole factors) until the shorter side reaches this.
BOX_MIN_SIDE = 256
_GOLDEN = 0.618033988749895


def overlay_mask(
    image: ImageLike, mask: np.ndarray, color: Color = (255, 64, 0), alpha: float = 0.45
) -> Image.Image:
    """The image with the mask tinted in `color` and its outline drawn solid.

    Args:
        image: gray, RGB or RGBA image (uint8, or float in [0, 1]); a PIL image or path works too.
        mask: `[H, W]` of the image's size; bool/int (non-zero is foreground) or float
            probabilities (foreground above 0.5).
        color: RGB tint and outline colour.
        alpha: tint opacity in [0, 1].

    Returns:
        An RGB picture of the image's size.

    Raises:
        ValueError: when the mask's size differs from the image's.
    """
    rgb = load_rgb(image, 3)
    fg = _as_mask(mask, rgb.shape[:2])
    out = rgb.astype(np.float32)
    tint = np.asarray(color, np.float32)
    out[fg] = (1.0 - alpha) * out[fg] + alpha * tint
    # The outline keeps the extent readable where the tint is faint against similar colours.
    outline = fg & ~erode(fg, _line_width(rgb.shape[:2]))
    out[outline] = tint
    return Image.fromarray(np.round(out).astype(np.uint8), "RGB")


def color_instances(image: ImageLike, labels: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with each labelled instance tinted its own colour and outlined in white.

    Args:
        image: gray, RGB or RGBA image (uint8, or float in [0, 1]); a PIL image or path works too.
        labels: int `[H, W]` of the image's size; 0 is background, 1..K the instances.
        alpha: tint opacity in [0, 1].

    Returns:
        An RGB picture of the image's size.

    Raises:
        ValueError: when the label image's size differs from the image's.
    """
    rgb = load_rgb(image, 3)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels have shape {labels.shape}; the image is {rgb.shape[:2]}")
    labels = labels.astype(np.int64)
    out = rgb.astype(np.float32)
    fg = labels > 0
    if fg.any():
        palette = instance_palette(int(labels.max()))
        out[fg] = (1.0 - alpha) * out[fg] + alpha * palette[labels[fg] - 1]
        # Touching instances share a colour edge only by chance; the white line separates them.
        out[inner_boundaries(labels)] = 255.0
    return Image.fromarray(np.round(out).astype(np.uint8), "RGB")


def instance_palette(count: int) -> np.ndarray:
    """`count` distinct bright colours, float32 `[count, 3]` in 0..255.

    Hues step by the golden ratio, so neighbouring labels (which watershed gives to neighbouring
    objects) never get similar hues.
    """
    hues = (np.arange(count) * _GOLDEN) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.8, 1.0) for h in hues], np.float32).reshape(-1, 3)
    return 255.0 * rgb


def draw_box(
    image: ImageLike,
    box: tuple[int, int, int, int],
    label: str,
    color: Color = (255, 64, 0),
    min_side: int = BOX_MIN_SIDE,
) -> Image.Image:
    """The image with a rectangle around `box` and `label` written on a filled tab.

    Args:
        image: gray, RGB or RGBA image (uint8, or float in [0, 1]); a PIL image or path works too.
        box: `(x_min, y_min, x_max, y_max)`, inclusive pixel corners as in `Localization.box`.
        label: text for the tab, e.g. `"ellipse 0.97"`; empty for none.
        color: rectangle and tab colour.
        min_side: small images are enlarged by a whole factor (nearest neighbour) until their
            shorter side reaches this, so that the label stays legible; 0 keeps the size.

    Returns:
        An RGB picture, the image's size times the enlargement factor.
    """
    rgb = load_rgb(image, 3)
    height, width = rgb.shape[:2]
    factor = max(1, math.ceil(min_side / max(min(height, width), 1)))
    picture = Image.fromarray(rgb, "RGB")
    if factor > 1:
        picture = picture.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    line = _line_width(picture.size[::-1])
    # Inclusive corners: the enlarged box ends at the last enlarged pixel of column/row x_max.
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = x0 * factor, y0 * factor, (x1 + 1) * factor - 1, (y1 + 1) * factor - 1
    draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=line)
    if label:
        _label_tab(draw, picture.size, (x0, y0), label, color)
    return picture


def sample_grid(images: np.ndarray, cols: int | None = None, scale: int = 4) -> Image.Image:
    """Tiles images into a grid, each enlarged `scale` times by nearest neighbour.

    Args:
        images: uint8 `[N, H, W, C]` with C 1 (gray) or 3 (RGB); `[N, H, W]` is gray too.
        cols: tiles per row; by default the smallest square that holds all N.
        scale: whole enlargement factor per tile.

    Returns:
        An `L` (gray) or `RGB` picture of `cols * W * scale` by `rows * H * scale` pixels; the
        cells after the last image are black.

    Raises:
        ValueError: for no images, a non-uint8 array, another shape or channel count, or a
            non-positive `cols` or `scale`.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"need images [N, H, W, 1|3] with N >= 1; got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"need uint8 images; got {images.dtype}")
    if scale < 1 or (cols is not None and cols < 1):
        raise ValueError(f"cols and scale must be positive; got cols={cols}, scale={scale}")
    n, height, width, channels = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * height, cols * width, channels), np.uint8)
    for i, tile in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = tile
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    if channels == 1:
        return Image.fromarray(grid[..., 0], "L")
    return Image.fromarray(grid, "RGB")


def erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary erosion by the 4-neighbour cross, `iterations` times; outside the image is empty.

    (SciPy's `binary_erosion` with its default structure; NumPy alone keeps pictures in the slim
    client.)
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        padded = np.pad(out, 1, constant_values=False)
        out = out & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return out


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels with a 4-neighbour of another label (scikit-image's `find_boundaries`
    in `inner` mode, restricted to the labelled pixels); the image edge is no boundary."""
    labels = np.asarray(labels)
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return differs & (labels > 0)


def _as_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}; the image is {shape}")
    if np.issubdtype(mask.dtype, np.floating):
        return mask > 0.5
    return mask.astype(bool)


def _line_width(shape: tuple[int, int]) -> int:
    """Outline width that stays visible but thin from 32 px thumbnails to photos."""
    return max(1, round(min(shape) / 150))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label_tab(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    corner: tuple[int, int],
    label: str,
    color: Color,
) -> None:
    """Writes `label` on a filled tab above the box's top-left corner (inside when no room)."""
    width, height = size
    font = _font(max(10, min(width, height) // 16))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    pad = max(2, (bottom - top) // 5)
    tab_w, tab_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(corner[0], 0), max(width - tab_w, 0))
    y = corner[1] - tab_h if corner[1] >= tab_h else corner[1]
    draw.rectangle([x, y, x + tab_w - 1, y + tab_h - 1], fill=color)
    # Dark text on light tabs, light on dark ones (luma, ITU-R BT.601).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luma > 150 else (255, 255, 255)
    draw.text((x + pad - left, y + pad - top), label, fill=ink, font=font)
