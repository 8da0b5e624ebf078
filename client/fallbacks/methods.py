"""The classical methods: thresholds, Otsu, watershed, k-means (NumPy in and out, on SciPy)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.cluster.vq import kmeans2
from skimage import feature, filters, morphology, segmentation

from client.fallbacks import METHODS
from client.fallbacks.primitives import (
    choose_polarity,
    clean_mask,
    largest_component_box,
    multi_otsu_thresholds,
    otsu_threshold,
    threshold_peaks,
    threshold_valley,
    to_gray,
)

__all__ = [
    "METHODS",
    "choose_polarity",
    "clean_mask",
    "kmeans_segment",
    "largest_component_box",
    "multi_otsu_thresholds",
    "otsu_threshold",
    "segment",
    "threshold_peaks",
    "threshold_valley",
    "to_gray",
    "watershed_instances",
]

# Weight of the x/y features against colour (both scaled to [0, 1]) in `kmeans_segment`: enough
# to make clusters spatially compact without letting position override colour.
XY_WEIGHT = 0.5
# Lloyd iterations per k-means restart; scipy's `kmeans2` has no early stop, and 20 is past
# convergence on photographs at k <= 8.
KMEANS_ITERS = 20


def watershed_instances(
    image: np.ndarray,
    *,
    sigma: float = 1.0,
    min_distance: int = 9,
    min_size: int = 64,
    flatten: bool = True,
) -> tuple[np.ndarray, int]:
    """Split touching objects: Otsu foreground, distance transform, marker-based watershed.

    Steps: Gaussian smoothing, optional background flattening, Otsu threshold with
    `choose_polarity`, an opening with a radius-1 disk, removal of components of at most
    `min_size` pixels, hole filling, the Euclidean distance transform, its local maxima
    (`peak_local_max`, at least `min_distance` apart) as markers, and
    `skimage.segmentation.watershed` on the negated distance inside the foreground.

    Args:
        image: image accepted by `to_gray`.
        sigma: Gaussian smoothing in pixels (0 disables it).
        min_distance: smallest distance between two object centres; about the smallest
            expected object radius.
        min_size: components of at most this many pixels are noise.
        flatten: subtract a Gaussian background estimate (sigma = an eighth of the longer
            side) first. A global threshold otherwise takes uneven lighting for objects (the
            bright top band of `skimage.data.coins()`); it assumes objects much smaller than
            the image, which is what splitting touching objects is for.

    Returns:
        `(labels, count)`: int32 labels `[H, W]` numbered 1..count, 0 for background.
    """
    gray = to_gray(image).astype(np.float64)
    if sigma > 0:
        gray = filters.gaussian(gray, sigma=sigma, preserve_range=True)
    if flatten:
        gray = gray - ndi.gaussian_filter(gray, max(gray.shape) / 8.0)
    # Back to the full uint8 range so Otsu sees 256 levels whatever the contrast left.
    span = max(float(np.ptp(gray)), 1e-12)
    gray = np.rint((gray - gray.min()) * (255.0 / span)).astype(np.uint8)
    foreground = choose_polarity(gray > otsu_threshold(gray))
    foreground = ndi.binary_opening(foreground, structure=morphology.disk(1))
    foreground = morphology.remove_small_objects(foreground, max_size=min_size)
    foreground = ndi.binary_fill_holes(foreground)
    distance = ndi.distance_transform_edt(foreground)
    components, _ = ndi.label(foreground)
    peaks = feature.peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds = np.zeros(gray.shape, dtype=bool)
    seeds[tuple(peaks.T)] = True
    # Peaks on a flat ridge of the distance map may survive side by side; joining touching ones
    # keeps them one object.
    markers, _ = ndi.label(seeds, structure=np.ones((3, 3), dtype=bool))
    labels = segmentation.watershed(-distance, markers, mask=foreground)
    labels, _, _ = segmentation.relabel_sequential(labels)
    return labels.astype(np.int32), int(labels.max())


def _features(image: np.ndarray, use_xy: bool) -> np.ndarray:
    """Per-pixel float64 features: RGB (or gray) in [0, 1], optionally weighted x/y in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[-1] not in (3, 4):
        image = to_gray(image)[..., None]
    rgb = image[..., :3]
    scale = 255.0 if rgb.dtype == np.uint8 else 1.0
    height, width = rgb.shape[:2]
    features = rgb.reshape(height * width, -1).astype(np.float64) / scale
    if use_xy:
        ys, xs = np.mgrid[0:height, 0:width]
        xy = np.stack((xs.ravel() / max(width - 1, 1), ys.ravel() / max(height - 1, 1)), axis=1)
        features = np.concatenate((features, XY_WEIGHT * xy), axis=1)
    return features


