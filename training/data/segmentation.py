"""Data for the `unet` model: built-in synthetic cars, or a Carvana folder in Kaggle's layout.

Example:
    >>> from training.unet import PRESETS
    >>> data = load_data(PRESETS["tiny"], data=None, seed=0)
    >>> data.val_arrays["image"].shape[1:]
    (32, 32, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from common.contract import Preprocessing
from training.data.cars import synthetic_cars
from training.data.carvana import (
    CarvanaItem,
    carvana_source,
    decode_example,
    scan_carvana,
    segmentation_pipeline,
    split_by_car,
    split_car_ids,
)
from training.errors import DataError
from training.task_data import TaskData
from training.unet import UNetConfig, contract

# Carvana photos are 1918x1280; the synthetic ones keep that 3:2 shape, so that they are squeezed
# to the square model input the same way.
SYNTHETIC_ASPECT = 1.5


def load_data(config: UNetConfig, data: str | None, seed: int) -> TaskData:
    """Loads the segmentation data, split train/validation by car.

    Args:
        config: the run's config (image size, batch size, split, augmentation, synthetic data).
        data: a Carvana folder (`train/` and `train_masks/`), or None for the built-in synthetic
            cars.
        seed: seed of the synthetic cars, the split, the shuffle and the flips.

    Returns:
        The train and validation datasets, with validation arrays: `image` float32
        `[N, S, S, 3]`, `mask` float32 `[N, S, S, 1]` in {0, 1} and, for synthetic data,
        `raw_image` uint8 at the native size. `extra` holds the train and validation car ids.

    Raises:
        DataError: when `data` is not a usable Carvana folder or there are fewer than 2 cars.
    """
    pre = contract(config).preprocessing
    if data is None:
        return _synthetic(config, pre, seed)
    root = Path(data)
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist; pass a Carvana folder with train/ and "
            "train_masks/, or leave --data out to train on built-in synthetic cars"
        )
    return _carvana(config, pre, root, seed)


def _synthetic(config: UNetConfig, pre: Preprocessing, seed: int) -> TaskData:
    height = config.image_size
    width = round(SYNTHETIC_ASPECT * height)
    images, masks, car_ids = synthetic_cars(
        config.num_cars, config.views_per_car, height, width, seed, config.background
    )
    train_cars, val_cars = split_car_ids(car_ids, config.val_fraction, seed)
    in_val = np.isin(car_ids, val_cars)
    train_idx, val_idx = np.flatnonzero(~in_val), np.flatnonzero(in_val)

    def dataset(idx: np.ndarray, training: bool) -> tf.data.Dataset:
        source = tf.data.Dataset.from_tensor_slices((images[idx], masks[idx, ..., None]))
        return _pipeline(source, _as_is, pre, config, training, seed)

    val = dataset(val_idx, training=False)
    val_arrays = _collect(val)
    val_arrays["raw_image"] = images[val_idx]
    return TaskData(
        train=dataset(train_idx, training=True),
        val=val,
        num_train=len(train_idx),
        num_val=len(val_idx),
        val_arrays=val_arrays,
        description=(
            f"synthetic cars: {len(train_idx)} train / {len(val_idx)} val images from "
            f"{len(train_cars)}/{len(val_cars)} cars ({config.background} background)"
        ),
        extra={"train_cars": train_cars, "val_cars": val_cars},
    )


def _carvana(config: UNetConfig, pre: Preprocessing, root: Path, seed: int) -> TaskData:
    items = scan_carvana(root)
    train_items, val_items = split_by_car(items, config.val_fraction, seed)
    train_cars = sorted({item.car_id for item in train_items})
    val_cars = sorted({item.car_id for item in val_items})

    def dataset(subset: list[CarvanaItem], training: bool) -> tf.data.Dataset:
        load = functools.partial(decode_example, pre=pre)
        return _pipeline(carvana_source(subset), load, pre, config, training, seed)

    val = dataset(val_items, training=False)
    return TaskData(
        train=dataset(train_items, training=True),
        val=val,
        num_train=len(train_items),
        num_val=len(val_items),
        # Carvana photos can differ in size, so no `raw_image` stack here.
        val_arrays=_collect(val),
        description=(
            f"carvana {root}: {len(train_items)} train / {len(val_items)} val images from "
            f"{len(train_cars)}/{len(val_cars)} cars"
        ),
        extra={"train_cars": train_cars, "val_cars": val_cars},
    )


def _as_is(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return image, mask


def _pipeline(
    source: tf.data.Dataset,
    load: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    pre: Preprocessing,
    config: UNetConfig,
    training: bool,
    seed: int,
) -> tf.data.Dataset:
    """The shared pipeline with this run's batch size, augmentation and repetition."""
    return segmentation_pipeline(
        source,
        load,
        pre,
        config.batch_size,
        training=training,
        augment_flip=config.augment_flip,
        repeat=training and config.steps_per_epoch is not None,
        seed=seed,
    )


def _collect(val: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Reads the (finite) validation batches into arrays; this also fills the pipeline's cache."""
    images, masks = [], []
    for image, mask in val.as_numpy_iterator():
        images.append(image)
        masks.append(mask)
    return {"image": np.concatenate(images), "mask": np.concatenate(masks)}
