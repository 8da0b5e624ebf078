"""What the client knows of each model: its result type and how a raw answer becomes one.

One entry per image model in IMAGE_MODELS; `ServingClient.predict_images` serves any of them,
and `segment`/`localize` add their classical fallbacks on top. The generator takes no images:
`generation` turns its answer into a result.

The result types are in `client.results`; how two versions' answers are compared is in
`client.canary.comparisons`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.images import postprocess
from client.results import Generation, Localization, Segmentation
from common.contract import BYTES_MASK_PNG_SIGNATURE, BYTES_SIGNATURE, Contract

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
        outputs: the serving_default outputs `postprocess` reads; a gRPC call asks for these
            alone (Predict's output_filter), so the server neither fetches nor sends the rest.
    """

    postprocess: PostProcess
    bytes_signature: str
    from_bytes: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    outputs: tuple[str, ...]


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
    "unet": ImageModel(segmentation, BYTES_MASK_PNG_SIGNATURE, _mask_from_png, ("mask",)),
    "localizer": ImageModel(localization, BYTES_SIGNATURE, _normalised_box, ("class_probs", "box")),
}