def _kmeans(data: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Best of `restarts` k-means++ runs by within-cluster sum of squares: (centroids, labels).

    Restarts draw from one seeded generator in turn, so the first run equals the single run of
    `restarts=1` and more restarts never raise the cost.
    """
    rng = np.random.default_rng(seed)
    best_cost, best = np.inf, None
    for _ in range(max(restarts, 1)):
        with warnings.catch_warnings():
            # An emptied cluster keeps its old centroid; that run then just costs more.
            warnings.simplefilter("ignore", UserWarning)
            centroids, labels = kmeans2(data, k, iter=KMEANS_ITERS, minit="++", rng=rng)
        cost = float(np.sum((data - centroids[labels]) ** 2))
        if cost < best_cost:
            best_cost, best = cost, (centroids, labels)
    return best


def kmeans_segment(
    image: np.ndarray, k: int = 3, *, use_xy: bool = False, restarts: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """K-means colour segmentation (k-means++ seeding, best of several restarts).

    Args:
        image: RGB/RGBA uint8 or float in [0, 1]; gray images cluster on intensity.
        k: number of clusters.
        use_xy: add pixel coordinates (scaled to [0, 1], weighted by `XY_WEIGHT`) so clusters
            are spatially compact.
        restarts: independent k-means++ runs; the lowest within-cluster cost is kept.
        seed: seed for the runs; equal seeds give equal results.

    Returns:
        `(labels, recoloured)`: int32 labels `[H, W]` in 0..k-1, numbered by increasing centroid
        brightness, and uint8 `[H, W, C]` with every pixel set to its centroid's colour.

    Raises:
        ValueError: if `k` is not in 1..number of pixels.
    """
    data = _features(image, use_xy)
    if not 1 <= k <= data.shape[0]:
        raise ValueError(f"k must be in 1..{data.shape[0]}, got {k}")
    centroids, labels = _kmeans(data, k, restarts, seed)
    channels = 3 if data.shape[1] - 2 * use_xy == 3 else 1
    colours = centroids[:, :channels]
    # Number clusters by brightness so labels do not depend on which restart won.
    order = np.argsort(colours.mean(axis=1), kind="stable")
    rank = np.empty(k, dtype=np.int32)
    rank[order] = np.arange(k, dtype=np.int32)
    height, width = np.asarray(image).shape[:2]
    palette = np.clip(np.rint(colours * 255.0), 0, 255).astype(np.uint8)
    recoloured = palette[labels].reshape(height, width, channels)
    return rank[labels].reshape(height, width), recoloured


def segment(image: np.ndarray, method: str = "otsu") -> np.ndarray:
    """Foreground mask by one classical method, polarity chosen by `choose_polarity`.

    Args:
        image: image accepted by `to_gray` (RGB for "kmeans" clusters on colour).
        method: one of `METHODS`: "otsu", "threshold" (histogram valley), "watershed" (union of
            the instances) or "kmeans" (k = 2).

    Returns:
        Boolean mask `[H, W]`.

    Raises:
        ValueError: for an unknown method (the message lists the valid ones).
    """
    if method == "otsu":
        gray = to_gray(image)
        return choose_polarity(gray > otsu_threshold(gray))
    if method == "threshold":
        gray = to_gray(image)
        return choose_polarity(gray > threshold_valley(gray))
    if method == "watershed":
        return watershed_instances(image)[0] > 0
    if method == "kmeans":
        labels, _ = kmeans_segment(image, k=2)
        return choose_polarity(labels == 1)
    raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
