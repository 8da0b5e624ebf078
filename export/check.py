"""The export's self-check: a version that fails it is never published.

It reloads the written SavedModel, checks every signature against the contract, runs it on the
same real inputs the warmup file holds, and hands the answers to the model's export module,
which compares them with the Keras model and runs the train/serve skew test.
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

    Args:
        path: the written (not yet published) version folder.
        model_name: a registered model name (`export.models.EXPORTS`).
        keras_model: the trained servable Keras model.
        contract: the model's serving contract.
        requests: the inputs per signature, as written to the warmup file (so the records that
            TF Serving replays are exactly the ones checked here).
    """
    loaded = tf.saved_model.load(str(path))
    outputs = {}
    for sig in contract.signatures:
        if sig.name not in loaded.signatures:
            raise ExportCheckError(f"signature {sig.name!r} is missing from the SavedModel")
        fn = loaded.signatures[sig.name]
        _check_io(fn, sig)
        result = fn(**{k: tf.constant(v) for k, v in requests[sig.name].items()})
        outputs[sig.name] = {k: v.numpy() for k, v in result.items()}
        for name, value in outputs[sig.name].items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ExportCheckError(f"{sig.name}/{name} has non-finite values")
    export_module(model_name).check(keras_model, loaded, contract, requests, outputs)


def _check_io(fn, sig) -> None:
    inputs = fn.structured_input_signature[1]
    want_in = {t.name: t for t in sig.inputs}
    if set(inputs) != set(want_in):
        raise ExportCheckError(f"{sig.name} inputs {sorted(inputs)} != contract {sorted(want_in)}")
    for name, spec in inputs.items():
        want = want_in[name]
        if spec.dtype.name != want.dtype or tuple(spec.shape.as_list()) != want.shape:
            raise ExportCheckError(
                f"{sig.name}/{name} is {spec.dtype.name}{spec.shape}, contract says "
                f"{want.dtype}{list(want.shape)}"
            )
    outputs = fn.structured_outputs
    want_out = {t.name: t for t in sig.outputs}
    if set(outputs) != set(want_out):
        raise ExportCheckError(
            f"{sig.name} outputs {sorted(outputs)} != contract {sorted(want_out)}"
        )
    for name, spec in outputs.items():
        want = want_out[name]
        shape = tuple(spec.shape.as_list())
        compatible = len(shape) == len(want.shape) and all(
            w is None or s == w for s, w in zip(shape, want.shape, strict=True)
        )
        if spec.dtype.name != want.dtype or not compatible:
            raise ExportCheckError(
                f"{sig.name} output {name} is {spec.dtype.name}{list(shape)}, contract says "
                f"{want.dtype}{list(want.shape)}"
            )
