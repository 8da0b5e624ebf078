"""How two versions' answers are compared, and how one answer is scored against the truth.

The rollout gates (canary against stable on a golden set) and the client's shadow mode (live
calls mirrored to the canary) use the same measures; `client.canary.comparisons` names each
model's. Every function returns a dict of floats in [0, 1], higher is better.

Example:
    >>> dice(np.ones((4, 4), bool), np.eye(4, dtype=bool))
    0.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from client.canary.judge import judge_scores, shipped_judge
from client.results import Generation, Localization, Segmentation

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class BoxLabel:
    """A golden object's true class and box, as inclusive pixel corners like `Localization.box`."""

    class_name: str
    box: Box


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A and B| / (|A| + |B|) of two boolean masks; two empty masks agree fully (1.0)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes given as inclusive pixel corners."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    width = min(ax1, bx1) - max(ax0, bx0) + 1
    height = min(ay1, by1) - max(ay0, by0) + 1
    inter = max(width, 0) * max(height, 0)

    def area(x0, y0, x1, y1) -> int:
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)

    union = area(*a) + area(*b) - inter
    return 1.0 if union == 0 else inter / union


# -- unet --------------------------------------------------------------------------------------


def segmentation_agreement(stable: Segmentation, canary: Segmentation) -> dict[str, float]:
    """`dice` between the two masks."""
    return {"dice": dice(stable.mask, canary.mask)}


def segmentation_truth(result: Segmentation, mask: np.ndarray) -> dict[str, float]:
    """`dice` of the mask against the true one."""
    return {"dice": dice(result.mask, mask)}


def segmentation_picture(image: np.ndarray, result: Segmentation) -> Image.Image:
    from client.images.pictures import overlay_mask

    return overlay_mask(image, result.mask)


# -- localizer ---------------------------------------------------------------------------------


def localization_agreement(stable: Localization, canary: Localization) -> dict[str, float]:
    """`class_agreement` (1 when both name the same class) and `box_iou` between the boxes."""
    return {
        "class_agreement": float(stable.class_name == canary.class_name),
        "box_iou": box_iou(stable.box, canary.box),
    }


def localization_truth(result: Localization, label: BoxLabel) -> dict[str, float]:
    """`accuracy` (1 for the true class) and `box_iou` against the true box."""
    return {
        "accuracy": float(result.class_name == label.class_name),
        "box_iou": box_iou(result.box, label.box),
    }


def localization_picture(image: np.ndarray, result: Localization) -> Image.Image:
    from client.images.pictures import draw_box

    return draw_box(image, result.box, f"{result.class_name} {result.score:.2f}", min_side=128)


# -- generator ---------------------------------------------------------------------------------


def generation_agreement(stable: Generation, canary: Generation) -> dict[str, float]:
    """Over the images of two answers to the same latents: `judge_agreement`, the share the
    judge reads as the same digit, and `pixel_agreement`, 1 - mean |difference| / 255.

    A retrained generator maps a latent to another digit, so these say "the same model" rather
    than "as good a model"; the generator's gate is its judge quality (`generation_quality`).
    """
    a, b = np.asarray(stable.images), np.asarray(canary.images)
    if a.shape != b.shape:
        return {"judge_agreement": 0.0, "pixel_agreement": 0.0}
    # One judge call for both answers: small NumPy calls cost mostly their overhead.
    digits = shipped_judge().probabilities(np.concatenate([a, b])).argmax(-1)
    same = digits[: len(a)] == digits[len(a) :]
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0
    return {"judge_agreement": float(same.mean()), "pixel_agreement": 1.0 - float(diff)}


def generation_quality(results: Sequence[Generation]) -> dict[str, float]:
    """The judge's verdict on every image of `results` (see `client.canary.judge.judge_scores`)."""
    images = np.concatenate([np.asarray(r.images) for r in results])
    return judge_scores(shipped_judge().probabilities(images))


def generation_picture(image: np.ndarray | None, result: Generation) -> Image.Image:
    from client.images.pictures import sample_grid

    return sample_grid(np.asarray(result.images), scale=4)
