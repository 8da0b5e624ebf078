"""Tests for the localizer's data: synthetic shapes, the annotations CSV and `load_data`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training import boxes
from training.config import replace
from training.data import shapes
from training.data.shapes import load_annotations_csv, load_data, synthetic_objects
from training.errors import DataError
from training.localizer import PRESETS

TINY = PRESETS["tiny"]
HEADER = "path,class,x_min,y_min,x_max,y_max\n"


def _plain_background(rng, s):
    """A black background, so that the object is exactly the non-black pixels."""
    return np.zeros((s, s, 3))


def _extent(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image.any(axis=-1))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


# --- synthetic shapes ---------------------------------------------------------------------------


def test_synthetic_objects_are_deterministic_by_seed():
    a = synthetic_objects(12, 32, seed=3)
    b = synthetic_objects(12, 32, seed=3)
    c = synthetic_objects(12, 32, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    images, ids, bxs = a
    assert (images.dtype, ids.dtype, bxs.dtype) == (np.uint8, np.int64, np.float32)
    assert images.shape == (12, 32, 32, 3) and ids.shape == (12,) and bxs.shape == (12, 4)


def test_box_is_the_exact_extent_of_the_object(monkeypatch):
    monkeypatch.setattr(shapes, "_background", _plain_background)
    images, _, bxs = synthetic_objects(30, 48, seed=0)
    for image, box in zip(images, bxs, strict=True):
        np.testing.assert_allclose(boxes.to_corners(box, 48, 48), _extent(image), atol=1e-4)


def test_classes_are_balanced_and_sizes_vary():
    _, ids, bxs = synthetic_objects(100, 64, seed=1)
    counts = np.bincount(ids, minlength=3)
    assert len(counts) == 3 and counts.max() - counts.min() <= 1
    h, w = bxs[:, 2], bxs[:, 3]
    # Drawn extents can differ from the requested 15-70 % by a pixel of rasterisation.
    assert h.min() >= 0.12 and w.min() >= 0.12 and h.max() <= 0.73 and w.max() <= 0.73
    assert np.ptp(w / h) > 1.0
    corners = boxes.normalized_to_unit_corners(bxs)
    assert corners.min() >= 0.0 and corners.max() <= 1.0


def test_custom_shape_classes_and_unknown_shape():
    _, ids, _ = synthetic_objects(8, 32, seed=0, class_names=("diamond", "ellipse"))
    assert set(ids.tolist()) == {0, 1}
    with pytest.raises(DataError, match=r"'cat'.*ellipse, rectangle, triangle, diamond"):
        synthetic_objects(4, 32, seed=0, class_names=("cat", "ellipse"))


# --- annotations CSV ------------------------------------------------------------------------------


def _write_image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (10, 200, 30)).save(path)


@pytest.fixture
def csv_dir(tmp_path):
    _write_image(tmp_path / "img" / "a.png", 40, 20)
    _write_image(tmp_path / "img" / "b.jpg", 30, 30)
    _write_image(tmp_path / "img" / "c.png", 16, 24)
    _write_image(tmp_path / "img" / "d.png", 16, 16)
    rows = [
        "img/a.png,ellipse,4,2,24,12",
        "img/b.jpg,triangle,0,0,30,30",
        "img/c.png,rectangle,1,1,9,23",
        "img/d.png,ellipse,2,2,6,6",
    ]
    (tmp_path / "ann.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return tmp_path


def test_csv_happy_path(csv_dir):
    images, ids, bxs = load_annotations_csv(csv_dir / "ann.csv")
    assert [im.shape for im in images] == [(20, 40, 3), (30, 30, 3), (24, 16, 3), (16, 16, 3)]
    np.testing.assert_array_equal(ids, [0, 2, 1, 0])
    np.testing.assert_allclose(bxs[0], [14 / 40, 7 / 20, 10 / 20, 20 / 40])
    np.testing.assert_allclose(bxs[1], [0.5, 0.5, 1.0, 1.0])


@pytest.mark.parametrize(
    ("csv_text", "words"),
    [
        ("path,class,x_min\nimg/a.png,ellipse,1\n", r"lacks columns \['y_min', 'x_max', 'y_max'\]"),
        (HEADER + "img/a.png,hexagon,1,1,5,5\n", "unknown class 'hexagon'.*ellipse, rectangle"),
        (HEADER + "img/nope.png,ellipse,1,1,5,5\n", "nope.png does not exist"),
        (HEADER + "img/bad.png,ellipse,1,1,5,5\n", "bad.png is corrupt"),
        (HEADER + "img/a.png,ellipse,1,1,41,5\n", "leaves the 40x20 image"),
        (HEADER + "img/a.png,ellipse,-1,1,5,5\n", "leaves the 40x20 image"),
        (HEADER + "img/a.png,ellipse,5,1,5,9\n", "empty box"),
        (HEADER + "img/a.png,ellipse,1,1,five,9\n", "must be numbers"),
        (HEADER, "no rows"),
    ],
)
def test_csv_errors_name_the_problem(csv_dir, csv_text, words):
    (csv_dir / "img" / "bad.png").write_bytes(b"this is not a png")
    (csv_dir / "broken.csv").write_text(csv_text)
    with pytest.raises(DataError, match=words):
        load_annotations_csv(csv_dir / "broken.csv")


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*path,class,x_min"):
        load_annotations_csv(tmp_path / "absent.csv")


# --- load_data ------------------------------------------------------------------------------------


def test_load_data_synthetic():
    data = load_data(TINY, None, seed=0)
    assert (data.num_train, data.num_val) == (TINY.num_train, TINY.num_val)
    va = data.val_arrays
    assert va["image"].shape == (TINY.num_val, 32, 32, 3) and va["image"].dtype == np.float32
    assert va["raw_image"].dtype == np.uint8 and va["box"].shape == (TINY.num_val, 4)
    np.testing.assert_allclose(va["image"], va["raw_image"] / 255.0, atol=1e-5)
    x, y = next(iter(data.train))
    assert x.shape == (TINY.batch_size, 32, 32, 3)
    assert y["class_probs"].shape == (TINY.batch_size,) and y["box"].shape == (TINY.batch_size, 4)
    # steps_per_epoch set: the train set repeats; unset: one pass per epoch.
    assert data.train.cardinality() == tf.data.INFINITE_CARDINALITY
    once = load_data(replace(TINY, steps_per_epoch=None), None, seed=0)
    assert once.train.cardinality() == TINY.num_train // TINY.batch_size


def test_load_data_csv_split_is_deterministic(csv_dir):
    cfg = replace(TINY, val_fraction=0.25)
    a = load_data(cfg, str(csv_dir / "ann.csv"), seed=1)
    b = load_data(cfg, str(csv_dir / "ann.csv"), seed=1)
    assert (a.num_train, a.num_val) == (3, 1)
    np.testing.assert_array_equal(a.val_arrays["box"], b.val_arrays["box"])
    assert a.val_arrays["image"].shape == (1, 32, 32, 3)


def test_load_data_rejects_other_sources(tmp_path):
    with pytest.raises(DataError, match=r"not understood.*synthetic.*csv"):
        load_data(TINY, str(tmp_path), seed=0)


def test_flips_move_the_box_with_the_image(monkeypatch):
    monkeypatch.setattr(shapes, "_background", _plain_background)
    images, ids, bxs = synthetic_objects(6, 32, seed=2)
    tf.random.set_seed(0)
    for image, class_id, box in zip(images, ids, bxs, strict=True):
        for _ in range(3):
            out, target = shapes._flip(
                tf.constant(image), {"class_probs": class_id, "box": tf.constant(box)}, True, True
            )
            got = boxes.to_corners(target["box"].numpy(), 32, 32)
            np.testing.assert_allclose(got, _extent(out.numpy()), atol=1e-4)
