"""Box geometry and localizer metrics in NumPy: BOX_FORMAT conversions, IoU and macro F1.

Corner boxes are `(x_min, y_min, x_max, y_max)` in pixel-edge coordinates: a box covering the
pixel columns 3..7 inclusive has `x_min = 3` and `x_max = 8`, so its width is `x_max - x_min`.
Normalised boxes follow `common.contract.BOX_FORMAT`: centre x, centre y, height, width, with
x and w divided by the image width and y and h by the image height.

Example:
    >>> corners = np.array([[8.0, 16.0, 24.0, 48.0]])
    >>> to_normalized(corners, width=64, height=64)
    array([[0.25, 0.5 , 0.5 , 0.25]])
"""

from __future__ import annotations

import numpy as np


def to_normalized(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """Converts pixel corner boxes to normalised BOX_FORMAT boxes.

    Args:
        corners: `[..., 4]` boxes as `(x_min, y_min, x_max, y_max)` in pixels.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        `[..., 4]` float boxes `(x, y, h, w)` normalised by the image size.
    """
    c = np.asarray(corners, dtype=np.float64)
    x_min, y_min, x_max, y_max = np.moveaxis(c, -1, 0)
    return np.stack(
        [
            (x_min + x_max) / (2.0 * width),
            (y_min + y_max) / (2.0 * height),
            (y_max - y_min) / height,
            (x_max - x_min) / width,
        ],
        axis=-1,
    )


def to_corners(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Converts normalised BOX_FORMAT boxes to pixel corner boxes (the inverse of `to_normalized`).

    Args:
        boxes: `[..., 4]` boxes `(x, y, h, w)` normalised by the image size.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        `[..., 4]` float boxes `(x_min, y_min, x_max, y_max)` in pixels.
    """
    unit = normalized_to_unit_corners(boxes)
    return unit * np.array([width, height, width, height], dtype=np.float64)


def normalized_to_unit_corners(boxes: np.ndarray) -> np.ndarray:
    """Converts normalised BOX_FORMAT boxes to corners in the unit square.

    Args:
        boxes: `[..., 4]` boxes `(x, y, h, w)`.

    Returns:
        `[..., 4]` boxes `(x_min, y_min, x_max, y_max)` with coordinates in image fractions.
    """
    b = np.asarray(boxes, dtype=np.float64)
    x, y, h, w = np.moveaxis(b, -1, 0)
    return np.stack([x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0], axis=-1)


def clip_corners(corners: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clips pixel corner boxes to the image `[0, width] x [0, height]`.

    Args:
        corners: `[..., 4]` boxes `(x_min, y_min, x_max, y_max)`.
        width: image width (use 1.0 for unit-square corners).
        height: image height (use 1.0 for unit-square corners).

    Returns:
        The clipped boxes, same shape, float.
    """
    c = np.asarray(corners, dtype=np.float64)
    limits = np.array([width, height, width, height], dtype=np.float64)
    return np.clip(c, 0.0, limits)


def clip_normalized(boxes: np.ndarray) -> np.ndarray:
    """Clips normalised BOX_FORMAT boxes so that they lie inside the image.

    Args:
        boxes: `[..., 4]` boxes `(x, y, h, w)`.

    Returns:
        `[..., 4]` boxes whose corners lie in the unit square.
    """
    unit = clip_corners(normalized_to_unit_corners(boxes), 1.0, 1.0)
    return to_normalized(unit, width=1, height=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of matching pairs of normalised BOX_FORMAT boxes.

    Negative heights or widths count as empty boxes. Two empty boxes score 0.

    Args:
        a: `[..., 4]` boxes `(x, y, h, w)`.
        b: boxes broadcastable against `a`.

    Returns:
        IoU per pair, shape `a.shape[:-1]` broadcast with `b.shape[:-1]`, in [0, 1].
    """
    ca, cb = normalized_to_unit_corners(a), normalized_to_unit_corners(b)
    inter_w = np.minimum(ca[..., 2], cb[..., 2]) - np.maximum(ca[..., 0], cb[..., 0])
    inter_h = np.minimum(ca[..., 3], cb[..., 3]) - np.maximum(ca[..., 1], cb[..., 1])
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    area_a = _area(ca)
    area_b = _area(cb)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _area(corners: np.ndarray) -> np.ndarray:
    w = np.clip(corners[..., 2] - corners[..., 0], 0.0, None)
    h = np.clip(corners[..., 3] - corners[..., 1], 0.0, None)
    return w * h


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores over classes `0 .. num_classes - 1`.

    A class that is neither present nor predicted has F1 = 0, as in scikit-learn's
    `f1_score(average="macro", labels=range(num_classes), zero_division=0)`.

    Args:
        y_true: `[N]` integer class ids.
        y_pred: `[N]` integer predicted class ids.
        num_classes: number of classes.

    Returns:
        Macro F1 in [0, 1].
    """
    t = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(y_pred).astype(np.int64).ravel()
    scores = []
    for k in range(num_classes):
        tp = np.sum((t == k) & (p == k))
        fp = np.sum((t != k) & (p == k))
        fn = np.sum((t == k) & (p != k))
        denom = 2 * tp + fp + fn
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0
