"""The export's self-check: a version that fails it is never published.

It loads the written SavedModel as TF Serving does (into a Session, `export.session`), checks
every signature against the contract, runs it on the same real inputs the warmup file holds,
and hands the answers to the model's export module, which compares them with the Keras model
and runs the train/serve skew test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from common.contract import Contract
from export.models import export_module
from export.models.base import ExportCheckError, Requests
from export.models.images import png_bytes
from export.session import SessionModel

__all__ = ["ExportCheckError", "check_export", "png_bytes", "sample_image", "sample_requests"]


def sample_image(model_name: str, config: Any) -> np.ndarray:
    """A real, non-square uint8 image of the kind the model serves, larger than its input."""
    make = export_module(model_name).sample_image
    if make is None:
        raise ValueError(f"{model_name!r} takes no images")
    return make(config)


def sample_requests(model_name: str, config: Any, contract: Contract) -> dict[str, dict]:
    """Real inputs for every signature: warmup records and the self-check both use them."""
    return export_module(model_name).sample_requests(config, contract)


def check_export(
    path: Path, model_name: str, keras_model, contract: Contract, requests: Requests
) -> None:
    """Runs every check on the SavedModel at `path`; raises ExportCheckError on the first miss.

    The version is loaded as TF Serving loads it (`export.session`: a Session, the restore and
    init ops, tensors by SignatureDef names), so what passes here is what TF Serving runs.

    Args:
        path: the written (not yet published) version folder.
        model_name: a registered model name (`export.models.EXPORTS`).
        keras_model: the trained servable Keras model.
        contract: the model's serving contract.
        requests: the inputs per signature, as written to the warmup file (so the records that
            TF Serving replays are exactly the ones checked here).
    """
    loaded = SessionModel(path)
    try:
        outputs = {}
        for sig in contract.signatures:
            if sig.name not in loaded.signature_defs:
                raise ExportCheckError(f"signature {sig.name!r} is missing from the SavedModel")
            _check_io(loaded.signature_defs[sig.name], sig)
            outputs[sig.name] = loaded.run(sig.name, requests[sig.name])
            for name, value in outputs[sig.name].items():
                if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                    raise ExportCheckError(f"{sig.name}/{name} has non-finite values")
        export_module(model_name).check(keras_model, loaded, contract, requests, outputs)
    finally:
        loaded.close()


def _shape(info) -> tuple | None:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)


def _check_side(sig, side: str, infos, specs, *, exact: bool) -> None:
    want = {t.name: t for t in specs}
    if set(infos) != set(want):
        raise ExportCheckError(f"{sig.name} {side} {sorted(infos)} != contract {sorted(want)}")
    for name, info in infos.items():
        spec = want[name]
        dtype = tf.dtypes.as_dtype(info.dtype).name
        shape = _shape(info)
        if exact:
            fits = shape == tuple(spec.shape)
        else:
            fits = (
                shape is not None
                and len(shape) == len(spec.shape)
                and all(w is None or s == w for s, w in zip(shape, spec.shape, strict=True))
            )
        if dtype != spec.dtype or not fits:
            shown = "<unknown rank>" if shape is None else list(shape)
            raise ExportCheckError(
                f"{sig.name} {side[:-1]} {name} is {dtype}{shown}, contract says "
                f"{spec.dtype}{list(spec.shape)}"
            )


def _check_io(signature_def, sig) -> None:
    """The SignatureDef's aliases, dtypes and shapes against the contract's."""
    _check_side(sig, "inputs", signature_def.inputs, sig.inputs, exact=True)
    _check_side(sig, "outputs", signature_def.outputs, sig.outputs, exact=False)
