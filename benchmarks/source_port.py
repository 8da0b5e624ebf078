"""Plain-loop ports of the source material's algorithms, for benchmarking only (not for use).

They follow the source listings' structure (Python loops over thresholds, bins and clusters)
with its two bugs fixed: Otsu's class means are divided by the class probabilities, and k-means
draws its random centroids once rather than every iteration. `client.fallbacks.methods` holds the
vectorised versions these are measured against.
"""

from __future__ import annotations

import numpy as np

from client.fallbacks.primitives import MIN_PEAK_GAP, SMOOTH_WIDTH


def _histogram_loops(gray: np.ndarray) -> list[int]:
    """256-bin histogram of a uint8 image, one pixel at a time."""
    hist = [0] * 256
    for value in np.asarray(gray, dtype=np.uint8).ravel().tolist():
        hist[value] += 1
    return hist


def otsu_loops(gray: np.ndarray) -> int:
    """Otsu's threshold with loops over t and i; equals `skimage.filters.threshold_otsu`.

    Args:
        gray: uint8 `[H, W]` image.

    Returns:
        t maximising P(C1)(u1 - u)^2 + P(C2)(u2 - u)^2; foreground is `gray > t`.
    """
    hist = _histogram_loops(gray)
    total = sum(hist)
    prob = [count / total for count in hist]
    mean_all = 0.0
    for i in range(256):
        mean_all += i * prob[i]
    best_t, best_var, seen = 0, -1.0, False
    for t in range(256):
        p1, s1 = 0.0, 0.0
        for i in range(t + 1):
            p1 += prob[i]
            s1 += i * prob[i]
        p2, s2 = 0.0, 0.0
        for i in range(t + 1, 256):
            p2 += prob[i]
            s2 += i * prob[i]
        if p1 == 0.0 or p2 == 0.0:
            continue
        u1, u2 = s1 / p1, s2 / p2
        var = p1 * (u1 - mean_all) ** 2 + p2 * (u2 - mean_all) ** 2
        if not seen or var > best_var:
            best_t, best_var, seen = t, var, True
    if not seen:  # a constant image
        return hist.index(total)
    return best_t


def threshold_loops(gray: np.ndarray, mode: str = "valley") -> int:
    """Histogram-peaks threshold with loops; equals `threshold_valley` / `threshold_peaks`.

    Args:
        gray: uint8 `[H, W]` image.
        mode: "valley" (lowest smoothed bin between the peaks) or "peaks" (their mean).

    Returns:
        The threshold; Otsu's when the histogram has one mode.
    """
    hist = _histogram_loops(gray)
    half = SMOOTH_WIDTH // 2
    smooth = []
    for i in range(256):
        acc = 0
        for j in range(i - half, i + half + 1):
            if 0 <= j < 256:
                acc += hist[j]
        smooth.append(float(acc))
    peaks = []
    for i in range(256):
        left = smooth[i - 1] if i > 0 else -1.0
        right = smooth[i + 1] if i < 255 else -1.0
        if smooth[i] >= left and smooth[i] > right and smooth[i] > 0:
            peaks.append(i)
    first = -1
    for i in peaks:
        if first < 0 or smooth[i] > smooth[first]:
            first = i
    second = -1
    for i in peaks:
        if abs(i - first) >= MIN_PEAK_GAP and (second < 0 or smooth[i] > smooth[second]):
            second = i
    if first < 0 or second < 0:
        return otsu_loops(gray)
    low, high = min(first, second), max(first, second)
    if mode == "peaks":
        return (low + high) // 2
    valley = low
    for i in range(low, high + 1):
        if smooth[i] < smooth[valley]:
            valley = i
    return valley


def kmeans_loops(
    pixels: np.ndarray, k: int, iters: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from k random pixels, looping over iterations and clusters.

    Args:
        pixels: `[N, C]` features.
        k: number of clusters.
        iters: Lloyd iterations (no early stop, like the source).
        seed: seed for the initial centroids.

    Returns:
        `(centroids [k, C], labels [N])`; an emptied cluster keeps its centroid.
    """
    data = np.asarray(pixels, dtype=np.float64)
    rng = np.random.default_rng(seed)
    centroids = data[rng.choice(data.shape[0], size=k, replace=False)].copy()
    labels = np.zeros(data.shape[0], dtype=np.int64)
    for _ in range(iters):
        best = np.full(data.shape[0], np.inf)
        for j in range(k):
            dist = np.sum((data - centroids[j]) ** 2, axis=1)
            closer = dist < best
            best[closer] = dist[closer]
            labels[closer] = j
        for j in range(k):
            members = data[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    return centroids, labels
