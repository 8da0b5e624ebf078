"""The `unet` export module: float images or encoded bytes in, mask probabilities out."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.contract import (
    BYTES_MASK_PNG_SIGNATURE,
    BYTES_SIGNATURE,
    DEFAULT_SIGNATURE,
    Contract,
)
from export.models.base import (
    AUTOGRAPH,
    PARITY_ATOL,
    SKEW_ATOL,
    ExportCheckError,
    ExportModule,
    close,
    input_spec,
)
from export.models.images import INPUT_KINDS, decode_images, image_requests, skew_inputs


def signatures(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    @tf.function(input_signature=[input_spec(contract, DEFAULT_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_image(image):
        logits = model(image, training=False)
        return {"mask": tf.sigmoid(logits), "mask_logits": logits}

    @tf.function(input_signature=[input_spec(contract, BYTES_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_bytes(image_bytes):
        images, sizes = decode_images(image_bytes, contract, padded=True)
        probs = tf.sigmoid(model(images, training=False))
        # Each mask goes back to its own image's size; a batch of mixed sizes is padded with
        # zeros to the largest, and `image_size` tells the caller where to crop.
        max_h, max_w = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])

        def restore(args):
            prob, size = args
            resized = tf.image.resize(prob, size, method="bilinear")
            return tf.image.pad_to_bounding_box(resized, 0, 0, max_h, max_w)

        masks = tf.map_fn(
            restore, (probs, sizes), fn_output_signature=tf.TensorSpec([None, None, 1])
        )
        return {"mask": masks, "image_size": sizes}

    @tf.function(
        input_signature=[input_spec(contract, BYTES_MASK_PNG_SIGNATURE)], autograph=AUTOGRAPH
    )
    def serve_bytes_mask_png(image_bytes):
        images, sizes = decode_images(image_bytes, contract)
        probs = tf.sigmoid(model(images, training=False))
        levels = tf.cast(tf.round(tf.clip_by_value(probs, 0.0, 1.0) * 255.0), tf.uint8)
        pngs = tf.map_fn(tf.io.encode_png, levels, fn_output_signature=tf.string)
        return {"mask_png_bytes": pngs, "image_size": sizes}

    return {
        DEFAULT_SIGNATURE: serve_image.get_concrete_function(),
        BYTES_SIGNATURE: serve_bytes.get_concrete_function(),
        BYTES_MASK_PNG_SIGNATURE: serve_bytes_mask_png.get_concrete_function(),
    }


def sample_image(config) -> np.ndarray:
    """A synthetic car, non-square and larger than the model's input."""
    from training.data.cars import render_car

    side = config.image_size
    image, _ = render_car(car_seed=2024, view=3, height=side + 8, width=round(1.5 * side))
    return image


def sample_requests(config, contract: Contract) -> dict:
    requests = image_requests(sample_image(config), contract)
    requests[BYTES_MASK_PNG_SIGNATURE] = requests[BYTES_SIGNATURE]
    return requests


def check(keras_model, loaded, contract: Contract, requests, outputs) -> None:
    """serving_default equals the Keras model; bytes, client and training paths agree."""
    served = outputs[DEFAULT_SIGNATURE]
    out = keras_model(requests[DEFAULT_SIGNATURE]["image"], training=False)
    close("serving_default mask vs Keras", served["mask"], tf.sigmoid(out), PARITY_ATOL)
    image, via_train, via_client = skew_inputs(loaded, requests, contract)
    close("mask: client vs training path", via_client["mask"], via_train["mask"], SKEW_ATOL)
    full = tf.image.resize(via_train["mask"], image.shape[:2], method="bilinear").numpy()
    close(
        "mask: bytes signature vs training path", outputs[BYTES_SIGNATURE]["mask"], full, SKEW_ATOL
    )
    small = outputs[BYTES_MASK_PNG_SIGNATURE]
    levels = np.stack([tf.io.decode_png(png).numpy() for png in small["mask_png_bytes"]])
    # Rounding to 8-bit levels adds at most half a level to the skew tolerance.
    close("mask: PNG mask signature vs training path", levels / 255.0, via_train["mask"],
          SKEW_ATOL + 0.5 / 255.0)  # fmt: skip
    if small["image_size"].tolist() != [list(image.shape[:2])]:
        raise ExportCheckError(f"{BYTES_MASK_PNG_SIGNATURE} image_size {small['image_size']}")


EXPORT = ExportModule(INPUT_KINDS, signatures, sample_requests, check, sample_image)
