"""Classical segmentation baselines, scored on the same validation images as the U-Net.

They are the client's own fallbacks (`client.fallbacks`), so the figures in a run's
`metrics.json` are what a client falling back would get. Polarity is chosen so that the image
border is background, and holes are filled, which is the fairest reading of a global method for
a single centred object.
"""

from __future__ import annotations

import numpy as np

from client.fallbacks import methods as fallbacks
from training.metrics import dice_score


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Otsu's global threshold on the grey image. `image` is float RGB in [0, 1]."""
    return _filled(fallbacks.segment(image, "otsu"))


def kmeans_mask(image: np.ndarray) -> np.ndarray:
    """K-means (k = 2, several restarts) on RGB pixels; the cluster off the border is the object."""
    return _filled(fallbacks.segment(image, "kmeans"))


def _filled(mask: np.ndarray) -> np.ndarray:
    return fallbacks.clean_mask(mask, largest_only=False, fill_holes=True)


BASELINES = {"otsu": otsu_mask, "kmeans": kmeans_mask}


def baseline_dice(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean Dice of each baseline over `images` [N,H,W,3] in [0,1] against boolean `masks`."""
    scores = {}
    for name, method in BASELINES.items():
        pred = np.stack([method(image) for image in images])
        scores[f"baseline_{name}_dice"] = float(np.mean(dice_score(masks, pred)))
    return scores
