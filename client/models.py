"""What the client knows of each model: its result type and how a raw answer becomes one.

One entry per image model in IMAGE_MODELS; `ServingClient.predict_images` serves any of them,
and `segment`/`localize` add their classical fallbacks on top. The generator takes no images:
`generation` turns its answer into a result.

COMPARISONS says, per model, how two versions' answers are compared and scored (the rollout
gates and shadow mode use it; the measures are in `client.agreement`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from client import agreement, postprocess
from common.contract import BYTES_MASK_PNG_SIGNATURE, BYTES_SIGNATURE, Contract


class Segmentation:
    """A foreground mask at the image's original size, and where it came from.

    Args:
        mask: boolean `[H, W]`.
        probabilities: float32 `[H, W]`, or a function that computes them: a model's mask is
            made without float probabilities at the photo's size, which cost more than the rest
            of the post-processing, so they are computed the first time they are read.
        source: `model:<name>/<version>` or `fallback:<method>`.
        instances: int labels `[H, W]` of a watershed fallback, else None.
    """

    __slots__ = ("_probabilities", "instances", "mask", "source")

    def __init__(
        self,
        mask: np.ndarray,
        probabilities: np.ndarray | Callable[[], np.ndarray],
        source: str,
        instances: np.ndarray | None = None,
    ):
        self.mask, self.source, self.instances = mask, source, instances
        self._probabilities = probabilities

    @property
    def probabilities(self) -> np.ndarray:
        if callable(self._probabilities):
            self._probabilities = self._probabilities()
        return self._probabilities

    @property
    def foreground_fraction(self) -> float:
        return float(np.mean(self.mask))

    @property
    def instance_count(self) -> int | None:
        return None if self.instances is None else int(self.instances.max())

    def with_mask(self, mask: np.ndarray) -> Segmentation:
        """The same result with another mask (a cleaned-up one)."""
        return Segmentation(mask, self._probabilities, self.source, self.instances)

    def with_source(self, source: str) -> Segmentation:
        """The same result, said to come from `source`."""
        return Segmentation(self.mask, self._probabilities, source, self.instances)

    def __repr__(self) -> str:
        return f"Segmentation(mask {self.mask.shape}, source={self.source!r})"


@dataclass(frozen=True)
class Localization:
    """The object's class and its box in original pixels: (x_min, y_min, x_max, y_max)."""

    class_name: str
    score: float
    box: tuple[int, int, int, int]
    source: str
    class_probs: dict[str, float] | None = None


@dataclass(frozen=True)
class Generation:
    """Generated uint8 images [N, H, W, C]."""

    images: np.ndarray
    seeds: list[int] | None
    source: str


# (contract, serving_default outputs for one image, the image's (height, width), source) -> result.
PostProcess = Callable[[Contract, Mapping[str, np.ndarray], tuple[int, int], str], Any]


def segmentation(
    contract: Contract, out: Mapping[str, np.ndarray], size: tuple[int, int], source: str
) -> Segmentation:
    """The mask at the image's size; its float probabilities there only when asked for."""
    low = out["mask"]
    mask = postprocess.mask_at_size(low, *size, contract.mask_threshold)
    return Segmentation(mask, lambda: postprocess.resize_probabilities(low, *size), source)


def localization(
    contract: Contract, out: Mapping[str, np.ndarray], size: tuple[int, int], source: str
) -> Localization:
    """The most probable class, and the normalised box as clipped pixel corners."""
    probs = np.asarray(out["class_probs"], np.float64)
    best = int(np.argmax(probs))
    names = contract.class_names
    return Localization(
        names[best],
        float(probs[best]),
        postprocess.box_to_pixels(out["box"], *size),
        source,
        {name: float(p) for name, p in zip(names, probs, strict=True)},
    )


def with_source(result, source: str):
    """Any result (segmentation, localization, generation), said to come from `source`."""
    if isinstance(result, Segmentation):
        return result.with_source(source)
    return dataclasses.replace(result, source=source)


def generation(images: np.ndarray, seeds: list[int] | None, source: str) -> Generation:
    """The generator's answer as uint8 images."""
    return Generation(postprocess.to_uint8_images(images), seeds, source)


@dataclass(frozen=True)
class ImageModel:
    """How the client serves one image model.

    Attributes:
        postprocess: serving_default's answer for one image -> the result.
        bytes_signature: the signature that takes encoded images and answers small enough for
            REST's JSON; REST calls send images there as they are (no client decoding).
        from_bytes: that signature's answer for one image -> serving_default's outputs.
    """

    postprocess: PostProcess
    bytes_signature: str
    from_bytes: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def _mask_from_png(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """serve_bytes_mask_png answers 8-bit probability levels as a PNG; serving_default floats."""
    return {"mask": postprocess.png_levels(out["mask_png_bytes"])[..., None] / np.float32(255.0)}


def _normalised_box(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """serve_bytes answers the box in the image's pixels; serving_default normalised."""
    height, width = (float(v) for v in out["image_size"])
    box = np.asarray(out["box"], np.float64) / np.array([width, height, height, width])
    return {**out, "box": box}


# The image models the client serves, by contract kind.
IMAGE_MODELS: dict[str, ImageModel] = {
    "unet": ImageModel(segmentation, BYTES_MASK_PNG_SIGNATURE, _mask_from_png),
    "localizer": ImageModel(localization, BYTES_SIGNATURE, _normalised_box),
}


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
