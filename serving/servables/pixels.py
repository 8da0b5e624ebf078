"""The pixel budget of a request's encoded images, checked before the request joins a batch.

A version's graph checks each image alone, and the request's total can only be checked here:
a batching server runs several requests through one graph call. Each image's own limits are
checked here too, from the same headers, so that an image the graph would refuse never joins
(and fails) a batch. Pillow reads the headers without decoding; an image it can't read is the
graph's to refuse or decode. Which inputs take encoded images, and the budget, come from the
version's own contract: export writes it to `assets.extra/manifest.json`, and
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

from common.contract import (
    Contract,
    Preprocessing,
    encoded_image_inputs,
    pads_outputs,
    pixel_refusals,
)
from serving import errors

logger = logging.getLogger("serving")

MANIFEST = Path("assets.extra") / "manifest.json"
# The formats the graph reads a size from; anything else is the graph's to refuse.
FORMATS = ("JPEG", "PNG", "GIF", "BMP")


@dataclass(frozen=True)
class Budget:
    """One version's pixel budget: its pre-processing and {signature: (input alias, padded)}."""

    pre: Preprocessing
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
    return Budget(contract.preprocessing, inputs) if inputs else None


def header_size(data) -> tuple[int, int, int, int] | None:
    """(width, height, frames, JPEG scans) from an encoded image's header, or None when Pillow
    can't read it (the graph then refuses or decodes it, image by image)."""
    if not isinstance(data, bytes):
        return None
    try:
        # Pillow reads headers only; its decompression-bomb check raises (over twice
        # Image.MAX_IMAGE_PIXELS) before the graph's own, exact refusal could say the size.
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            # A GIF's frames are walked block by block, not decoded.
            frames = image.n_frames if image.format == "GIF" else 1
            # SOS markers, counted as the graph counts them (`export.models.pixels`).
            scans = data.count(b"\xff\xda") if image.format == "JPEG" else 0
            return image.width, image.height, frames, scans
    except Exception:  # whatever Pillow raises on a bad header is the graph's to report
        return None


def check_images(images: np.ndarray, signature: str, pre: Preprocessing, padded: bool) -> None:
    """Refuses a request with an image over the contract's limits, or over `max_pixels`
    together.

    Args:
        images: the request's encoded images (an object array of bytes).
        signature: the signature key, for the message.
        pre: the contract's pre-processing (`max_pixels`, `max_side`, `max_jpeg_scans`).
        padded: the signature pads every output to the largest image, so each side is
            bounded and the padded area (count x largest height x largest width) counts.

    Raises:
        ServingError: INVALID_ARGUMENT with the graph's kind of message.
    """
    texts = pixel_refusals(signature, pre)
    count, total, widest, tallest = images.size, 0, 0, 0
    for index, data in enumerate(images.ravel()):
        size = header_size(data)
        if size is None:
            continue
        width, height, frames, scans = size
        pixels = width * height * frames
        if pixels > pre.max_pixels:
            if frames > 1:
                text = texts["frames"].format(index, frames, width, height, pixels)
            else:
                text = texts["pixels"].format(index, width, height, pixels)
            raise errors.invalid_argument(text)
        if padded and max(width, height) > pre.max_side:
            raise errors.invalid_argument(texts["side"].format(index, width, height))
        if scans > pre.max_jpeg_scans:
            raise errors.invalid_argument(texts["scans"].format(index, scans))
        total += pixels
        widest, tallest = max(widest, width), max(tallest, height)
    if total > pre.max_pixels:
        raise errors.invalid_argument(texts["total"].format(count, total))
    area = count * widest * tallest
    if padded and area > pre.max_pixels:
        raise errors.invalid_argument(texts["padded"].format(count, widest, tallest, area))


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
        ServingError: INVALID_ARGUMENT for an image over the budget, or images over it
            together.
    """
    budget = _budget_of(servable)
    if budget is None or signature not in budget.inputs:
        return
    alias, padded = budget.inputs[signature]
    images = inputs.get(alias)
    if images is not None:
        check_images(np.asarray(images, dtype=object), signature, budget.pre, padded)
