"""The export's self-check: a version that fails it is never published.

It reloads the written SavedModel, checks every signature against the contract, runs it on real
inputs, compares `serving_default` with the Keras model, and runs the train/serve skew test: the
bytes signature, client-style NumPy/Pillow pre-processing and the training pipeline's
pre-processing must give the same answer for the same image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from client import preprocess as client_pre
from common.contract import BYTES_SIGNATURE, DEFAULT_SIGNATURE, SEEDS_SIGNATURE, Contract
from export.signatures import seed_latents, to_uint8
from training.data.preprocess import prepare_image
from training.errors import UserError

# Keras model vs the reloaded SavedModel, on the same input.
PARITY_ATOL = 1e-5
# Client (Pillow) vs TensorFlow pre-processing differ by float rounding only.
SKEW_ATOL = 1e-4


class ExportCheckError(UserError):
    """The written SavedModel does not behave like the trained model or its contract."""


def sample_image(model_name: str, config: Any) -> np.ndarray:
    """A real, non-square uint8 image of the kind the model serves, larger than its input."""
    side = config.image_size
    if model_name == "unet":
        from training.data.cars import render_car

        image, _ = render_car(car_seed=2024, view=3, height=side + 8, width=round(1.5 * side))
        return image
    from training.data.shapes import synthetic_objects

    images, _, _ = synthetic_objects(1, 2 * side, seed=2024, class_names=config.class_names,
                                     progress=False)
    return images[0][:, : 2 * side - 6]


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless encoding, so the bytes signature sees exactly the sample's pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_requests(model_name: str, config: Any, contract: Contract) -> dict[str, dict]:
    """Real inputs for every signature: warmup records and the self-check both use them."""
    if model_name == "generator":
        z = np.random.default_rng(0).standard_normal((2, contract.latent_dim)).astype(np.float32)
        return {DEFAULT_SIGNATURE: {"z": z}, SEEDS_SIGNATURE: {"seeds": np.array([0, 1])}}
    image = sample_image(model_name, config)
    return {
        DEFAULT_SIGNATURE: {"image": client_pre.prepare_image(image, contract.preprocessing)[None]},
        BYTES_SIGNATURE: {"image_bytes": np.array([png_bytes(image)], dtype=object)},
    }


def check_export(path: Path, model_name: str, keras_model, contract: Contract,
                 requests: dict[str, dict]) -> None:
    """Runs every check on the SavedModel at `path`; raises ExportCheckError on the first miss.

    Args:
        path: the written (not yet published) version folder.
        model_name: `unet`, `localizer` or `generator`.
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
    if model_name == "generator":
        _check_generator(keras_model, contract, requests, outputs)
    else:
        _check_parity(keras_model, model_name, requests[DEFAULT_SIGNATURE]["image"],
                      outputs[DEFAULT_SIGNATURE])
        # PNG is lossless: the bytes request holds exactly the sample image's pixels.
        encoded = requests[BYTES_SIGNATURE]["image_bytes"][0]
        image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        _check_skew(loaded.signatures[DEFAULT_SIGNATURE], model_name, image, contract,
                    outputs[BYTES_SIGNATURE])


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


def _close(name: str, got, want, atol: float) -> None:
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    if diff > atol:
        raise ExportCheckError(f"{name}: max difference {diff:.3g} exceeds {atol:g}")


def _check_parity(keras_model, model_name: str, image: np.ndarray, served: dict) -> None:
    out = keras_model(image, training=False)
    if model_name == "unet":
        _close("serving_default mask vs Keras", served["mask"], tf.sigmoid(out), PARITY_ATOL)
    else:
        _close("serving_default class_probs vs Keras", served["class_probs"], out["class_probs"],
               PARITY_ATOL)
        _close("serving_default box vs Keras", served["box"], out["box"], PARITY_ATOL)


def _check_skew(serve_image, model_name: str, image: np.ndarray, contract: Contract,
                from_bytes: dict) -> None:
    """Bytes signature, client pre-processing and the training pipeline give one answer."""
    pre = contract.preprocessing
    trained = prepare_image(tf.constant(image), pre).numpy()[None]
    client = client_pre.prepare_image(image, pre)[None]
    _close("client vs training pre-processing", client, trained, SKEW_ATOL)
    via_train = {k: v.numpy() for k, v in serve_image(tf.constant(trained)).items()}
    via_client = {k: v.numpy() for k, v in serve_image(tf.constant(client)).items()}
    height, width = image.shape[:2]
    if model_name == "unet":
        _close("mask: client vs training path", via_client["mask"], via_train["mask"], SKEW_ATOL)
        full = tf.image.resize(via_train["mask"], (height, width), method="bilinear").numpy()
        _close("mask: bytes signature vs training path", from_bytes["mask"], full, SKEW_ATOL)
        return
    for key in ("class_probs", "box"):
        _close(f"{key}: client vs training path", via_client[key], via_train[key], SKEW_ATOL)
    _close("class_probs: bytes signature vs training path", from_bytes["class_probs"],
           via_train["class_probs"], SKEW_ATOL)
    scale = np.array([width, height, height, width], np.float32)
    # Pixel boxes: a 1e-4 normalised tolerance scaled to the image.
    _close("box: bytes signature vs training path", from_bytes["box"] / scale,
           via_train["box"], SKEW_ATOL)


def _check_generator(keras_model, contract: Contract, requests: dict, outputs: dict) -> None:
    z = requests[DEFAULT_SIGNATURE]["z"]
    want = to_uint8(keras_model(z, training=False)).numpy()
    # uint8 rounding may flip by one level where the float sits on a half step.
    _close("serving_default images vs Keras", outputs[DEFAULT_SIGNATURE]["images"], want, 1)
    seeds = requests[SEEDS_SIGNATURE]["seeds"]
    seeded = to_uint8(keras_model(seed_latents(tf.constant(seeds), contract.latent_dim))).numpy()
    _close("serve_seeds images vs Keras", outputs[SEEDS_SIGNATURE]["images"], seeded, 1)
