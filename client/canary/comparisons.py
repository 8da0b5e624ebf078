"""How each model's answers are compared between versions and scored against the truth.

One entry per model in COMPARISONS; the rollout gates and shadow mode read it, and the measures
are in `client.canary.agreement`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.canary import agreement


@dataclass(frozen=True)
class Comparison:
    """How one model's answers are compared between versions and scored against the truth.

    Attributes:
        inputs: what one golden item is: `images` (an image model) or `seeds` (latent seeds,
            or latent vectors, of the generator).
        truth: the ground truth a golden set may hold for an item: `masks`, `labels` (class and
            box), or None.
        agreement: (stable answer, canary answer) for one item -> measures, 1 = identical.
        against_truth: (answer, truth) for one item -> measures, 1 = right; None if no truth.
        quality: every answer of one version -> set-level measures; None if none.
        picture: (the item's image or None, answer) -> a picture of the answer, for reports.
        measures: the names each of `agreement`, `truth` and `quality` returns (so a gates file
            is checked before anything is sent).
    """

    inputs: str
    truth: str | None
    agreement: Callable[[Any, Any], dict[str, float]]
    against_truth: Callable[[Any, Any], dict[str, float]] | None
    quality: Callable[[list], dict[str, float]] | None
    picture: Callable[[np.ndarray | None, Any], Any]
    measures: dict[str, tuple[str, ...]]


COMPARISONS: dict[str, Comparison] = {
    "unet": Comparison(
        "images",
        "masks",
        agreement.segmentation_agreement,
        agreement.segmentation_truth,
        None,
        agreement.segmentation_picture,
        {"agreement": ("dice",), "truth": ("dice",)},
    ),
    "localizer": Comparison(
        "images",
        "labels",
        agreement.localization_agreement,
        agreement.localization_truth,
        None,
        agreement.localization_picture,
        {"agreement": ("class_agreement", "box_iou"), "truth": ("accuracy", "box_iou")},
    ),
    "generator": Comparison(
        "seeds",
        None,
        agreement.generation_agreement,
        None,
        agreement.generation_quality,
        agreement.generation_picture,
        {
            "agreement": ("judge_agreement", "pixel_agreement"),
            "quality": ("judge_confidence", "recognizability"),
        },
    ),
}


def comparison(kind: str) -> Comparison:
    """The COMPARISONS entry of `kind`, or a ValueError listing the valid kinds."""
    try:
        return COMPARISONS[kind]
    except KeyError:
        valid = ", ".join(COMPARISONS)
        raise ValueError(f"no comparison for model kind {kind!r}; valid: {valid}") from None
