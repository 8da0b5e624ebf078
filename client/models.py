"""What the client knows of each model: its result type and how a raw answer becomes one.

One entry per image model in IMAGE_MODELS; `ServingClient.predict_images` serves any of them,
and `segment`/`localize` add their classical fallbacks on top. The generator takes no images:
`generation` turns its answer into a result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from client import postprocess
from common.contract import Contract


@dataclass(frozen=True)
class Segmentation:
    """A foreground mask at the image's original size, and where it came from."""

    mask: np.ndarray
    probabilities: np.ndarray
    source: str
    instances: np.ndarray | None = None

    @property
    def foreground_fraction(self) -> float:
        return float(np.mean(self.mask))

    @property
    def instance_count(self) -> int | None:
        return None if self.instances is None else int(self.instances.max())


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


# (contract, serving_default outputs for one image, the image as sent, source) -> result.
PostProcess = Callable[[Contract, Mapping[str, np.ndarray], np.ndarray, str], Any]


def segmentation(
    contract: Contract, out: Mapping[str, np.ndarray], image: np.ndarray, source: str
) -> Segmentation:
    """Mask probabilities resized to the image's size, then thresholded."""
    probs = postprocess.resize_probabilities(out["mask"], *image.shape[:2])
    return Segmentation(postprocess.threshold(probs, contract.mask_threshold), probs, source)


def localization(
    contract: Contract, out: Mapping[str, np.ndarray], image: np.ndarray, source: str
) -> Localization:
    """The most probable class, and the normalised box as clipped pixel corners."""
    probs = np.asarray(out["class_probs"], np.float64)
    best = int(np.argmax(probs))
    names = contract.class_names
    return Localization(
        names[best],
        float(probs[best]),
        postprocess.box_to_pixels(out["box"], *image.shape[:2]),
        source,
        {name: float(p) for name, p in zip(names, probs, strict=True)},
    )


def generation(images: np.ndarray, seeds: list[int] | None, source: str) -> Generation:
    """The generator's answer as uint8 images."""
    return Generation(postprocess.to_uint8_images(images), seeds, source)


# The image models the client serves, by contract kind.
IMAGE_MODELS: dict[str, PostProcess] = {"unet": segmentation, "localizer": localization}
