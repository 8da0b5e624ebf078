"""Classical segmentation baselines, scored on the same validation images as the U-Net.

They use scikit-image and scikit-learn as reference implementations. Polarity is chosen so that
the image border is background, and holes are filled, which is the fairest reading of a global
method for a single centred object.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu
from sklearn.cluster import KMeans

from training.metrics import dice_score


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Otsu's global threshold on the grey image. `image` is float RGB in [0, 1]."""
    gray = rgb2gray(image)
    return _as_object(gray > threshold_otsu(gray))


def kmeans_mask(image: np.ndarray, k: int = 2, seed: int = 0) -> np.ndarray:
    """K-means on RGB pixels (several restarts); the clusters touching the border less are the
    object."""
    pixels = image.reshape(-1, image.shape[-1])
    # Fitting on a sample of pixels gives the same centroids for a fraction of the time.
    rng = np.random.default_rng(seed)
    sample = pixels[rng.choice(len(pixels), min(len(pixels), 4096), replace=False)]
    kmeans = KMeans(k, n_init=4, random_state=seed).fit(sample)
    labels = kmeans.predict(pixels).reshape(image.shape[:2])
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = np.bincount(border, minlength=k).argmax()
    return _as_object(labels != background)


def _as_object(mask: np.ndarray) -> np.ndarray:
    """Flips the mask if most of the border is foreground, then fills holes."""
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if border.mean() > 0.5:
        mask = ~mask
    return ndimage.binary_fill_holes(mask)


BASELINES = {"otsu": otsu_mask, "kmeans": kmeans_mask}


def baseline_dice(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean Dice of each baseline over `images` [N,H,W,3] in [0,1] against boolean `masks`."""
    scores = {}
    for name, method in BASELINES.items():
        pred = np.stack([method(image) for image in images])
        scores[f"baseline_{name}_dice"] = float(np.mean(dice_score(masks, pred)))
    return scores
