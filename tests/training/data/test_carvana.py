"""Tests of the Carvana-layout loader, the split by car and the shared segmentation pipeline."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from common.contract import Preprocessing
from training.data.cars import render_car, synthetic_cars, write_carvana_layout
from training.data.carvana import (
    carvana_dataset,
    flip_pair,
    scan_carvana,
    segmentation_pipeline,
    split_by_car,
)
from training.data.segmentation import load_data
from training.errors import DataError
from training.metrics import dice_score
from training.unet import PRESETS

FULL_W, FULL_H = 1918, 1280  # Carvana's photo size
FULL_CAR = "f0110e5a1b2c"
CONFIG = dataclasses.replace(PRESETS["tiny"], image_size=32, batch_size=4, steps_per_epoch=None)


@pytest.fixture(scope="module")
def carvana_root(tmp_path_factory) -> Path:
    """4 small cars x 3 views from the writer, plus one car written by hand at full size."""
    root = write_carvana_layout(tmp_path_factory.mktemp("carvana"), 4, 3, 32, 48, seed=0)
    image, mask = render_car(12345, 0, FULL_H, FULL_W)
    Image.fromarray(image).save(root / "train" / f"{FULL_CAR}_01.jpg", quality=90)
    Image.fromarray(mask * 255).save(root / "train_masks" / f"{FULL_CAR}_01_mask.gif")
    return root


def _small_layout(tmp_path: Path) -> Path:
    return write_carvana_layout(tmp_path / "carvana", 2, 1, 16, 24, seed=1)


def test_scan_lists_every_photo_with_its_mask(carvana_root):
    items = scan_carvana(carvana_root)
    assert len(items) == 13
    assert {item.car_id for item in items} >= {FULL_CAR}
    assert all(re.fullmatch(r"[0-9a-f]{12}", item.car_id) for item in items)
    views = sorted(item.view for item in items if item.car_id != FULL_CAR)
    assert views == sorted([1, 2, 3] * 4)
    for item in items:
        assert item.image_path.name == f"{item.car_id}_{item.view:02d}.jpg"
        mask_name = f"{item.car_id}_{item.view:02d}_mask.gif"
        assert item.mask_path == carvana_root / "train_masks" / mask_name


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_keeps_each_car_on_one_side(carvana_root, seed):
    items = scan_carvana(carvana_root)
    train, val = split_by_car(items, 0.2, seed)
    train_cars, val_cars = {i.car_id for i in train}, {i.car_id for i in val}
    assert train_cars and val_cars and not train_cars & val_cars
    assert len(train) + len(val) == len(items)
    assert split_by_car(items, 0.2, seed) == (train, val)


def test_split_needs_two_cars(carvana_root):
    one_car = [i for i in scan_carvana(carvana_root) if i.car_id == FULL_CAR]
    with pytest.raises(DataError, match="at least 2 cars"):
        split_by_car(one_car, 0.2, 0)


def test_load_data_from_a_carvana_folder(carvana_root):
    data = load_data(CONFIG, str(carvana_root), seed=0)
    assert data.num_train + data.num_val == 13
    assert not set(data.extra["train_cars"]) & set(data.extra["val_cars"])
    assert "raw_image" not in data.val_arrays
    image, mask = data.val_arrays["image"], data.val_arrays["mask"]
    assert image.shape == (data.num_val, 32, 32, 3) and image.dtype == np.float32
    assert mask.shape == (data.num_val, 32, 32, 1) and mask.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert data.train.cardinality() == -(-data.num_train // 4)  # finite: ceil(n / batch)
    images, masks = next(iter(data.train))
    assert images.shape[1:] == (32, 32, 3) and masks.shape[1:] == (32, 32, 1)
    assert "carvana" in data.description and "cars" in data.description


def test_steps_per_epoch_makes_train_repeat(carvana_root):
    config = dataclasses.replace(CONFIG, steps_per_epoch=3)
    data = load_data(config, str(carvana_root), seed=0)
    assert data.train.cardinality() == tf.data.INFINITE_CARDINALITY


def test_loaded_masks_match_the_written_masks(carvana_root):
    items = scan_carvana(carvana_root)
    pre = Preprocessing(size=(32, 32))
    loaded = np.concatenate([m for _, m in carvana_dataset(items, pre, 8, training=False)])
    for item, got in zip(items, loaded, strict=True):
        written = Image.open(item.mask_path).convert("L").resize((32, 32), Image.Resampling.BOX)
        expected = np.asarray(written) >= 128
        assert dice_score(expected, got[..., 0] > 0.5) > 0.95, item.mask_path.name
    full = items[[i.car_id for i in items].index(FULL_CAR)]
    assert Image.open(full.image_path).size == (FULL_W, FULL_H)


def test_load_data_synthetic_cars():
    config = dataclasses.replace(CONFIG, num_cars=5, views_per_car=2)
    data = load_data(config, None, seed=0)
    assert (data.num_train, data.num_val) == (8, 2)
    train_cars, val_cars = data.extra["train_cars"], data.extra["val_cars"]
    assert len(val_cars) == 1 and sorted(train_cars + val_cars) == [f"c{i:04d}" for i in range(5)]
    images, _, ids = synthetic_cars(5, 2, 32, 48, seed=0)
    assert np.array_equal(data.val_arrays["raw_image"], images[np.isin(ids, val_cars)])
    assert data.val_arrays["raw_image"].shape == (2, 32, 48, 3)
    assert data.val_arrays["image"].shape == (2, 32, 32, 3)
    assert data.val_arrays["mask"].shape == (2, 32, 32, 1)
    assert data.description.startswith("synthetic cars: 8 train / 2 val images from 4/1 cars")


def test_flip_pair_flips_image_and_mask_together():
    image = tf.reshape(tf.range(2 * 3 * 3, dtype=tf.float32), (2, 3, 3))
    mask = tf.constant([[[1.0], [0.0], [0.0]], [[1.0], [1.0], [0.0]]])
    flipped_image, flipped_mask = flip_pair(image, mask, tf.constant(True))
    assert np.array_equal(flipped_image, image.numpy()[:, ::-1])
    assert np.array_equal(flipped_mask, mask.numpy()[:, ::-1])
    same_image, same_mask = flip_pair(image, mask, tf.constant(False))
    assert np.array_equal(same_image, image) and np.array_equal(same_mask, mask)


def test_training_pipeline_flips_image_and_mask_together():
    # An image bright on its left half, with the mask on that same half.
    image = np.zeros((1, 8, 8, 3), np.uint8)
    image[:, :, :4] = 255
    mask = np.zeros((1, 8, 8, 1), np.uint8)
    mask[:, :, :4] = 1
    source = tf.data.Dataset.from_tensor_slices((image, mask))
    ds = segmentation_pipeline(
        source, lambda i, m: (i, m), Preprocessing(size=(8, 8)), 1, training=True, seed=0
    )
    sides = set()
    for _ in range(12):  # each pass is one epoch with fresh coins
        (img, msk) = next(iter(ds))
        bright_left = bool(img[0, 0, 0, 0] > 0.5)
        assert bright_left == bool(msk[0, 0, 0, 0] > 0.5)
        assert bright_left != bool(msk[0, 0, -1, 0] > 0.5)
        sides.add(bright_left)
    assert sides == {True, False}


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_carvana(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere"):
        load_data(CONFIG, str(tmp_path / "nowhere"), seed=0)


def test_missing_subfolder_is_a_data_error(tmp_path):
    root = _small_layout(tmp_path)
    shutil.rmtree(root / "train_masks")
    with pytest.raises(DataError, match="no train_masks/ folder"):
        scan_carvana(root)


def test_image_without_mask_names_both(tmp_path):
    root = _small_layout(tmp_path)
    mask = sorted((root / "train_masks").iterdir())[0]
    mask.unlink()
    image_name = mask.name.replace("_mask.gif", ".jpg")
    with pytest.raises(DataError, match=f"{image_name} has no mask; expected .*{mask.name}"):
        scan_carvana(root)


def test_corrupt_jpeg_names_the_file(tmp_path):
    root = _small_layout(tmp_path)
    bad = sorted((root / "train").iterdir())[1]
    bad.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(DataError, match=re.escape(bad.name)):
        scan_carvana(root)


def test_badly_named_image_names_the_file(tmp_path):
    root = _small_layout(tmp_path)
    good = sorted((root / "train").iterdir())[0]
    good.rename(root / "train" / "car one.jpg")
    with pytest.raises(DataError, match=r"car one\.jpg is not named <car_id>_<NN>\.jpg"):
        scan_carvana(root)


def test_empty_train_folder_is_a_data_error(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train_masks").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        scan_carvana(tmp_path)
