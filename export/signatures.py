"""Serving modules: pre-processing, the Keras model and post-processing as one `tf.Module`.

Each model has a small fixed set of input kinds: a float image batch, encoded image bytes, a
latent batch or integer seeds. Every tensor name comes from the model's contract.
"""

from __future__ import annotations

import tensorflow as tf

from common.contract import BYTES_SIGNATURE, DEFAULT_SIGNATURE, SEEDS_SIGNATURE, Contract
from training.data.preprocess import prepare_image

INPUT_KINDS = {
    "unet": ("image", "image_bytes"),
    "localizer": ("image", "image_bytes"),
    "generator": ("z", "seeds"),
}


def serving_signatures(model_name: str, model, contract: Contract) -> tuple[tf.Module, dict]:
    """Wraps a trained Keras model into a module and its signature functions.

    Args:
        model_name: `unet`, `localizer` or `generator`.
        model: the servable Keras model (for the generator, the generator alone).
        contract: the model's serving contract.

    Returns:
        The module to save (it tracks the model's variables) and `{signature name: concrete
        function}` for `tf.saved_model.save`.

    Raises:
        ValueError: for a model name without serving signatures; the message lists the valid
            names and their input kinds.
    """
    builders = {"unet": _unet, "localizer": _localizer, "generator": _generator}
    if model_name not in builders:
        kinds = "; ".join(f"{name}: {', '.join(k)}" for name, k in INPUT_KINDS.items())
        raise ValueError(f"no serving signatures for {model_name!r}; valid models and inputs: "
                         f"{kinds}")
    module = tf.Module()
    module.model = model
    return module, builders[model_name](module, contract)


def _decode(image_bytes: tf.Tensor, contract: Contract) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes JPEG/PNG/GIF/BMP bytes [N] into model inputs [N,S,S,C] and sizes [N, 2]."""
    pre = contract.preprocessing

    def one(data):
        image = tf.io.decode_image(data, channels=pre.channels, expand_animations=False)
        image.set_shape([None, None, pre.channels])
        return prepare_image(image, pre), tf.shape(image)[:2]

    images, sizes = tf.map_fn(
        one,
        image_bytes,
        fn_output_signature=(
            tf.TensorSpec([*pre.size, pre.channels], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    return images, sizes


def _spec(contract: Contract, signature: str) -> tf.TensorSpec:
    spec = contract.signature(signature).inputs[0]
    return tf.TensorSpec(spec.shape, tf.dtypes.as_dtype(spec.dtype), name=spec.name)


def _unet(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    @tf.function(input_signature=[_spec(contract, DEFAULT_SIGNATURE)])
    def serve_image(image):
        logits = model(image, training=False)
        return {"mask": tf.sigmoid(logits), "mask_logits": logits}

    @tf.function(input_signature=[_spec(contract, BYTES_SIGNATURE)])
    def serve_bytes(image_bytes):
        images, sizes = _decode(image_bytes, contract)
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

    return {DEFAULT_SIGNATURE: serve_image.get_concrete_function(),
            BYTES_SIGNATURE: serve_bytes.get_concrete_function()}


def _localizer(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    def heads(images):
        out = model(images, training=False)
        probs = out["class_probs"]
        return probs, tf.argmax(probs, axis=-1, output_type=tf.int64), out["box"]

    @tf.function(input_signature=[_spec(contract, DEFAULT_SIGNATURE)])
    def serve_image(image):
        probs, class_id, box = heads(image)
        return {"class_probs": probs, "class_id": class_id, "box": box}

    @tf.function(input_signature=[_spec(contract, BYTES_SIGNATURE)])
    def serve_bytes(image_bytes):
        images, sizes = _decode(image_bytes, contract)
        probs, class_id, box = heads(images)
        h = tf.cast(sizes[:, 0:1], tf.float32)
        w = tf.cast(sizes[:, 1:2], tf.float32)
        # BOX_FORMAT is (x, y, h, w): x and w scale with the width, y and h with the height.
        pixels = box * tf.concat([w, h, h, w], axis=1)
        return {"class_probs": probs, "class_id": class_id, "box": pixels,
                "image_size": sizes}

    return {DEFAULT_SIGNATURE: serve_image.get_concrete_function(),
            BYTES_SIGNATURE: serve_bytes.get_concrete_function()}


def to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Maps tanh output in [-1, 1] to uint8 as round((x + 1) * 127.5)."""
    scaled = tf.round((tf.clip_by_value(images, -1.0, 1.0) + 1.0) * 127.5)
    return tf.cast(scaled, tf.uint8)


def seed_latents(seeds: tf.Tensor, latent_dim: int) -> tf.Tensor:
    """The latent vector of each int64 seed, drawn with stateless ops: same seed, same z."""
    return tf.map_fn(
        lambda s: tf.random.stateless_normal([latent_dim], seed=tf.stack([s, tf.zeros_like(s)])),
        seeds,
        fn_output_signature=tf.TensorSpec([latent_dim], tf.float32),
    )


def _generator(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    @tf.function(input_signature=[_spec(contract, DEFAULT_SIGNATURE)])
    def serve_z(z):
        return {"images": to_uint8(model(z, training=False))}

    @tf.function(input_signature=[_spec(contract, SEEDS_SIGNATURE)])
    def serve_seeds(seeds):
        z = seed_latents(seeds, contract.latent_dim)
        return {"images": to_uint8(model(z, training=False))}

    return {DEFAULT_SIGNATURE: serve_z.get_concrete_function(),
            SEEDS_SIGNATURE: serve_seeds.get_concrete_function()}
