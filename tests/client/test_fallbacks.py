"""Classical fallbacks: exact agreement with scikit-image, polarity, watershed, k-means, masks."""

import numpy as np
import pytest
from skimage import data, draw, filters

from benchmarks.source_port import kmeans_loops, otsu_loops, threshold_loops
from client.fallbacks.methods import (
    METHODS,
    choose_polarity,
    clean_mask,
    kmeans_segment,
    largest_component_box,
    multi_otsu_thresholds,
    otsu_threshold,
    segment,
    threshold_peaks,
    threshold_valley,
    to_gray,
    watershed_instances,
)

IMAGES = ("coins", "camera", "moon", "page", "text", "coffee", "chelsea", "astronaut")


@pytest.fixture(scope="module")
def grays():
    return {name: to_gray(getattr(data, name)()) for name in IMAGES}


def _buggy_otsu(gray):
    """The source listing's Otsu: class 'means' left as first moments, not divided by P(C)."""
    prob = np.bincount(gray.ravel(), minlength=256) / gray.size
    levels = np.arange(256)
    p1 = np.cumsum(prob)
    m1 = np.cumsum(levels * prob)
    mean = m1[-1]
    return int(np.argmax(p1 * (m1 - mean) ** 2 + (1 - p1) * (mean - m1 - mean) ** 2))


def _partition_score(gray, thresholds):
    """sum_k S_k^2 / P_k over the classes the thresholds cut, in float64."""
    prob = np.bincount(gray.ravel(), minlength=256) / gray.size
    levels = np.arange(256)
    score = 0.0
    for lo, hi in zip([-1, *thresholds], [*thresholds, 255], strict=True):
        p, s = prob[lo + 1 : hi + 1].sum(), (levels * prob)[lo + 1 : hi + 1].sum()
        score += s * s / p if p > 0 else 0.0
    return score


def _bimodal(object_dark=True, seed=0):
    """120x160 image: a noisy disc (radius 30) on a noisy background, modes at 60 and 180."""
    rng = np.random.default_rng(seed)
    obj, back = (60, 180) if object_dark else (180, 60)
    image = np.full((120, 160), back, dtype=np.float64)
    truth = np.zeros(image.shape, dtype=bool)
    truth[draw.disk((60, 80), 30)] = True
    image[truth] = obj
    image += rng.normal(0, 10, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), truth


def _cost(image, labels):
    """Within-cluster sum of squares of RGB in [0, 1] (k-means centroids are the label means)."""
    x = image.reshape(-1, 3).astype(np.float64) / 255.0
    flat = labels.ravel()
    means = np.array([x[flat == j].mean(axis=0) for j in range(flat.max() + 1)])
    return float(((x - means[flat]) ** 2).sum())


@pytest.mark.parametrize("name", IMAGES)
def test_otsu_equals_skimage(grays, name):
    gray = grays[name]
    assert otsu_threshold(gray) == filters.threshold_otsu(gray)
    assert otsu_loops(gray) == filters.threshold_otsu(gray)


def test_otsu_coins_and_the_source_bug(grays):
    assert otsu_threshold(grays["coins"]) == 107
    assert _buggy_otsu(grays["coins"]) == 89


def test_otsu_constant_image():
    assert otsu_threshold(np.full((5, 5), 42, dtype=np.uint8)) == 42


@pytest.mark.parametrize("name", IMAGES)
def test_multi_otsu_three_classes_equals_skimage(grays, name):
    gray = grays[name]
    expected = [int(t) for t in filters.threshold_multiotsu(gray, classes=3)]
    assert multi_otsu_thresholds(gray, classes=3) == expected


def test_multi_otsu_more_classes_never_worse_than_skimage(grays):
    # skimage searches in float32; where its answer differs, ours has the higher true variance.
    gray = grays["astronaut"]
    for classes in (4, 5):
        ours = multi_otsu_thresholds(gray, classes)
        theirs = [int(t) for t in filters.threshold_multiotsu(gray, classes)]
        assert _partition_score(gray, ours) >= _partition_score(gray, theirs)


def test_multi_otsu_errors():
    with pytest.raises(ValueError, match="at least 2"):
        multi_otsu_thresholds(np.arange(16, dtype=np.uint8).reshape(4, 4), classes=1)
    with pytest.raises(ValueError, match="distinct values"):
        multi_otsu_thresholds(np.array([[0, 0], [9, 9]], dtype=np.uint8), classes=3)
    assert multi_otsu_thresholds(np.array([[0, 5], [9, 9]], dtype=np.uint8), classes=3) == [0, 5]


