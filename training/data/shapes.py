"""Localizer data: synthetic one-object shape images and real images annotated in a CSV.

Example:
    >>> from training.localizer import PRESETS
    >>> data = load_data(PRESETS["tiny"], data=None, seed=0)
    >>> sorted(data.val_arrays)
    ['box', 'class_id', 'image', 'raw_image']
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, UnidentifiedImageError

from common.contract import DEFAULT_CLASS_NAMES, Preprocessing, localizer_contract
from training.boxes import to_normalized
from training.data.preprocess import prepare_image
from training.errors import DataError
from training.progress import progress as progress_bar
from training.task_data import TaskData

if TYPE_CHECKING:
    from training.localizer import LocalizerConfig

SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
CSV_COLUMNS = ("path", "class", "x_min", "y_min", "x_max", "y_max")


def synthetic_objects(
    n: int,
    image_size: int,
    seed: int,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws `n` images that each hold one shape on a textured, graded background.

    Each class name is a shape from `SHAPES`. Classes are balanced (they differ by at most one
    image) and shuffled. Shapes span 15-70 % of the side in each direction, so their aspect
    ratios vary too. The same `seed` gives the same bytes.

    Args:
        n: number of images.
        image_size: side of the square images in pixels.
        seed: random seed.
        class_names: one shape name per class.
        progress: show a tqdm bar when `n` is large.

    Returns:
        `(images, class_ids, boxes)`: uint8 `[n, S, S, 3]`, int64 `[n]`, and float32 `[n, 4]`
        boxes in normalised BOX_FORMAT that are the exact extent of the shape's pixels.

    Raises:
        DataError: when a class name is not a shape that can be drawn.
    """
    unknown = [c for c in class_names if c not in SHAPES]
    if unknown:
        raise DataError(
            f"synthetic data cannot draw classes {unknown}; drawable shapes: {', '.join(SHAPES)}. "
            "Pick class_names among them, or pass real data as --data annotations.csv"
        )
    rng = np.random.default_rng(seed)
    s = image_size
    class_ids = rng.permutation(np.arange(n) % len(class_names)).astype(np.int64)
    images = np.empty((n, s, s, 3), np.uint8)
    boxes = np.empty((n, 4), np.float32)
    for i in progress_bar(range(n), n, "drawing shapes", enabled=progress):
        background = _background(rng, s)
        mask = _shape_mask(rng, s, class_names[class_ids[i]])
        images[i] = np.where(mask[..., None], _paint(rng, background, mask), background)
        ys, xs = np.nonzero(mask)
        corners = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        boxes[i] = to_normalized(np.array(corners, np.float64), s, s)
    return images, class_ids, boxes


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A two-colour linear gradient in a random direction, plus low-frequency colour blotches."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    image = c0 + (c1 - c0) * t[..., None]
    # Coarse random blotches make a single global threshold useless, as on real backgrounds.
    grid = rng.integers(2, 7)
    coarse = Image.fromarray(rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8))
    blotch = np.asarray(coarse.resize((s, s), Image.BILINEAR), np.float64) / 127.5 - 1.0
    image = image + blotch * rng.uniform(10, 50) + rng.normal(0, 4, (s, s, 3))
    return image.clip(0, 255).round()


def _shape_mask(rng: np.random.Generator, s: int, shape: str) -> np.ndarray:
    """A boolean `[s, s]` mask of one shape whose box spans 15-70 % of the side each way."""
    w, h = rng.uniform(0.15, 0.7, 2) * s
    x0, y0 = rng.uniform(0, s - w), rng.uniform(0, s - h)
    x1, y1 = x0 + w, y0 + h
    image = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(image)
    if shape == "ellipse":
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif shape == "rectangle":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "diamond":
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(xm, y0), (x1, ym), (xm, y1), (x0, ym)], fill=255)
    else:
        draw.polygon(_triangle(rng, x0, y0, x1, y1), fill=255)
    mask = np.asarray(image) > 0
    if not mask.any():
        # Sub-pixel shapes cannot happen at 15 % of a >= 8 px side, but never return no box.
        mask[int(y0), int(x0)] = True
    return mask


