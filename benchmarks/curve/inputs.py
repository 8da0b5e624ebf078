"""The request a curve sends: a valid random input built from the served signature, or a file.

A signature's metadata (GetModelMetadata, as `Transport.metadata` returns it) gives each
input's dtype and shape: floats are drawn in [0, 1) (the scale of the project's image and
latent inputs), integers in [0, 10), booleans at random, and the batch dimension is
`batch`. A string input that the project's contract says takes encoded images gets a random
PNG of the contract's input size; any other string input gets random letters. Anything else
(a model whose inputs need other values) comes from a `.npz` file: one array per input alias.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from client.errors import ClientError
from client.transports.served_contract import contract_from_metadata
from common.contract import CONTRACTS, encoded_image_inputs

_NUMERIC = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_BOOL": np.bool_,
}
# The size of a dynamic dimension other than the batch (there is no better guess).
DYNAMIC_SIZE = 1


def _encoded_images(
    model: str, metadata: Mapping[str, Any], signature: str
) -> dict[str, tuple[int, int]]:
    """{input alias: (height, width)} of the signature's inputs that take encoded images."""
    if model not in CONTRACTS:
        return {}
    try:
        contract = contract_from_metadata(model, metadata)
    except (ClientError, ValueError, TypeError, IndexError):
        # A model named like one of ours but serving other signatures: its strings are strings.
        return {}
    alias = encoded_image_inputs(contract).get(signature)
    if alias is None or contract.preprocessing is None:
        return {}
    return {alias: contract.preprocessing.size}


def _png(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def random_inputs(
    model: str, metadata: Mapping[str, Any], signature: str, batch: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """A valid random input for `signature` of a served model.

    Args:
        model: The served model's name (a name of the contract registry turns on its
            encoded-image inputs).
        metadata: The model's metadata as `Transport.metadata` returns it.
        signature: The signature to call.
        batch: The size of the first dimension where it is dynamic.
        seed: The random generator's seed.

    Raises:
        ValueError: For a signature the model lacks (naming those it has), an input of unknown
            rank or of a dtype with no random rule (both suggest --request).
    """
    signatures = metadata.get("signatures", {})
    if signature not in signatures:
        raise ValueError(
            f"model {model!r} has no signature {signature!r}; it has: "
            f"{', '.join(sorted(signatures)) or 'none'}"
        )
    if batch < 1:
        raise ValueError(f"the batch size must be at least 1, not {batch}")
    rng = np.random.default_rng(seed)
    images = _encoded_images(model, metadata, signature)
    inputs = {}
    for alias, info in signatures[signature]["inputs"].items():
        if info["shape"] is None:
            raise ValueError(
                f"input {alias!r} of {signature!r} has an unknown rank; give its value with "
                "--request FILE.npz"
            )
        shape = [
            (batch if i == 0 else DYNAMIC_SIZE) if size < 0 else size
            for i, size in enumerate(info["shape"])
        ]
        dtype = info["dtype"]
        if dtype == "DT_STRING":
            if alias in images:
                flat = [_png(rng, images[alias]) for _ in range(int(np.prod(shape)))]
            else:
                letters = rng.integers(ord("a"), ord("z") + 1, (int(np.prod(shape)), 16))
                flat = [bytes(row.astype(np.uint8)) for row in letters]
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            inputs[alias] = array.reshape(shape)
        elif dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF"):
            inputs[alias] = rng.random(shape).astype(_NUMERIC[dtype])
        elif dtype == "DT_BOOL":
            inputs[alias] = rng.integers(0, 2, shape).astype(bool)
        elif dtype in _NUMERIC:
            inputs[alias] = rng.integers(0, 10, shape).astype(_NUMERIC[dtype])
        else:
            raise ValueError(
                f"input {alias!r} of {signature!r} is {dtype}, which has no random rule here; "
                "give its value with --request FILE.npz"
            )
    return inputs


def load_request(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The inputs stored in a `.npz` file (one array per input alias; strings as bytes).

    Raises:
        ValueError: For a file that is missing, not an .npz archive, or holds no arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--request {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            inputs = {alias: archive[alias] for alias in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--request {path} is not a NumPy .npz archive ({error}); write one with "
            "numpy.savez(path, alias=array, ...)"
        ) from None
    if not inputs:
        raise ValueError(f"--request {path} holds no arrays; it needs one per input alias")
    return inputs
