"""The `localizer` export module: images or bytes in, class probabilities and a box out."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.contract import BYTES_SIGNATURE, DEFAULT_SIGNATURE, Contract
from export.models.base import (
    AUTOGRAPH,
    PARITY_ATOL,
    SKEW_ATOL,
    ExportModule,
    close,
    input_spec,
)
from export.models.images import INPUT_KINDS, decode_images, image_requests, skew_inputs


def signatures(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    def heads(images):
        out = model(images, training=False)
        probs = out["class_probs"]
        return probs, tf.argmax(probs, axis=-1, output_type=tf.int64), out["box"]

    @tf.function(input_signature=[input_spec(contract, DEFAULT_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_image(image):
        probs, class_id, box = heads(image)
        return {"class_probs": probs, "class_id": class_id, "box": box}

    @tf.function(input_signature=[input_spec(contract, BYTES_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_bytes(image_bytes):
        images, sizes = decode_images(image_bytes, contract)
        probs, class_id, box = heads(images)
        h = tf.cast(sizes[:, 0:1], tf.float32)
        w = tf.cast(sizes[:, 1:2], tf.float32)
        # BOX_FORMAT is (x, y, h, w): x and w scale with the width, y and h with the height.
        pixels = box * tf.concat([w, h, h, w], axis=1)
        return {"class_probs": probs, "class_id": class_id, "box": pixels, "image_size": sizes}

    return {
        DEFAULT_SIGNATURE: serve_image.get_concrete_function(),
        BYTES_SIGNATURE: serve_bytes.get_concrete_function(),
    }


def sample_image(config) -> np.ndarray:
    """A synthetic object on a textured background, non-square and larger than the input."""
    from training.data.shapes import synthetic_objects

    side = config.image_size
    images, _, _ = synthetic_objects(
        1, 2 * side, seed=2024, class_names=config.class_names, progress=False
    )
    return images[0][:, : 2 * side - 6]


def sample_requests(config, contract: Contract) -> dict:
    return image_requests(sample_image(config), contract)


def check(keras_model, loaded, contract: Contract, requests, outputs) -> None:
    """serving_default equals the Keras model; bytes, client and training paths agree."""
    served = outputs[DEFAULT_SIGNATURE]
    out = keras_model(requests[DEFAULT_SIGNATURE]["image"], training=False)
    for key in ("class_probs", "box"):
        close(f"serving_default {key} vs Keras", served[key], out[key], PARITY_ATOL)
    image, via_train, via_client = skew_inputs(loaded, requests, contract)
    for key in ("class_probs", "box"):
        close(f"{key}: client vs training path", via_client[key], via_train[key], SKEW_ATOL)
    from_bytes = outputs[BYTES_SIGNATURE]
    close(
        "class_probs: bytes signature vs training path",
        from_bytes["class_probs"],
        via_train["class_probs"],
        SKEW_ATOL,
    )
    height, width = image.shape[:2]
    scale = np.array([width, height, height, width], np.float32)
    # Pixel boxes: a 1e-4 normalised tolerance scaled to the image.
    close(
        "box: bytes signature vs training path",
        from_bytes["box"] / scale,
        via_train["box"],
        SKEW_ATOL,
    )


EXPORT = ExportModule(INPUT_KINDS, signatures, sample_requests, check, sample_image)
