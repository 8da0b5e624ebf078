"""Tests of the synthetic Carvana-like cars: determinism, masks, shadows, identity, difficulty."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from training.data.cars import car_seeds, render_car, synthetic_cars
from training.metrics import dice_score

H, W = 48, 72


def _otsu_mask(image: np.ndarray) -> np.ndarray:
    """One global Otsu threshold on the grey image, polarity chosen so the border is background."""
    grey = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    fg = grey > threshold_otsu(grey)
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    return ~fg if border.mean() > 0.5 else fg


def _body_colour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median colour of the door panel: mid-length, in the lower part of the car's silhouette."""
    cols = np.nonzero(mask)[1]
    c0, c1 = cols.min(), cols.max()
    rows = np.nonzero(mask[:, (c0 + c1) // 2])[0]
    top, bottom = rows.min(), rows.max()
    band = slice(bottom - int(0.4 * (bottom - top)), bottom - int(0.15 * (bottom - top)))
    mid = slice(c0 + (c1 - c0) * 2 // 5, c0 + (c1 - c0) * 3 // 5)
    return np.median(image[band, mid].reshape(-1, 3), axis=0)


@pytest.mark.parametrize("background", ["studio", "plain"])
def test_same_seed_same_bytes_and_other_seed_differs(background):
    a_img, a_mask, a_ids = synthetic_cars(2, 2, H, W, seed=3, background=background)
    b_img, b_mask, b_ids = synthetic_cars(2, 2, H, W, seed=3, background=background)
    c_img, _, _ = synthetic_cars(2, 2, H, W, seed=4, background=background)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_mask.tobytes() == b_mask.tobytes()
    assert a_ids == b_ids == ["c0000", "c0000", "c0001", "c0001"]
    assert a_img.tobytes() != c_img.tobytes()


def test_shapes_dtypes_and_mask_values():
    images, masks, ids = synthetic_cars(3, 2, H, W, seed=0)
    assert images.shape == (6, H, W, 3) and images.dtype == np.uint8
    assert masks.shape == (6, H, W) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    assert len(ids) == 6


def test_mask_covers_a_carvana_like_fraction():
    _, masks, _ = synthetic_cars(6, 2, H, W, seed=1)
    fractions = masks.mean(axis=(1, 2))
    # Carvana's cars cover roughly 20-30 % of the photo.
    assert fractions.min() > 0.08 and fractions.max() < 0.45
    assert 0.15 < fractions.mean() < 0.32
    # The car stays inside the frame: no mask pixel on the image border.
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()


def test_car_seeds_keep_earlier_cars_when_more_are_asked():
    assert car_seeds(3, 9) == car_seeds(5, 9)[:3]


def test_shadow_is_dark_and_outside_the_mask():
    for car_seed in car_seeds(8, 2):
        image, mask = render_car(car_seed, 1, H, W, "studio")
        # The backdrop never changes the mask: the shadow is not part of the car.
        assert np.array_equal(mask, render_car(car_seed, 1, H, W, "plain")[1])
        grey = image.astype(float).mean(axis=-1)
        rows, cols = np.nonzero(mask)
        ground, c0, c1 = rows.max(), cols.min(), cols.max()
        mid = slice(c0 + (c1 - c0) * 2 // 5, c0 + (c1 - c0) * 3 // 5)
        # Between the wheels, at the ground line: floor in the car's shadow, not car.
        under = (slice(ground - 1, ground + 2), mid)
        assert not mask[under].any()
        far = min(ground + int(0.15 * (c1 - c0)), H - 1)
        lit_floor = grey[far - 1 : far + 1, mid].mean()
        assert grey[under].mean() < 0.75 * lit_floor


def test_views_of_a_car_share_its_colour():
    seeds = car_seeds(6, 0)
    colours = np.array(
        [[_body_colour(*render_car(s, v, H, W)) for v in range(4)] for s in seeds]
    )  # [car, view, rgb]
    means = colours.mean(axis=1)
    # Lighting changes between views, but each view stays nearest to its own car's colour.
    dist = np.linalg.norm(colours[:, :, None, :] - means[None, None, :, :], axis=-1)
    assert np.array_equal(dist.argmin(axis=-1), np.repeat(np.arange(6)[:, None], 4, axis=1))


def test_views_differ_in_pose():
    masks = [render_car(5, v, H, W)[1] for v in range(4)]
    assert len({m.tobytes() for m in masks}) == 4


def test_plain_background_is_easy_for_otsu():
    images, masks, _ = synthetic_cars(8, 1, H, W, seed=0, background="plain")
    dice = dice_score(masks > 0, np.stack([_otsu_mask(im) for im in images]))
    assert dice.min() >= 0.9


def test_studio_background_defeats_a_global_threshold():
    images, masks, _ = synthetic_cars(8, 1, H, W, seed=0, background="studio")
    dice = dice_score(masks > 0, np.stack([_otsu_mask(im) for im in images]))
    assert dice.mean() < 0.85


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="background"):
        render_car(0, 0, H, W, background="forest")
    with pytest.raises(ValueError, match="too small"):
        render_car(0, 0, 4, 4)
