"""The `generator` export module: latent vectors or integer seeds in, uint8 images out."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.contract import DEFAULT_SIGNATURE, SEEDS_SIGNATURE, Contract
from export.models.base import AUTOGRAPH, ExportModule, close, input_spec


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


def signatures(module: tf.Module, contract: Contract) -> dict:
    model = module.model

    @tf.function(input_signature=[input_spec(contract, DEFAULT_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_z(z):
        return {"images": to_uint8(model(z, training=False))}

    @tf.function(input_signature=[input_spec(contract, SEEDS_SIGNATURE)], autograph=AUTOGRAPH)
    def serve_seeds(seeds):
        z = seed_latents(seeds, contract.latent_dim)
        return {"images": to_uint8(model(z, training=False))}

    return {
        DEFAULT_SIGNATURE: serve_z.get_concrete_function(),
        SEEDS_SIGNATURE: serve_seeds.get_concrete_function(),
    }


def sample_requests(config, contract: Contract) -> dict:
    z = np.random.default_rng(0).standard_normal((2, contract.latent_dim)).astype(np.float32)
    return {DEFAULT_SIGNATURE: {"z": z}, SEEDS_SIGNATURE: {"seeds": np.array([0, 1])}}


def check(keras_model, loaded, contract: Contract, requests, outputs) -> None:
    """Both signatures draw the images the Keras generator draws (to one uint8 level)."""
    z = requests[DEFAULT_SIGNATURE]["z"]
    want = to_uint8(keras_model(z, training=False)).numpy()
    # uint8 rounding may flip by one level where the float sits on a half step.
    close("serving_default images vs Keras", outputs[DEFAULT_SIGNATURE]["images"], want, 1)
    seeds = requests[SEEDS_SIGNATURE]["seeds"]
    seeded = to_uint8(keras_model(seed_latents(tf.constant(seeds), contract.latent_dim))).numpy()
    close("serve_seeds images vs Keras", outputs[SEEDS_SIGNATURE]["images"], seeded, 1)


EXPORT = ExportModule(("z", "seeds"), signatures, sample_requests, check)
