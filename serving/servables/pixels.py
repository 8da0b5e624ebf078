"""The pixel budget of a request's encoded images, checked before the request joins a batch.

A version's graph checks each image alone, so that requests batched together can't fail each
other; the request's total is checked here, from the images' headers, which Pillow reads
without decoding. Which inputs take encoded images, and the budget, come from the version's
own contract: export writes it to `assets.extra/manifest.json`, and
`common.contract.encoded_image_inputs` and `pads_outputs` read it as the graph was built.
A version without a manifest (a SavedModel from elsewhere) gets no check here. TF Serving reads
no manifest, so there the graph's per-image checks are all there is.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import Contract, encoded_image_inputs, pads_outputs, pixel_budget_text
from serving import errors

logger = logging.getLogger("serving")

MANIFEST = Path("assets.extra") / "manifest.json"
# The formats the graph reads a size from; anything else is the graph's to refuse.
FORMATS = ("JPEG", "PNG", "GIF", "BMP")


@dataclass(frozen=True)
class Budget:
    """One version's pixel budget: `max_pixels` and {signature: (input alias, padded)}."""

    max_pixels: int
    inputs: Mapping[str, tuple[str, bool]]


def read_budget(version_dir: Path, signature_defs: Mapping) -> Budget | None:
    """The budget a version's manifest states, or None when it states none.

    Only signatures the version has, with a string input of that alias, are kept.
    """
    path = Path(version_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        contract = Contract.from_dict(json.loads(path.read_text(encoding="utf-8"))["contract"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s: no pixel budget read (%s); the graph's checks alone apply", path, error)
        return None
    if contract.preprocessing is None:
        return None
    specs = {sig.name: sig for sig in contract.signatures}
    inputs = {}
    for key, alias in encoded_image_inputs(contract).items():
        signature = signature_defs.get(key)
        if signature is not None and alias in signature.inputs:
            inputs[key] = (alias, pads_outputs(specs[key]))
    return Budget(contract.preprocessing.max_pixels, inputs) if inputs else None


def header_size(data) -> tuple[int, int, int] | None:
    """(width, height, frames) from an encoded image's header, or None when Pillow can't
    read it (the graph then refuses or decodes it, image by image)."""
    if not isinstance(data, bytes):
        return None
    try:
        # Pillow reads headers only; its decompression-bomb check raises (over twice
        # Image.MAX_IMAGE_PIXELS) before the graph's own, exact refusal could say the size.
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            # A GIF's frames are walked block by block, not decoded.
            frames = image.n_frames if image.format == "GIF" else 1
            return image.width, image.height, frames
    except Exception:  # whatever Pillow raises on a bad header is the graph's to report
        return None


def check_images(images: np.ndarray, signature: str, max_pixels: int, padded: bool) -> None:
    """Refuses a request whose images together exceed `max_pixels`.

    Args:
        images: the request's encoded images (an object array of bytes).
        signature: the signature key, for the message.
        max_pixels: the contract's budget.
        padded: the signature pads every output to the largest image, so the padded area
            (count x largest height x largest width) counts too.

    Raises:
        ServingError: INVALID_ARGUMENT with the graph's kind of message.
    """
    count = images.size
    sizes = [size for size in map(header_size, images.ravel()) if size is not None]
    budget = pixel_budget_text(signature, max_pixels, "request")
    total = sum(width * height * frames for width, height, frames in sizes)
    if total > max_pixels:
        raise errors.invalid_argument(f"the {count} images are {total} pixels together; {budget}")
    if padded and sizes:
        width = max(size[0] for size in sizes)
        height = max(size[1] for size in sizes)
        area = count * width * height
        if area > max_pixels:
            raise errors.invalid_argument(
                f"the {count} outputs padded to {width}x{height} are {area} pixels; {budget}"
            )


_budgets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_budgets_lock = threading.Lock()


def _budget_of(servable) -> Budget | None:
    with _budgets_lock:
        if servable in _budgets:
            return _budgets[servable]
    path = getattr(servable, "path", None)
    budget = None if path is None else read_budget(path, servable.signature_defs)
    with _budgets_lock:
        _budgets[servable] = budget
    return budget


def check_request(servable, signature: str, inputs: Mapping[str, np.ndarray]) -> None:
    """Checks a decoded request's encoded images against its version's budget, if any.

    Args:
        servable: the loaded version (its path holds the manifest, read once).
        signature: the signature key.
        inputs: the request's arrays by input alias.

    Raises:
        ServingError: INVALID_ARGUMENT for images over the budget together.
    """
    budget = _budget_of(servable)
    if budget is None or signature not in budget.inputs:
        return
    alias, padded = budget.inputs[signature]
    images = inputs.get(alias)
    if images is not None:
        check_images(np.asarray(images, dtype=object), signature, budget.max_pixels, padded)
