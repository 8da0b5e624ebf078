"""Shared by the image models' export modules: in-graph decoding, sample requests, skew checks."""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from client.images import preprocess as client_pre
from common.contract import BYTES_SIGNATURE, DEFAULT_SIGNATURE, Contract
from export.models.base import SKEW_ATOL, close
from export.models.pixels import check_image
from training.data.preprocess import decode_image, prepare_image

INPUT_KINDS = ("image", "image_bytes")


def decode_images(
    image_bytes: tf.Tensor, contract: Contract, *, padded: bool = False
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes JPEG/PNG/GIF/BMP bytes [N] into model inputs [N,S,S,C] and sizes [N, 2].

    JPEGs are decoded at the contract's DCT scale (`training.data.preprocess.decode_image`);
    the sizes are each image's own. Nothing is decoded before every image's header has been
    read and each image is within the contract's budget (`export.models.pixels`); the
    request's total is the server's to check, since a batching server runs several requests
    through one call.

    Args:
        image_bytes: the encoded images.
        contract: the model's contract (pre-processing and its pixel budget).
        padded: the caller pads outputs to the largest image, so each side is bounded too.
    """
    pre = contract.preprocessing
    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])
    sizes = tf.map_fn(
        lambda args: check_image(args[0], args[1], pre, padded=padded),
        (image_bytes, indices),
        fn_output_signature=tf.TensorSpec([6], tf.int64),
    )
    with tf.control_dependencies([sizes]):
        image_bytes = tf.identity(image_bytes)

    def one(data):
        image, size = decode_image(data, pre)
        return prepare_image(image, pre), size

    images, sizes = tf.map_fn(
        one,
        image_bytes,
        fn_output_signature=(
            tf.TensorSpec([*pre.size, pre.channels], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    return images, sizes


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless encoding, so the bytes signature sees exactly the sample's pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_requests(image: np.ndarray, contract: Contract) -> dict[str, dict[str, np.ndarray]]:
    """One image, pre-processed for `serving_default` and PNG-encoded for `serve_bytes`."""
    return {
        DEFAULT_SIGNATURE: {"image": client_pre.prepare_image(image, contract.preprocessing)[None]},
        BYTES_SIGNATURE: {"image_bytes": np.array([png_bytes(image)], dtype=object)},
    }


def skew_inputs(loaded, requests, contract: Contract) -> tuple[np.ndarray, dict, dict]:
    """The train/serve skew test's common half, for one image three ways.

    The PNG in the bytes request is lossless, so it holds exactly the sample image. Client
    pre-processing (NumPy/Pillow) must equal the training pipeline's (TensorFlow); both are then
    run through `serving_default`.

    Returns:
        (the image, serving_default outputs on the training pipeline's input, the same on the
        client's input).
    """
    encoded = requests[BYTES_SIGNATURE]["image_bytes"][0]
    image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    pre = contract.preprocessing
    trained = prepare_image(tf.constant(image), pre).numpy()[None]
    client = client_pre.prepare_image(image, pre)[None]
    close("client vs training pre-processing", client, trained, SKEW_ATOL)
    alias = contract.signature(DEFAULT_SIGNATURE).inputs[0].name
    via_train = loaded.run(DEFAULT_SIGNATURE, {alias: trained})
    via_client = loaded.run(DEFAULT_SIGNATURE, {alias: client})
    return image, via_train, via_client
