"""Classical baselines the U-Net is measured against."""

import numpy as np
import pytest

from training.baselines import baseline_dice, kmeans_mask, otsu_mask
from training.data.cars import synthetic_cars


@pytest.mark.parametrize("method", [otsu_mask, kmeans_mask])
def test_dark_object_on_bright_background_is_the_object(method):
    image = np.full((40, 40, 3), 0.9)
    image[10:30, 12:28] = 0.2
    image[18:22, 18:22] = 0.9  # a hole, which is filled
    truth = np.zeros((40, 40), bool)
    truth[10:30, 12:28] = True
    np.testing.assert_array_equal(method(image), truth)


def test_plain_background_is_easy_and_studio_is_not():
    scores = {}
    for background in ("plain", "studio"):
        images, masks, _ = synthetic_cars(4, 3, 48, 72, 5, background, progress=False)
        scores[background] = baseline_dice(images / 255.0, masks > 0)
    assert scores["plain"]["baseline_otsu_dice"] > 0.9
    assert scores["studio"]["baseline_otsu_dice"] < 0.85
