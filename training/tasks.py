"""The three models by name: a plain dict from name to the functions training needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.contract import MODEL_NAMES
from training.errors import ConfigError
from training.flops import forward_flops


@dataclass(frozen=True)
class Task:
    """What the runner and CLI call for one model.

    Attributes:
        name: the model's fixed name (`unet`, `localizer`, `generator`).
        config_cls: the model's frozen config dataclass.
        presets: named configs (`seed`, `slim`, `tiny`).
        build: config -> the servable Keras model (what export writes).
        build_trainable: config -> the compiled Keras model that `fit` trains.
        servable: trainable model -> the servable model inside it.
        load_data: (config, data path or None, seed) -> TaskData.
        evaluate: (model, data, config) -> metrics under plain names.
        draw_predictions: (model, data, config, path) -> writes a PNG.
        contract: config -> the serving contract.
        picture: file name of the predictions picture in a run folder.
        extra_summaries: config -> other trained models to show with `--summary` (the GAN's
            discriminator).
        train_flops: trainable model -> estimated FLOPs of one training step per example.
        callbacks: config -> extra `fit` callbacks (the learning-rate schedule).
    """

    name: str
    config_cls: type
    presets: dict[str, Any]
    build: Callable
    build_trainable: Callable
    servable: Callable
    load_data: Callable
    evaluate: Callable
    draw_predictions: Callable
    contract: Callable
    picture: str
    extra_summaries: Callable
    train_flops: Callable
    callbacks: Callable = lambda config: []


def _same(model):
    return model


def _no_extra(config) -> list:
    return []


def _supervised_flops(model) -> int:
    # A backward pass costs about twice the forward pass.
    return 3 * forward_flops(model)


def _gan_flops(model) -> int:
    # Per real image, one simultaneous step runs G forward and backward (3 G), D forward on a
    # real and a fake image and backward for D's weights (6 D), and the generator loss's
    # backward pass through D on the fake (2 D).
    return 3 * forward_flops(model.generator) + 8 * forward_flops(model.discriminator)


def _unet() -> Task:
    from training import unet
    from training.data import segmentation

    return Task(
        "unet",
        unet.UNetConfig,
        unet.PRESETS,
        unet.build_unet,
        unet.build_trainable,
        _same,
        segmentation.load_data,
        unet.evaluate,
        unet.draw_predictions,
        unet.contract,
        "predictions.png",
        _no_extra,
        _supervised_flops,
        unet.callbacks,
    )


def _localizer() -> Task:
    from training import localizer
    from training.data import shapes

    return Task(
        "localizer",
        localizer.LocalizerConfig,
        localizer.PRESETS,
        localizer.build_localizer,
        localizer.build_trainable,
        _same,
        shapes.load_data,
        localizer.evaluate,
        localizer.draw_predictions,
        localizer.contract,
        "predictions.png",
        _no_extra,
        _supervised_flops,
        localizer.callbacks,
    )


def _generator() -> Task:
    from training import dcgan
    from training.data import digits

    return Task(
        "generator",
        dcgan.GeneratorConfig,
        dcgan.PRESETS,
        dcgan.build_generator,
        dcgan.build_trainable,
        dcgan.servable,
        digits.load_data,
        dcgan.evaluate,
        dcgan.draw_predictions,
        dcgan.contract,
        "samples.png",
        lambda config: [dcgan.build_discriminator(config)],
        _gan_flops,
    )


_FACTORIES: dict[str, Callable[[], Task]] = {
    "unet": _unet,
    "localizer": _localizer,
    "generator": _generator,
}


def get_task(name: str) -> Task:
    """Returns the task for model `name`, or raises a ConfigError listing the valid names."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return _FACTORIES[name]()


def picture_path(run_dir: Path, task: Task) -> Path:
    """Where a run folder keeps its predictions picture."""
    return run_dir / task.picture
