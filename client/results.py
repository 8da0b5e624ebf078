"""What the client's calls return: a segmentation, a localization or a generation.

A leaf module (NumPy only): the model registry (`client.models`), the canary measures
(`client.canary`) and the fallbacks all speak of these types without importing one another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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


def with_source(result, source: str):
    """Any result (segmentation, localization, generation), said to come from `source`."""
    if isinstance(result, Segmentation):
        return result.with_source(source)
    return dataclasses.replace(result, source=source)