def _triangle(rng, x0, y0, x1, y1) -> list[tuple[float, float]]:
    """A triangle filling the box: its base on one side, its apex anywhere on the opposite one."""
    side = rng.integers(4)
    t = rng.uniform(0, 1)
    if side == 0:  # apex on top
        return [(x0 + t * (x1 - x0), y0), (x1, y1), (x0, y1)]
    if side == 1:  # apex at the bottom
        return [(x0 + t * (x1 - x0), y1), (x1, y0), (x0, y0)]
    if side == 2:  # apex on the left
        return [(x0, y0 + t * (y1 - y0)), (x1, y0), (x1, y1)]
    return [(x1, y0 + t * (y1 - y0)), (x0, y0), (x0, y1)]


def _paint(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object's pixels: a colour that stands out from the background under it, shaded."""
    under = background[mask].mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    # Retry for contrast: an object the colour of its background has no visible extent.
    for _ in range(20):
        if np.linalg.norm(colour - under) >= 90:
            break
        colour = rng.uniform(0, 255, 3)
    s = mask.shape[0]
    shade = np.linspace(-1, 1, s)[None, :] * rng.uniform(-20, 20)
    obj = colour + shade[..., None] + rng.normal(0, 4, (s, s, 3))
    return obj.clip(0, 255).round().astype(np.uint8)


def load_annotations_csv(
    path: Path, class_names: Sequence[str] = DEFAULT_CLASS_NAMES
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Reads real images with one labelled box each from a CSV file.

    The header is `path,class,x_min,y_min,x_max,y_max`; the box is in pixel-edge corners
    (`x_max` is one past the last column) and relative paths resolve against the CSV's folder.

    Args:
        path: the CSV file.
        class_names: the valid classes; a row's class id is its index here.

    Returns:
        `(images, class_ids, boxes)`: RGB uint8 images of any size, int64 `[N]` and float32
        `[N, 4]` boxes in normalised BOX_FORMAT (divided by each image's own size).

    Raises:
        DataError: for a missing file or image, missing columns, an unknown class, a corrupt
            image, a non-numeric coordinate, or a box that is empty or leaves the image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"annotation file {path} does not exist; expected a CSV with the header "
            f"{','.join(CSV_COLUMNS)}"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path} lacks columns {missing}; expected columns: {', '.join(CSV_COLUMNS)} "
                f"(found: {', '.join(reader.fieldnames or []) or 'none'})"
            )
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} has a header but no rows; add one row per annotated image")
    images, class_ids, boxes = [], [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        name = row["class"].strip()
        if name not in class_names:
            raise DataError(
                f"{where}: unknown class {name!r}; valid classes: {', '.join(class_names)} "
                "(set class_names in the config to train on other classes)"
            )
        image = _read_image(path.parent / row["path"].strip(), where)
        corners = _read_corners(row, where)
        height, width = image.shape[:2]
        x_min, y_min, x_max, y_max = corners
        if x_max <= x_min or y_max <= y_min:
            raise DataError(
                f"{where}: empty box {corners}; x_max must exceed x_min and y_max exceed y_min"
            )
        if x_min < 0 or y_min < 0 or x_max > width or y_max > height:
            raise DataError(
                f"{where}: box {corners} leaves the {width}x{height} image; corners must lie "
                f"within 0..{width} (x) and 0..{height} (y)"
            )
        images.append(image)
        class_ids.append(class_names.index(name))
        boxes.append(to_normalized(np.array(corners), width, height))
    return images, np.array(class_ids, np.int64), np.array(boxes, np.float32)


def _read_image(path: Path, where: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{where}: image {path} does not exist; paths resolve against the CSV")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: image {path} is corrupt or not an image ({exc})") from None


def _read_corners(row: dict[str, str], where: str) -> tuple[float, ...]:
    try:
        return tuple(float(row[k]) for k in CSV_COLUMNS[2:])
    except (TypeError, ValueError):
        values = {k: row[k] for k in CSV_COLUMNS[2:]}
        raise DataError(f"{where}: box coordinates must be numbers, got {values}") from None


def load_data(config: LocalizerConfig, data: str | None, seed: int) -> TaskData:
    """Loads the localizer's train and validation data.

    Args:
        config: the localizer config (image size, classes, batch size, split, data sizes).
        data: None for synthetic shapes (`num_train + num_val` images), or a `.csv` of
            annotations that is split by `config.val_fraction`.
        seed: seed for the synthetic images, the split and the shuffling.

    Returns:
        The TaskData; targets are `{"class_probs": class id, "box": [4] normalised box}`.

    Raises:
        DataError: when `data` is not a CSV file or the CSV is invalid.
    """
    pre = localizer_contract(config.image_size, config.class_names).preprocessing
    if data is None:
        n_train = config.num_train
        images, ids, boxes = synthetic_objects(
            n_train + config.num_val, config.image_size, seed, config.class_names
        )
        order = np.arange(len(ids))
        description = (
            f"synthetic shapes {config.image_size}px: {n_train} train / {config.num_val} val, "
            f"classes {', '.join(config.class_names)}"
        )
    elif str(data).lower().endswith(".csv"):
        images, ids, boxes = load_annotations_csv(Path(data), config.class_names)
        if len(ids) < 2:
            raise DataError(f"{data} has {len(ids)} row; a train/val split needs at least 2")
        n_val = min(max(1, round(len(ids) * config.val_fraction)), len(ids) - 1)
        n_train = len(ids) - n_val
        order = np.random.default_rng(seed).permutation(len(ids))
        description = f"annotations {data}: {n_train} train / {n_val} val"
    else:
        raise DataError(
            f"--data {data!r} is not understood; valid: omit it for synthetic shapes, or a "
            f"path to a .csv with the header {','.join(CSV_COLUMNS)}"
        )
    prepared = _prepare_all(images, pre)
    train_idx, val_idx = order[:n_train], order[n_train:]
    return TaskData(
        train=_train_dataset(prepared[train_idx], ids[train_idx], boxes[train_idx], config, seed),
        val=tf.data.Dataset.from_tensor_slices(
            (prepared[val_idx], {"class_probs": ids[val_idx], "box": boxes[val_idx]})
        ).batch(config.batch_size),
        num_train=len(train_idx),
        num_val=len(val_idx),
        val_arrays={
            "image": prepared[val_idx],
            "class_id": ids[val_idx],
            "box": boxes[val_idx],
            "raw_image": _to_uint8(prepared[val_idx], pre),
        },
        description=description,
        extra={"class_names": list(config.class_names), "source": data or "synthetic"},
    )


def _prepare_all(images: np.ndarray | list[np.ndarray], pre: Preprocessing) -> np.ndarray:
    """Runs the training pre-processing once over every image (in chunks to bound memory)."""
    if isinstance(images, np.ndarray):
        chunks = [images[i : i + 512] for i in range(0, len(images), 512)]
    else:
        chunks = [img[None] for img in images]
    return np.concatenate([prepare_image(c, pre).numpy() for c in chunks]).astype(np.float32)


def _to_uint8(prepared: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Undoes the contract's value mapping: uint8 images at the model's size."""
    return np.clip(np.round((prepared - pre.offset) / pre.scale), 0, 255).astype(np.uint8)


def _train_dataset(images, ids, boxes, config: LocalizerConfig, seed: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, {"class_probs": ids, "box": boxes}))
    ds = ds.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    if config.augment_hflip or config.augment_vflip:
        ds = ds.map(
            lambda x, y: _flip(x, y, config.augment_hflip, config.augment_vflip),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(config.batch_size)
    if config.steps_per_epoch is not None:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def _flip(image, target, horizontal: bool, vertical: bool):
    """Random mirror images; the box centre mirrors with them (x -> 1 - x, y -> 1 - y)."""
    x, y, h, w = tf.unstack(target["box"])
    if horizontal:
        flip = tf.random.uniform(()) < 0.5
        image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
        x = tf.where(flip, 1.0 - x, x)
    if vertical:
        flip = tf.random.uniform(()) < 0.5
        image = tf.cond(flip, lambda: image[::-1], lambda: image)
        y = tf.where(flip, 1.0 - y, y)
    return image, {"class_probs": target["class_probs"], "box": tf.stack([x, y, h, w])}
