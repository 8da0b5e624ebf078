"""Post-processing of model answers: the full-size mask without float intermediates."""

from __future__ import annotations

import numpy as np
import pytest

from client.images.postprocess import mask_at_size, resize_probabilities, threshold


def _smooth_map(seed: int, size: int = 128) -> np.ndarray:
    """A probability map like a U-Net's: blobs with soft edges, values across [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    logits = np.full((size, size), -np.inf)
    for cy, cx, r in rng.uniform([0.2, 0.2, 0.1], [0.8, 0.8, 0.3], size=(3, 3)):
        logits = np.maximum(logits, 40.0 * (r - np.hypot(y - cy, x - cx)))
    return (1.0 / (1.0 + np.exp(-logits)))[..., None].astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [(1280, 1918), (300, 200), (129, 127), (128, 2000), (60, 60)])
@pytest.mark.parametrize("level", [0.3, 0.5, 0.8])
def test_mask_at_size_is_thresholding_resized_probabilities(seed, size, level):
    """Upscaled (runs between map rows) or shrunk (the float path), the same mask."""
    probabilities = _smooth_map(seed)
    fast = mask_at_size(probabilities, *size, level)
    exact = threshold(resize_probabilities(probabilities, *size), level)
    assert fast.shape == exact.shape == size and fast.dtype == bool
    assert 0.05 < exact.mean() < 0.95
    np.testing.assert_array_equal(fast, exact)


def test_mask_at_the_models_own_size_is_exact():
    probabilities = _smooth_map(3)
    np.testing.assert_array_equal(
        mask_at_size(probabilities, 128, 128), probabilities[..., 0] >= 0.5
    )


@pytest.mark.parametrize("level", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("size", [(300, 500), (1280, 1918)])
def test_a_noisy_map_is_as_exact_as_a_smooth_one(level, size):
    """Noise has edges everywhere, rising and falling between every two rows: each run must
    start and end on the very pixel the float path thresholds (the 8-bit resize this replaced
    missed thousands of them)."""
    noise = np.random.default_rng(5).random((64, 64, 1), dtype=np.float32)
    exact = threshold(resize_probabilities(noise, *size), level)
    np.testing.assert_array_equal(mask_at_size(noise, *size, level), exact)


def test_a_large_upscale_counts_runs_past_one_byte():
    """Over 127 output rows between two map rows, a run's place no longer fits the byte whose
    wrap-around tells the rows before a run's start from those inside it."""
    tiny = np.array([[0.0, 1.0, 0.2], [0.9, 0.1, 0.6], [0.4, 0.7, 0.0]], np.float32)
    exact = threshold(resize_probabilities(tiny, 900, 700))
    np.testing.assert_array_equal(mask_at_size(tiny, 900, 700), exact)
    assert 0.2 < exact.mean() < 0.8
