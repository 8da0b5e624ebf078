"""Digit DCGAN: the TF tutorial's network (`seed`), a CPU-sized one (`slim`) and `tiny` for tests.

Only the generator is served: latent vectors `z` in, `images` in [-1, 1] out.

Example:
    >>> from training.dcgan import PRESETS, build_generator
    >>> build_generator(PRESETS["tiny"]).output_shape
    (None, 28, 28, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from common.contract import Contract, generator_contract
from training import gan_eval
from training.config import check_choice
from training.errors import ConfigError, DataError
from training.task_data import TaskData

DATASETS = ("mnist", "digits")
NUM_CLASSES = 10  # digits
CLASS_HEADS = ("auxiliary", "projection")
# Batches of 256 latents that measure the averaged generator's batch-norm statistics; with
# momentum 0.9, 0.9 ** 50 < 1 % of the old statistics remains.
RECALIBRATION_BATCHES = 50


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild and retrain the GAN.

    Attributes:
        image_size: square image side; a multiple of 4 (the generator upsamples twice by 2).
        latent_dim: length of the latent vector `z`.
        channels: 1 (grey) or 3 (colour) output channels.
        g_filters: generator widths: the projected 1/4-size map, then the two transpose convs.
        d_filters: discriminator widths, one stride-2 conv each.
        kernel_size: kernel side of every (transpose) conv; 4 divides the stride-2 steps
            evenly, which avoids the checkerboard pattern of 5x5 transpose convs.
        dropout: dropout after each discriminator conv.
        learning_rate: the generator's Adam step size.
        d_learning_rate: the discriminator's; None means `learning_rate` (one time scale). A
            larger one is the two time-scale update rule (TTUR, Heusel et al. 2017).
        beta_1: Adam's first-moment decay for both nets (0.5 is the DCGAN paper's choice).
        label_smoothing: one-sided label smoothing: the discriminator's target for real images
            is `1 - label_smoothing` (fakes stay 0), which keeps it from growing over-confident.
        ema_momentum: when > 0, an exponential moving average of the generator's weights with
            this momentum is kept during training, and the averaged generator is the one that is
            sampled, judged and served (0 serves the last weights).
        class_from_latent: when true, the generator reads a digit class off `z` (its first
            coordinate's normal CDF cut into ten equal bands, so every class is equally likely)
            and the discriminator also learns to name the class of real digits, which the
            generator must then make its samples show (AC-GAN, Odena et al. 2017). The served
            model stays `z` in, `images` out; training needs labelled digits.
        class_head: how the discriminator uses classes with `class_from_latent`: `auxiliary`
            (the AC-GAN above: a second output names the class; its cross-entropy, weighted
            by `class_weight`, joins both losses) or `projection` (Miyato & Koyama 2018: the
            class is an input whose embedding is dotted with the image features and added to
            the real/fake logit, so the one real/fake judgement is made per class).
        class_weight: weight of the `auxiliary` head's class cross-entropy terms.
        dataset: built-in data when no `--data` is given: `mnist` or `digits` (scikit-learn).
        max_train: cap on the number of training images (None = all of them).
        eval_samples: samples per set for the metrics (generated, held-out real, untrained).
        classifier_epochs: training epochs of the judge digit classifier.
        classifier_train: cap on the judge classifier's training images.
    """

    image_size: int = 28
    latent_dim: int = 64
    channels: int = 1
    g_filters: tuple[int, ...] = (128, 64, 32)
    d_filters: tuple[int, ...] = (64, 128)
    kernel_size: int = 4
    dropout: float = 0.3
    learning_rate: float = 2e-4
    d_learning_rate: float | None = None
    beta_1: float = 0.5
    label_smoothing: float = 0.0
    ema_momentum: float = 0.0
    class_from_latent: bool = False
    class_head: str = "auxiliary"
    class_weight: float = 1.0
    batch_size: int = 64
    epochs: int = 4
    steps_per_epoch: int | None = 500
    val_fraction: float = 0.2
    dataset: str = "mnist"
    max_train: int | None = None
    eval_samples: int = 2000
    classifier_epochs: int = 2
    classifier_train: int = 20000

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 4:
            raise ConfigError(
                f"image_size={self.image_size} is not a multiple of 4 of at least 8 (the "
                "generator upsamples twice by 2); try 28 for MNIST"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels={self.channels} is not valid; choose 1 or 3")
        if len(self.g_filters) != 3 or min(self.g_filters) < 1:
            raise ConfigError(
                f"g_filters={self.g_filters} must be 3 positive widths (projection, conv1, "
                "conv2), e.g. 256,128,64"
            )
        if not self.d_filters or min(self.d_filters) < 1:
            raise ConfigError(f"d_filters={self.d_filters} must be positive widths, e.g. 64,128")
        if self.image_size >> len(self.d_filters) < 1:
            raise ConfigError(
                f"d_filters has {len(self.d_filters)} stride-2 convs, too many for "
                f"image_size={self.image_size}"
            )
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("class_head", self.class_head, CLASS_HEADS)
        for name in (
            "latent_dim",
            "kernel_size",
            "batch_size",
            "epochs",
            "classifier_epochs",
            "classifier_train",
            "steps_per_epoch",
            "max_train",
        ):
            value = getattr(self, name)
            # Only steps_per_epoch and max_train may be None (one pass over all the data).
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        if self.eval_samples < 2:
            raise ConfigError(f"eval_samples={self.eval_samples} must be at least 2")
        for name in ("dropout", "beta_1", "val_fraction", "label_smoothing", "ema_momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 or (name == "val_fraction" and value == 0.0):
                raise ConfigError(f"{name}={value} must be in [0, 1) (val_fraction above 0)")
        for name in ("learning_rate", "d_learning_rate", "class_weight"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}={value} must be positive")


PRESETS: dict[str, GeneratorConfig] = {
    # The TensorFlow DCGAN tutorial: latent 100, G 256/128/64 with 5x5 kernels, D 64/128,
    # Adam(1e-4) with Keras's default beta_1, batch 256, 50 epochs over MNIST's train split.
    "seed": GeneratorConfig(
        latent_dim=100,
        g_filters=(256, 128, 64),
        d_filters=(64, 128),
        kernel_size=5,
        learning_rate=1e-4,
        beta_1=0.9,
        batch_size=256,
        epochs=50,
        steps_per_epoch=None,
    ),
    # A half-width generator with 4x4 kernels, the tutorial's discriminator without dropout,
    # the DCGAN paper's Adam(2e-4, beta_1=0.5) and batch 64, 10 x 500 steps on full MNIST.
    # Two changes carry the quality: z's first coordinate carries a digit class and the
    # discriminator judges each image against it (projection), and the averaged generator is
    # served (measurements: docs/training.md#preset-experiments).
    "slim": GeneratorConfig(
        dropout=0.0,
        ema_momentum=0.995,
        class_from_latent=True,
        class_head="projection",
        epochs=10,
    ),
    # Seconds-long runs for tests, on scikit-learn's digits.
    "tiny": GeneratorConfig(
        latent_dim=8,
        g_filters=(16, 8, 4),
        d_filters=(4, 8),
        kernel_size=3,
        batch_size=16,
        epochs=1,
        steps_per_epoch=2,
        dataset="digits",
        max_train=256,
        eval_samples=64,
        classifier_epochs=1,
        classifier_train=512,
    ),
}


def contract(config: GeneratorConfig) -> Contract:
    """The serving contract that a generator built from `config` fulfils."""
    return generator_contract(config.latent_dim, config.image_size, config.channels)


def latent_classes(z):
    """The digit class that each latent vector `z` [N, D] carries, as int32 [N].

    The normal CDF of `z[:, 0]` is uniform on [0, 1] for z ~ N(0, I); ten equal bands of it
    make ten equally likely classes.
    """
    uniform = 0.5 * (1.0 + ops.erf(z[:, 0] / math.sqrt(2.0)))
    return ops.cast(ops.clip(ops.floor(uniform * NUM_CLASSES), 0, NUM_CLASSES - 1), "int32")


@keras.saving.register_keras_serializable(package="generator")
class LatentClass(layers.Layer):
    """One-hot [N, 10] of the class that `latent_classes` reads off each latent vector."""

    def call(self, z):
        return ops.one_hot(latent_classes(z), NUM_CLASSES)


def build_generator(config: GeneratorConfig) -> keras.Model:
    """The generator: `z` [N, latent_dim] -> `images` [N,S,S,C], tanh in [-1, 1], float32."""
    side = config.image_size // 4
    width, up1, up2 = config.g_filters
    k = config.kernel_size
    z = keras.Input((config.latent_dim,), name="z")
    x = z
    if config.class_from_latent:
        one_hot = LatentClass(name="g_latent_class")(z)
        x = layers.Concatenate(name="g_latent_and_class")([z, one_hot])
    x = layers.Dense(side * side * width, use_bias=False, name="g_project")(x)
    # Momentum 0.9 rather than 0.99: the generator's activations move fast during GAN training,
    # and samples are drawn in inference mode, from the moving statistics.
    x = layers.BatchNormalization(momentum=0.9, name="g_project_bn")(x)
    x = layers.LeakyReLU(name="g_project_lrelu")(x)
    x = layers.Reshape((side, side, width), name="g_reshape")(x)
    for i, (filters, stride) in enumerate(((up1, 1), (up2, 2)), start=1):
        x = layers.Conv2DTranspose(
            filters, k, strides=stride, padding="same", use_bias=False, name=f"g_up{i}"
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"g_up{i}_bn")(x)
        x = layers.LeakyReLU(name=f"g_up{i}_lrelu")(x)
    # float32 even under a mixed-precision policy: the served images keep full precision.
    images = layers.Conv2DTranspose(
        config.channels,
        k,
        strides=2,
        padding="same",
        use_bias=False,
        activation="tanh",
        dtype="float32",
        name="images",
    )(x)
    return keras.Model(z, images, name="generator")


def build_discriminator(config: GeneratorConfig) -> keras.Model:
    """The discriminator: `images` [N,S,S,C] in [-1, 1] -> `real_logit` [N, 1]. With
    `class_from_latent`, the `auxiliary` head adds `class_logits` [N, 10] and the `projection`
    head takes `labels` [N] as a second input."""
    size = config.image_size
    inputs = keras.Input((size, size, config.channels), name="images")
    x = inputs
    for i, filters in enumerate(config.d_filters, start=1):
        x = layers.Conv2D(
            filters, config.kernel_size, strides=2, padding="same", name=f"d_conv{i}"
        )(x)
        x = layers.LeakyReLU(name=f"d_conv{i}_lrelu")(x)
        x = layers.Dropout(config.dropout, name=f"d_conv{i}_dropout")(x)
    x = layers.Flatten(name="d_flatten")(x)
    logit = layers.Dense(1, dtype="float32", name="real_logit")(x)
    if config.class_from_latent and config.class_head == "projection":
        labels = keras.Input((), dtype="int32", name="labels")
        embedded = layers.Embedding(NUM_CLASSES, x.shape[-1], name="class_embedding")(labels)
        projection = layers.Dot(axes=1, dtype="float32", name="class_projection")([embedded, x])
        logit = layers.Add(dtype="float32", name="real_logit_per_class")([logit, projection])
        return keras.Model([inputs, labels], logit, name="discriminator")
    if config.class_from_latent:
        class_logits = layers.Dense(NUM_CLASSES, dtype="float32", name="class_logits")(x)
        return keras.Model(inputs, [logit, class_logits], name="discriminator")
    return keras.Model(inputs, logit, name="discriminator")


class DCGAN(keras.Model):
    """Generator and discriminator trained together by `fit` on batches of real images.

    Both nets step on the same batch (as in the TF tutorial): the discriminator on BCE from
    logits for real=1 / fake=0, the generator on the non-saturating loss -log D(G(z)). The nets
    and their Adam optimizers are tracked attributes, so `tf.train.Checkpoint(model=dcgan)`
    saves and restores all four.
    """

    def __init__(self, config: GeneratorConfig, **kwargs: Any):
        super().__init__(name="dcgan", **kwargs)
        self.latent_dim = config.latent_dim
        self.generator = build_generator(config)
        self.discriminator = build_discriminator(config)
        self.gan_config = config
        ema = config.ema_momentum > 0
        # Adam's own weight average works under every distribution strategy (it updates in the
        # cross-replica context); the averages live in the optimizer, so checkpoints keep them.
        self.g_optimizer = keras.optimizers.Adam(
            config.learning_rate,
            beta_1=config.beta_1,
            use_ema=ema,
            ema_momentum=config.ema_momentum if ema else 0.99,
            name="g_adam",
        )
        self.d_optimizer = keras.optimizers.Adam(
            config.d_learning_rate or config.learning_rate, beta_1=config.beta_1, name="d_adam"
        )
        self.real_label = 1.0 - config.label_smoothing
        # Slots exist from the start, so a checkpoint restores into them at once rather than
        # waiting for the first step.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        auxiliary = config.class_from_latent and config.class_head == "auxiliary"
        self.class_weight = config.class_weight if auxiliary else 0.0
        self.projection = config.class_from_latent and config.class_head == "projection"
        # How often the discriminator names real digits' classes, and the generator's
        # samples' intended classes, correctly.
        self.real_class_tracker = keras.metrics.Mean(name="real_class_acc")
        self.fake_class_tracker = keras.metrics.Mean(name="fake_class_acc")
        # Both sub-models are built; saying so stops Keras from tracing `call` on real images
        # when it builds the model symbolically under a distribution strategy.
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The per-epoch logs; Keras resets them at each epoch start."""
        trackers = [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker]
        trackers.append(self.d_fake_tracker)
        if self.class_weight:
            trackers += [self.real_class_tracker, self.fake_class_tracker]
        return trackers

    def sampler(self) -> keras.Model:
        """The generator to sample from, judge and serve.

        With `ema_momentum`, a fresh generator holding the averaged weights, whose batch-norm
        statistics are then measured anew on `RECALIBRATION_BATCHES` batches of its own
        samples: the trained generator's statistics describe other weights, and kept they
        spoil the samples (measurements: docs/training.md#preset-experiments). Without the
        average, the trained generator itself.
        """
        if not self.g_optimizer.use_ema:
            return self.generator
        averaged = build_generator(self.gan_config)
        averaged.set_weights(self.generator.get_weights())
        # Keras keeps the averages in the optimizer, in the order of the variables it was built
        # on: the generator's trainable variables.
        averages = self.g_optimizer._model_variables_moving_average
        for var, average in zip(averaged.trainable_variables, averages, strict=True):
            var.assign(average.numpy())
        rng = np.random.default_rng(0)
        for _ in range(RECALIBRATION_BATCHES):
            z = rng.standard_normal((256, self.latent_dim)).astype(np.float32)
            averaged(z, training=True)  # updates the moving mean and variance only
        return averaged

    def call(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Generates images from latent vectors."""
        return self.generator(z, training=training)

    def latents(self, count: tf.Tensor) -> tf.Tensor:
        """Fresh latent vectors for one step; each replica draws its own."""
        return tf.random.normal((count, self.latent_dim))

    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One simultaneous step of both nets on one (per-replica) batch of real images.

        `data` is a batch of images, or of (images, labels) when classes are learnt.
        """
        real, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        z = self.latents(tf.shape(real)[0])
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator(z, training=True)
            if self.projection:
                real_out = self.discriminator([real, labels], training=True)
                fake_out = self.discriminator([fake, latent_classes(z)], training=True)
            else:
                real_out = self.discriminator(real, training=True)
                fake_out = self.discriminator(fake, training=True)
            if self.class_weight:
                (real_logits, real_class), (fake_logits, fake_class) = real_out, fake_out
            else:
                real_logits, fake_logits = real_out, fake_out
            real_logits, fake_logits = real_logits[:, 0], fake_logits[:, 0]
            d_losses = _bce(self.real_label, real_logits) + _bce(0.0, fake_logits)
            g_losses = _bce(1.0, fake_logits)
            if self.class_weight:
                # The discriminator learns classes from real digits only (a classifier trained
                # on early, shapeless samples would teach the generator nothing); the generator
                # is rewarded when its sample shows the class its latent vector carries.
                intended = latent_classes(z)
                real_ce = _sparse_ce(labels, real_class)
                fake_ce = _sparse_ce(intended, fake_class)
                d_losses += self.class_weight * real_ce
                g_losses += self.class_weight * fake_ce
            # Sum over this replica's examples divided by the GLOBAL batch size: the optimizer
            # sums gradients across replicas, so the step follows the global-batch mean.
            d_loss = tf.nn.compute_average_loss(d_losses)
            g_loss = tf.nn.compute_average_loss(g_losses)
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars, strict=True))
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars, strict=True))
        self.d_loss_tracker.update_state(d_losses)
        self.g_loss_tracker.update_state(g_losses)
        self.d_real_tracker.update_state(tf.sigmoid(real_logits))
        self.d_fake_tracker.update_state(tf.sigmoid(fake_logits))
        if self.class_weight:
            self.real_class_tracker.update_state(_hits(labels, real_class))
            self.fake_class_tracker.update_state(_hits(intended, fake_class))
        return {m.name: m.result() for m in self.metrics}


def _sparse_ce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example softmax cross-entropy of integer labels."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)


def _hits(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """1.0 where the most likely class is the label, else 0.0."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32)


def _bce(label: float, logits: tf.Tensor) -> tf.Tensor:
    """Per-example sigmoid cross-entropy against a constant label."""
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)


def build_trainable(config: GeneratorConfig) -> DCGAN:
    """The DCGAN, compiled for `fit` (its optimizers live on the model, not in `compile`)."""
    model = DCGAN(config)
    model.compile(optimizer=None)
    return model


def servable(model: DCGAN) -> keras.Model:
    """The part that gets served: the generator, or its weight average (`ema_momentum`)."""
    return model.sampler()


def evaluate(model: DCGAN, data: TaskData, config: GeneratorConfig) -> dict[str, float]:
    """Classifier-based sample quality of the trained generator, with two baselines.

    A digit CNN trained on the data's labelled real digits judges three sets of N images
    against N held-out real ones: the trained generator's samples (`cfid`, `classifier_score`,
    `recognizability`, `class_entropy`), an untrained generator's (`*_untrained`) and N other
    held-out real images (`*_real`, the floor that a perfect generator would reach at this N).
    """
    arrays = data.val_arrays
    real = arrays["real"]
    n = min(config.eval_samples, len(real) // 2)
    if n < 2:
        raise DataError(f"only {len(real)} held-out real images; the metrics need at least 4")
    order = np.random.default_rng(0).permutation(len(real))
    reference, other = real[order[:n]], real[order[n : 2 * n]]
    classifier = gan_eval.train_digit_classifier(
        arrays["classifier_x"], arrays["classifier_y"], config.classifier_epochs, seed=0
    )
    ref_feats, _ = gan_eval.classifier_features(classifier, reference)
    sets = {
        "": gan_eval.sample_images(servable(model), n, seed=1),
        "_untrained": gan_eval.sample_images(build_generator(config), n, seed=1),
        "_real": other,
    }
    metrics: dict[str, float] = {}
    for suffix, images in sets.items():
        feats, probs = gan_eval.classifier_features(classifier, images)
        metrics.update(gan_eval.sample_metrics(feats, probs, ref_feats, suffix))
    metrics["classifier_accuracy"] = gan_eval.classifier_accuracy(
        classifier, arrays["classifier_test_x"], arrays["classifier_test_y"]
    )
    metrics["num_eval"] = n
    return metrics


def draw_predictions(model: DCGAN, data: TaskData, config: GeneratorConfig, path: Path) -> None:
    """Saves an 8x8 grid of generated samples (fixed latents) beside two columns of real ones."""
    fake = gan_eval.sample_images(servable(model), 64, seed=0)
    gan_eval.save_samples_picture(fake, data.val_arrays["real"][:16], path)
