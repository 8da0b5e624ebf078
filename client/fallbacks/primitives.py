"""Classical segmentation primitives: gray conversion, histogram thresholds, polarity, masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import color, util

# Histogram smoothing before peak search: a centred box of this many bins. A box filter of
# integer counts is exact in float64, so the loop port in `benchmarks.source_port` matches bit
# for bit.
SMOOTH_WIDTH = 9
# The two histogram peaks must be at least this many gray levels apart; nearer maxima are
# usually two bumps of the same mode.
MIN_PEAK_GAP = 40
# 8-connectivity for component analysis.
_EIGHT = np.ones((3, 3), dtype=bool)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any supported image as a uint8 gray `[H, W]` array.

    Args:
        image: `[H, W]`, `[H, W, 1]`, RGB `[H, W, 3]` or RGBA `[H, W, 4]`; bool, uint8 or float in
            [0, 1] (other dtypes go through `skimage.util.img_as_ubyte`). RGBA is composited on
            white, as `skimage.color.rgba2rgb` does.

    Returns:
        uint8 `[H, W]`; RGB is converted with `skimage.color.rgb2gray` (ITU-R 709 luma).

    Raises:
        ValueError: for any other shape.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = color.rgba2rgb(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        image = color.rgb2gray(image)
    if image.ndim != 2:
        raise ValueError(f"expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got {image.shape}")
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f":
        # Out-of-range floats are clipped rather than rejected: resampling overshoots a little.
        image = np.clip(image, 0.0, 1.0)
    return util.img_as_ubyte(image)


def _histogram(gray: np.ndarray) -> np.ndarray:
    """256-bin counts of a uint8 image (float64, so sums stay exact and cheap)."""
    flat = to_gray(gray).ravel()
    odd = flat.size % 2
    # `bincount` widens its input to intp; counting pixel pairs as uint16 halves that copy, and
    # folding the 256x256 pair table back costs far less. Both byte orders fold the same way.
    pairs = np.bincount(flat[odd:].view(np.uint16), minlength=65536).reshape(256, 256)
    hist = pairs.sum(axis=0) + pairs.sum(axis=1)
    if odd:
        hist[flat[0]] += 1
    return hist.astype(np.float64)


def _smoothed_histogram(gray: np.ndarray) -> np.ndarray:
    """The histogram summed over a centred box of `SMOOTH_WIDTH` bins, zeros beyond the ends."""
    hist = _histogram(gray)
    return ndi.convolve1d(hist, np.ones(SMOOTH_WIDTH), mode="constant")


def _two_peaks(smooth: np.ndarray) -> tuple[int, int] | None:
    """The two highest local maxima of a smoothed histogram at least `MIN_PEAK_GAP` apart.

    A local maximum is a non-zero bin no lower than its left neighbour and higher than its right
    one (so a plateau counts once, at its right end). The first peak is the highest (lowest
    intensity on ties); the second is the highest remaining one at least `MIN_PEAK_GAP` levels
    away. Returns `(low, high)` intensities, or None for a histogram with one mode.
    """
    padded = np.concatenate(([-1.0], smooth, [-1.0]))
    is_peak = (smooth >= padded[:-2]) & (smooth > padded[2:]) & (smooth > 0)
    candidates = np.flatnonzero(is_peak)
    if candidates.size < 2:
        return None
    first = int(candidates[np.argmax(smooth[candidates])])
    far = candidates[np.abs(candidates - first) >= MIN_PEAK_GAP]
    if far.size == 0:
        return None
    second = int(far[np.argmax(smooth[far])])
    return min(first, second), max(first, second)


def threshold_peaks(gray: np.ndarray) -> int:
    """Mean of the two histogram peak intensities, `(p1 + p2) // 2`.

    Args:
        gray: image accepted by `to_gray`.

    Returns:
        Threshold t; `gray > t` is one class. Falls back to Otsu on a one-mode histogram.
    """
    peaks = _two_peaks(_smoothed_histogram(gray))
    if peaks is None:
        return otsu_threshold(gray)
    return (peaks[0] + peaks[1]) // 2


def threshold_valley(gray: np.ndarray) -> int:
    """The intensity between the two histogram peaks where the smoothed histogram is lowest.

    Args:
        gray: image accepted by `to_gray`.

    Returns:
        Threshold t (the lowest such intensity on ties); falls back to Otsu on a one-mode
        histogram.
    """
    smooth = _smoothed_histogram(gray)
    peaks = _two_peaks(smooth)
    if peaks is None:
        return otsu_threshold(gray)
    low, high = peaks
    return low + int(np.argmin(smooth[low : high + 1]))


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu's threshold, equal to `skimage.filters.threshold_otsu` on uint8 images.

    The between-class variance P1 (u1 - u)^2 + P2 (u2 - u)^2 equals P1 P2 (u1 - u2)^2; with
    counts in place of probabilities it is scaled by N^2, which moves no argmax. Like skimage
    the histogram is trimmed to [min, max] and the first maximum wins.

    Args:
        gray: image accepted by `to_gray`.

    Returns:
        t with foreground `gray > t` (the constant value for a constant image).
    """
    hist = _histogram(gray)
    present = np.flatnonzero(hist)
    lo, hi = int(present[0]), int(present[-1])
    if lo == hi:
        return lo
    counts = hist[lo : hi + 1]
    levels = np.arange(lo, hi + 1, dtype=np.float64)
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * levels) / weight1
    mean2 = (np.cumsum((counts * levels)[::-1]) / weight2[::-1])[::-1]
    # Threshold at index i splits [.., i] from [i + 1, ..]; both classes are then non-empty.
    between = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return lo + int(np.argmax(between))


