"""Car segmentation networks: the source's Carvana net (`seed`) and a real U-Net (`slim`, `tiny`).

Example:
    >>> from training.unet import PRESETS, build_unet
    >>> model = build_unet(PRESETS["tiny"])
    >>> model.output_shape
    (None, 32, 32, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from common.contract import unet_contract
from training import metrics as seg_metrics
from training import schedules
from training.config import check_choice
from training.errors import ConfigError
from training.task_data import TaskData

ARCHITECTURES = ("seed", "unet")
LOSSES = ("bce", "bce_dice")
BACKGROUNDS = ("studio", "plain")


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild and retrain a segmentation model.

    Attributes:
        image_size: square input side in pixels; a multiple of 16 (four 2x2 pools).
        architecture: `seed` is the source's network (no skips, transpose-conv decoder);
            `unet` is Ronneberger's U-Net (skip concatenation, two convs per decoder level).
        base_filters: filters of the first level; each level down doubles them.
        batch_norm: batch normalisation after each 3x3 conv (U-Net only).
        init_stddev: when > 0, kernels start from N(0, init_stddev) as in the source; when 0,
            from He-normal.
        loss: `bce` (sigmoid binary cross-entropy) or `bce_dice` (BCE plus soft-Dice loss).
        lr_schedule: `constant`, or `cosine` (decay to 0 over the run, step by step).
        num_cars, views_per_car, background: the built-in synthetic car data.
    """

    image_size: int = 128
    architecture: str = "unet"
    base_filters: int = 16
    batch_norm: bool = True
    init_stddev: float = 0.0
    loss: str = "bce_dice"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int | None = None
    val_fraction: float = 0.2
    augment_flip: bool = True
    num_cars: int = 100
    views_per_car: int = 8
    background: str = "studio"

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size % 16:
            raise ConfigError(
                f"image_size={self.image_size} is not a positive multiple of 16 "
                "(the network pools four times); try 64, 128, 256 or 512"
            )
        check_choice("lr_schedule", self.lr_schedule, schedules.SCHEDULES)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("background", self.background, BACKGROUNDS)
        for name in ("base_filters", "batch_size", "epochs", "num_cars", "views_per_car"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch={self.steps_per_epoch} must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be positive")


PRESETS: dict[str, UNetConfig] = {
    # The source's Carvana network and schedule: Adam 1e-4, batch 32, 500 batches, BCE.
    "seed": UNetConfig(
        image_size=128,
        architecture="seed",
        base_filters=64,
        batch_norm=False,
        init_stddev=0.02,
        loss="bce",
        learning_rate=1e-4,
        batch_size=32,
        epochs=5,
        steps_per_epoch=100,
        num_cars=100,
        views_per_car=16,
    ),
    # A base-16 U-Net with skips, sized for a 2-core CPU. 200 cars rather than 100 and a
    # cosine decay: more cars, not more passes over the same cars, is what helped (measurements:
    # docs/benchmarks.md#model-quality-the-earlier-and-the-current-slim-presets).
    "slim": UNetConfig(num_cars=200, lr_schedule="cosine"),
    # Seconds-long runs for tests.
    "tiny": UNetConfig(
        image_size=32,
        base_filters=4,
        batch_size=4,
        epochs=1,
        steps_per_epoch=2,
        num_cars=5,
        views_per_car=2,
    ),
}


def contract(config: UNetConfig):
    """The serving contract that a model built from `config` fulfils."""
    return unet_contract(config.image_size)


def build_unet(config: UNetConfig) -> keras.Model:
    """Builds the segmentation network: `image` [N,S,S,3] in [0,1] -> `mask_logits` [N,S,S,1]."""
    init = (
        keras.initializers.RandomNormal(0.0, config.init_stddev)
        if config.init_stddev > 0
        else keras.initializers.HeNormal()
    )
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    if config.architecture == "seed":
        x = _seed_body(inputs, config, init)
    else:
        x = _unet_body(inputs, config, init)
    logits = layers.Conv2D(1, 1, kernel_initializer=init, name="mask_logits")(x)
    return keras.Model(inputs, logits, name=f"unet_{config.architecture}")


def _conv_block(x, filters: int, name: str, init, batch_norm: bool):
    for i in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer=init,
            name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            # Momentum 0.9, not Keras's 0.99: CPU runs take a few hundred steps, and slower
            # moving statistics would still describe the untrained network at validation time.
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _seed_body(x, config: UNetConfig, init):
    """Four conv-conv-pool blocks, a two-conv bottom, four 3x3 stride-2 transpose convs."""
    f = config.base_filters
    for level in range(4):
        x = _conv_block(x, f * 2**level, f"down{level + 1}", init, config.batch_norm)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
    x = _conv_block(x, f * 16, "bottom", init, config.batch_norm)
    for level, mult in enumerate((16, 8, 4, 2)):
        x = layers.Conv2DTranspose(
            f * mult,
            3,
            strides=2,
            padding="same",
            activation="relu",
            kernel_initializer=init,
            name=f"up{level + 1}_tconv",
        )(x)
    return x


def _unet_body(x, config: UNetConfig, init):
    """Ronneberger's U-Net: the encoder's features are concatenated into each decoder level."""
    f = config.base_filters
    skips = []
    for level in range(4):
        x = _conv_block(x, f * 2**level, f"down{level + 1}", init, config.batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
    x = _conv_block(x, f * 16, "bottom", init, config.batch_norm)
    for level in range(4):
        filters = f * 2 ** (3 - level)
        x = layers.Conv2DTranspose(
            filters, 2, strides=2, kernel_initializer=init, name=f"up{level + 1}_tconv"
        )(x)
        x = layers.Concatenate(name=f"up{level + 1}_skip")([x, skips[3 - level]])
        x = _conv_block(x, filters, f"up{level + 1}", init, config.batch_norm)
    return x


def callbacks(config) -> list:
    """The learning-rate schedule's `fit` callbacks."""
    return schedules.callbacks(config.lr_schedule, config.learning_rate, config.epochs)


def build_trainable(config: UNetConfig) -> keras.Model:
    """The network compiled with the configured loss, Adam and Dice/IoU metrics."""
    model = build_unet(config)
    loss = seg_metrics.bce_dice_loss if config.loss == "bce_dice" else seg_metrics.bce_loss
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss,
        metrics=[seg_metrics.DiceMetric(name="dice"), seg_metrics.IoUMetric(name="iou")],
    )
    return model


def predict_masks(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Mask probabilities [N,S,S] for pre-processed images [N,S,S,3]."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    return 1.0 / (1.0 + np.exp(-logits[..., 0]))


def evaluate(model: keras.Model, data: TaskData, config: UNetConfig) -> dict[str, float]:
    """Hard Dice and IoU (threshold 0.5) on the validation split, averaged per image, beside
    the classical baselines' Dice on the same images."""
    from training.baselines import baseline_dice

    images = data.val_arrays["image"]
    probs = predict_masks(model, images, config.batch_size)
    truth = data.val_arrays["mask"][..., 0] > 0.5
    pred = probs >= 0.5
    return {
        "dice": float(np.mean(seg_metrics.dice_score(truth, pred))),
        "iou": float(np.mean(seg_metrics.iou_score(truth, pred))),
        "num_val": len(truth),
        **baseline_dice(images, truth),
    }


def draw_predictions(model: keras.Model, data: TaskData, config: UNetConfig, path: Path) -> None:
    """Saves a grid of validation images with the true and predicted mask outlines."""
    from training import plots

    total = len(data.val_arrays["image"])
    # Spread the picks over the split: consecutive images are views of the same car.
    picks = np.unique(np.linspace(0, total - 1, min(8, total)).astype(int))
    images = data.val_arrays["image"][picks]
    probs = predict_masks(model, images, config.batch_size)
    truth = data.val_arrays["mask"][picks, ..., 0] > 0.5
    plots.mask_overlays(images, truth, probs >= 0.5, path)