def test_peaks_and_valley_between_the_modes():
    gray, _ = _bimodal()
    assert 100 <= threshold_peaks(gray) <= 140
    assert 90 <= threshold_valley(gray) <= 150
    assert threshold_loops(gray, "peaks") == threshold_peaks(gray)
    assert threshold_loops(gray) == threshold_valley(gray)


@pytest.mark.parametrize("object_dark", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_polarity_gives_the_object(method, object_dark):
    gray, truth = _bimodal(object_dark)
    mask = segment(gray, method)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.85


def test_choose_polarity_keeps_or_flips():
    mask = np.zeros((10, 10), dtype=bool)
    mask[3:6, 3:6] = True
    assert np.array_equal(choose_polarity(mask), mask)
    assert np.array_equal(choose_polarity(~mask), mask)


def test_watershed_separates_coins():
    labels, count = watershed_instances(data.coins())
    assert labels.dtype == np.int32 and labels.shape == data.coins().shape
    assert 20 <= count <= 30
    assert set(np.unique(labels)) == set(range(count + 1))
    areas = np.bincount(labels.ravel())[1:]
    # The biggest coin is about twice the median one; a merge of several would be far more.
    assert areas.max() < 2.5 * np.median(areas)


def test_watershed_splits_two_overlapping_discs():
    image = np.zeros((100, 130), dtype=np.uint8)
    for centre in ((50, 45), (50, 83)):
        image[draw.disk(centre, 24)] = 200
    labels, count = watershed_instances(image)
    assert count == 2
    assert labels[50, 35] != labels[50, 95] and labels[50, 35] > 0 and labels[50, 95] > 0


@pytest.fixture(scope="module")
def small_rgb():
    return data.chelsea()[::4, ::4]


def test_kmeans_is_deterministic_with_k_colours(small_rgb):
    labels, recoloured = kmeans_segment(small_rgb, k=4, seed=3)
    again, recoloured_again = kmeans_segment(small_rgb, k=4, seed=3)
    assert np.array_equal(labels, again) and np.array_equal(recoloured, recoloured_again)
    assert labels.shape == small_rgb.shape[:2] and set(np.unique(labels)) == {0, 1, 2, 3}
    assert recoloured.dtype == np.uint8 and recoloured.shape == small_rgb.shape
    assert len(np.unique(recoloured.reshape(-1, 3), axis=0)) == 4
    with_xy, _ = kmeans_segment(small_rgb, k=4, use_xy=True)
    assert with_xy.shape == labels.shape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_restarts_never_cost_more(small_rgb, seed):
    one, _ = kmeans_segment(small_rgb, k=5, restarts=1, seed=seed)
    five, _ = kmeans_segment(small_rgb, k=5, restarts=5, seed=seed)
    assert _cost(small_rgb, five) <= _cost(small_rgb, one) + 1e-9


def test_kmeans_beats_the_plain_random_port(small_rgb):
    ours, _ = kmeans_segment(small_rgb, k=5)
    pixels = small_rgb.reshape(-1, 3) / 255.0
    _, port = kmeans_loops(pixels, 5, iters=20, seed=0)
    assert _cost(small_rgb, ours) <= _cost(small_rgb, port.reshape(small_rgb.shape[:2])) * 1.001


def test_largest_component_box_uses_8_connectivity():
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:5, 3:9] = True  # 18 pixels
    mask[10, 10] = mask[11, 11] = mask[12, 12] = True  # diagonal: one 8-connected component
    mask[13:17, 13:18] = True  # touches (12, 12) diagonally: 20 + 3 pixels
    assert largest_component_box(mask) == (10, 10, 17, 16)
    assert largest_component_box(np.zeros((4, 4), dtype=bool)) is None


def test_clean_mask():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:8] = False  # a hole
    mask[15:18, 15:18] = True  # a smaller blob
    cleaned = clean_mask(mask)
    assert cleaned[6, 6] and not cleaned[16, 16] and cleaned.sum() == 100
    assert clean_mask(mask, largest_only=False, fill_holes=False).sum() == mask.sum()


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="otsu, threshold, watershed, kmeans"):
        segment(np.zeros((4, 4), dtype=np.uint8), "grabcut")


def test_to_gray_inputs():
    rgb = data.astronaut()
    assert to_gray(rgb).dtype == np.uint8 and to_gray(rgb).shape == rgb.shape[:2]
    rgba = np.concatenate((rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)), axis=-1)
    assert np.array_equal(to_gray(rgba), to_gray(rgb))
    assert np.array_equal(to_gray(np.array([[0.0, 1.0]])), np.array([[0, 255]], dtype=np.uint8))
    assert to_gray(np.zeros((3, 3, 1), dtype=np.uint8)).shape == (3, 3)
    with pytest.raises(ValueError, match="expected"):
        to_gray(np.zeros((3, 3, 2), dtype=np.uint8))