def multi_otsu_thresholds(gray: np.ndarray, classes: int = 3) -> list[int]:
    """Multi-level Otsu: `classes - 1` thresholds maximising the between-class variance.

    Maximises sum_k S_k^2 / P_k (class mass P_k, first moment S_k), which differs from the
    between-class variance by a constant. A backward dynamic programme over the trimmed
    histogram replaces skimage's exhaustive search; thresholds are then read off front to back
    taking the first maximum, which is skimage's (lexicographic) tie-break.

    Args:
        gray: image accepted by `to_gray`.
        classes: number of classes, at least 2.

    Returns:
        Increasing thresholds t_1 < ... < t_{classes-1}; class j is `t_j < gray <= t_{j+1}`.

    Raises:
        ValueError: if `classes < 2` or the image has fewer distinct values than classes.
    """
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes}")
    hist = _histogram(gray)
    present = np.flatnonzero(hist)
    if present.size < classes:
        raise ValueError(f"the image has {present.size} distinct values, fewer than {classes}")
    if present.size == classes:
        return [int(v) for v in present[:-1]]
    lo = int(present[0])
    prob = hist[lo : int(present[-1]) + 1] / hist.sum()
    n = prob.size
    levels = np.arange(n, dtype=np.float64)
    mass = np.concatenate(([0.0], np.cumsum(prob)))
    moment = np.concatenate(([0.0], np.cumsum(prob * levels)))
    # score[i, j]: S^2 / P of the class of bins i..j (j >= i), 0 for an empty class.
    p = mass[None, 1:] - mass[:-1, None]
    s = moment[None, 1:] - moment[:-1, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = s * s / p
    score[p <= 0] = 0.0
    index = np.arange(n)
    score[index[:, None] > index[None, :]] = -np.inf  # j < i is no class at all
    # best[m][i]: best score for bins i..n-1 split into m classes (-inf when impossible).
    best = [np.full(n + 1, -np.inf)]
    best[0][n] = 0.0
    for _ in range(classes - 1):
        # Class i..j followed by the best split of j + 1..n - 1 into one class fewer.
        nxt = np.max(score + best[-1][None, 1:], axis=1)
        best.append(np.concatenate((nxt, [-np.inf])))
    thresholds, start = [], 0
    for remaining in range(classes - 1, 0, -1):
        total = score[start] + best[remaining][1:]
        end = int(np.argmax(total))
        thresholds.append(lo + end)
        start = end + 1
    return thresholds


def choose_polarity(mask: np.ndarray) -> np.ndarray:
    """`mask` or `~mask`, whichever covers less of the image border (ties keep `mask`).

    Objects of interest rarely fill the frame edge while background usually does, so this picks
    the foreground regardless of whether objects are darker or lighter than their surroundings.

    Args:
        mask: 2-D boolean mask.

    Returns:
        Boolean mask of the same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    border = np.concatenate((mask[0, :], mask[-1, :], mask[1:-1, 0], mask[1:-1, -1]))
    return ~mask if border.mean() > 0.5 else mask


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the largest 8-connected component.

    Args:
        mask: 2-D boolean mask.

    Returns:
        `(x_min, y_min, x_max, y_max)` inclusive pixel corners, or None for an empty mask. Ties
        go to the component met first in raster order.
    """
    labels, count = ndi.label(np.asarray(mask, dtype=bool), structure=_EIGHT)
    if count == 0:
        return None
    biggest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = ndi.find_objects(labels)[biggest - 1]
    return cols.start, rows.start, cols.stop - 1, rows.stop - 1


def clean_mask(
    mask: np.ndarray, *, largest_only: bool = True, fill_holes: bool = True
) -> np.ndarray:
    """Keep the largest 8-connected component and/or fill its holes.

    Args:
        mask: 2-D boolean mask.
        largest_only: drop every component but the largest.
        fill_holes: fill background regions not connected to the image border.

    Returns:
        A new boolean mask.
    """
    out = np.asarray(mask, dtype=bool).copy()
    if largest_only:
        labels, count = ndi.label(out, structure=_EIGHT)
        if count > 1:
            biggest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
            out = labels == biggest
    if fill_holes:
        out = ndi.binary_fill_holes(out)
    return out
