"""Kaggle's Carvana layout (`train/<car>_<NN>.jpg`, `train_masks/<car>_<NN>_mask.gif`) as tf.data.

The pipeline here is shared with the built-in synthetic cars, so that both sources go through the
same pre-processing, caching, shuffling and flip augmentation.

Example:
    >>> items = scan_carvana(Path("data/carvana"))
    >>> train_items, val_items = split_by_car(items, val_fraction=0.2, seed=0)
    >>> train = carvana_dataset(train_items, pre, batch_size=16, training=True)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from common.contract import Preprocessing
from training.data.preprocess import decode_image, prepare_image, prepare_mask
from training.errors import DataError

IMAGE_NAME = re.compile(r"^(?P<car>[^_]+)_(?P<view>\d{2})\.jpg$")
LAYOUT_HINT = (
    "expected Kaggle's layout: train/<car_id>_<NN>.jpg and train_masks/<car_id>_<NN>_mask.gif"
)


@dataclass(frozen=True)
class CarvanaItem:
    """One photo of the Carvana layout and its mask."""

    car_id: str
    view: int
    image_path: Path
    mask_path: Path


def scan_carvana(root: Path) -> list[CarvanaItem]:
    """Lists and checks every image and mask of a Carvana folder.

    Every image and mask header is opened with Pillow (cheap: the pixels are not decoded) and the
    two sizes must agree.

    Args:
        root: folder holding `train/` and `train_masks/`.

    Returns:
        The items sorted by car id and view.

    Raises:
        DataError: when the folder or a sub-folder is missing, `train/` holds no images, an image
            is misnamed or has no mask, a file is not a readable image, or sizes differ.
    """
    root = Path(root)
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"Carvana folder {root} {problem}; {LAYOUT_HINT}")
    for sub in ("train", "train_masks"):
        if not (root / sub).is_dir():
            raise DataError(f"{root} has no {sub}/ folder; {LAYOUT_HINT}")
    files = sorted(p for p in (root / "train").iterdir() if p.is_file() and p.name[0] != ".")
    if not files:
        raise DataError(f"{root / 'train'} holds no images; {LAYOUT_HINT}")
    items = []
    for image_path in files:
        match = IMAGE_NAME.match(image_path.name)
        if match is None:
            raise DataError(
                f"{image_path} is not named <car_id>_<NN>.jpg (e.g. 0cdf5b5d0ce1_01.jpg); "
                "rename it or move it out of train/"
            )
        mask_path = root / "train_masks" / f"{image_path.stem}_mask.gif"
        if not mask_path.is_file():
            raise DataError(f"image {image_path} has no mask; expected {mask_path}")
        image_size = _checked_size(image_path)
        mask_size = _checked_size(mask_path)
        if image_size != mask_size:
            raise DataError(
                f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but image {image_path} is "
                f"{image_size[0]}x{image_size[1]} (WxH); masks must match their images"
            )
        items.append(CarvanaItem(match["car"], int(match["view"]), image_path, mask_path))
    return sorted(items, key=lambda item: (item.car_id, item.view))


def _checked_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except Exception as err:  # Pillow raises many types for bad files; all mean the same here.
        raise DataError(
            f"{path} is not a readable image ({type(err).__name__}: {err}); "
            "re-download or delete it"
        ) from None
    return size


def split_car_ids(
    car_ids: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Splits distinct car ids into train and validation ids, deterministically by seed.

    Args:
        car_ids: car ids, repeats allowed (one per image is fine).
        val_fraction: share of cars for validation; rounded, with at least one car per side.
        seed: seed of the shuffle.

    Returns:
        Sorted train car ids and sorted validation car ids.

    Raises:
        DataError: with fewer than two distinct cars.
    """
    unique = sorted(set(car_ids))
    if len(unique) < 2:
        raise DataError(
            f"found {len(unique)} car(s) ({', '.join(unique) or 'none'}); splitting train and "
            "validation by car needs at least 2 cars: add photos of another car"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    num_val = min(max(round(len(unique) * val_fraction), 1), len(unique) - 1)
    val = sorted(unique[i] for i in order[:num_val])
    train = sorted(unique[i] for i in order[num_val:])
    return train, val


def split_by_car(
    items: Sequence[CarvanaItem], val_fraction: float, seed: int
) -> tuple[list[CarvanaItem], list[CarvanaItem]]:
    """Splits items into train and validation so that all views of a car fall on one side.

    Args:
        items: items from `scan_carvana`.
        val_fraction: share of cars (not images) for validation.
        seed: seed of the split.

    Returns:
        Train items and validation items, in their input order.

    Raises:
        DataError: with fewer than two distinct cars.
    """
    _, val_ids = split_car_ids([item.car_id for item in items], val_fraction, seed)
    val_set = set(val_ids)
    train = [item for item in items if item.car_id not in val_set]
    val = [item for item in items if item.car_id in val_set]
    return train, val


def flip_pair(image: tf.Tensor, mask: tf.Tensor, flip: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors image and mask left-right together, or leaves both as they are.

    Args:
        image: image `[H, W, C]`.
        mask: mask `[H, W, 1]`.
        flip: scalar boolean tensor; true mirrors both.

    Returns:
        The image and the mask, both mirrored or both unchanged.
    """
    return tf.cond(
        flip,
        lambda: (tf.reverse(image, axis=[1]), tf.reverse(mask, axis=[1])),
        lambda: (image, mask),
    )


def segmentation_pipeline(
    source: tf.data.Dataset,
    load: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    pre: Preprocessing,
    batch_size: int,
    *,
    training: bool,
    augment_flip: bool = True,
    repeat: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Turns raw examples into batches of model inputs and {0,1} masks.

    Args:
        source: dataset of raw examples (file paths, or in-memory images and masks).
        load: maps one element of `source` to a uint8 image `[H, W, 3]` and a mask `[H, W, 1]`
            (any non-zero value is foreground).
        pre: the model contract's pre-processing.
        batch_size: examples per batch.
        training: shuffle each iteration and (with `augment_flip`) flip; validation does neither.
        augment_flip: random horizontal flips of image and mask together, when training.
        repeat: repeat forever (for a runner that counts steps per epoch).
        seed: seed of the shuffle and of the flips.

    Returns:
        Batches of float32 images `[B, S, S, C]` and float32 masks `[B, S, S, 1]`.
    """
    size = tuple(pre.size)

    def prepare(*element):
        image, mask = load(*element)
        return prepare_image(image, pre), prepare_mask(mask, size)

    # Caching after pre-processing keeps the decode and resize out of every epoch but the first.
    ds = source.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if training:
        # A full shuffle when the size is known (it is for both of our sources).
        count = int(source.cardinality())
        ds = ds.shuffle(count if count > 0 else 1024, seed=seed, reshuffle_each_iteration=True)
        if augment_flip:
            # A seeded coin per example, drawn afresh each epoch, keeps the flips reproducible.
            coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, coins).map(
                lambda pair, coin: flip_pair(*pair, coin % 2 == 0),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def decode_example(
    image_path: tf.Tensor, mask_path: tf.Tensor, pre: Preprocessing
) -> tuple[tf.Tensor, tf.Tensor]:
    """Reads one Carvana example from its files.

    Args:
        image_path: scalar string tensor, path of a JPEG photo.
        mask_path: scalar string tensor, path of its GIF mask.
        pre: the contract's pre-processing: the photo is decoded at its DCT scale, as the
            served bytes signature and the client decode it.

    Returns:
        The photo as uint8 RGB `[h, w, 3]` (maybe scaled down) and the mask as uint8
        `[H, W, 1]` (non-zero is car); both are resized to the model's input next.
    """
    image, _ = decode_image(tf.io.read_file(image_path), pre)
    frames = tf.io.decode_gif(tf.io.read_file(mask_path))
    # A GIF decodes to RGB frames; the first frame is the mask and any lit channel is foreground.
    mask = tf.reduce_max(frames[0], axis=-1, keepdims=True)
    return image, mask


def carvana_source(items: Sequence[CarvanaItem]) -> tf.data.Dataset:
    """Dataset of (image path, mask path) strings, to be read by `decode_example`."""
    return tf.data.Dataset.from_tensor_slices(
        ([str(item.image_path) for item in items], [str(item.mask_path) for item in items])
    )


def carvana_dataset(
    items: Sequence[CarvanaItem],
    pre: Preprocessing,
    batch_size: int,
    *,
    training: bool,
    augment_flip: bool = True,
    repeat: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """The segmentation pipeline fed from Carvana files; see `segmentation_pipeline`."""
    return segmentation_pipeline(
        carvana_source(items),
        functools.partial(decode_example, pre=pre),
        pre,
        batch_size,
        training=training,
        augment_flip=augment_flip,
        repeat=repeat,
        seed=seed,
    )
