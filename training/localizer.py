"""Single-object classification + localisation: one CNN trunk, a class head and a box head.

The `seed` preset is the source's design: a plain conv/pool trunk, flattened into a dense layer
that feeds a softmax and four sigmoid box units. The `slim` and `tiny` presets keep the trunk but
read the box off spatial softmaxes over column and row profiles (`box_head="edges"`), because a
pooled or flattened vector loses most of where the object is.

Example:
    >>> from training.localizer import PRESETS, build_localizer
    >>> model = build_localizer(PRESETS["tiny"])
    >>> sorted(model.output)
    ['box', 'class_probs']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from common.contract import DEFAULT_CLASS_NAMES, Contract, localizer_contract
from training import boxes as box_ops
from training import schedules
from training.config import check_choice
from training.errors import ConfigError
from training.task_data import TaskData

BOX_HEADS = ("dense", "edges")
POOLINGS = ("flatten", "gap")


@dataclass(frozen=True)
class LocalizerConfig:
    """Everything needed to rebuild and retrain a localizer.

    Attributes:
        image_size: square input side in pixels; divisible by 2 ** len(filters).
        class_names: the classes, in class-id order.
        alpha, beta: weights of the cross-entropy and of the summed squared box error.
        iou_weight: weight of an extra `1 - IoU` box term (0: the source's loss alone). IoU is
            relative to the box's size, so it weighs small objects' errors as mean IoU does,
            where the squared error of normalised coordinates barely sees them.
        filters: filters of each trunk block (`convs_per_block` 3x3 convs, a 2x2 max-pool).
        convs_per_block: 3x3 convolutions in each trunk block.
        batch_norm: batch normalisation after each trunk convolution.
        pooling: how the last block becomes a vector for the dense layer: `flatten` or `gap`.
        dense_units: width of the dense layer before the class head (and the dense box head).
        box_head: `dense` (four sigmoid units on the dense layer, as in the source) or `edges`
            (a spatial softmax per box edge over the column and row profiles of one block).
        edge_block: 1-based trunk block whose features the `edges` head reads.
        edge_units: channels of the `edges` head's 1-D convolutions.
        lr_schedule: `constant`, or `cosine` (decay to 0 over the run, step by step).
        ema_momentum: when > 0, training ends with an exponential moving average of the weights
            (Adam's `use_ema`), which smooths out the last epochs' swings in accuracy.
        augment_hflip, augment_vflip: random mirror images (the box mirrors with them).
        num_train, num_val: sizes of the built-in synthetic data.
    """

    image_size: int = 64
    class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES
    alpha: float = 1.0
    beta: float = 5.0
    iou_weight: float = 0.0
    filters: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_block: int = 2
    batch_norm: bool = True
    pooling: str = "gap"
    dense_units: int = 64
    box_head: str = "edges"
    edge_block: int = 2
    edge_units: int = 32
    learning_rate: float = 2e-3
    lr_schedule: str = "constant"
    ema_momentum: float = 0.98
    batch_size: int = 32
    epochs: int = 6
    steps_per_epoch: int | None = None
    val_fraction: float = 0.2
    augment_hflip: bool = True
    augment_vflip: bool = True
    num_train: int = 3000
    num_val: int = 500

    def __post_init__(self) -> None:
        if not self.filters or min(self.filters) < 1:
            raise ConfigError(f"filters={self.filters} needs a positive count per block: 16,32")
        pools = 2 ** len(self.filters)
        if self.image_size < pools or self.image_size % pools:
            raise ConfigError(
                f"image_size={self.image_size} is not a positive multiple of {pools} "
                f"(the trunk pools {len(self.filters)} times); try 32, 64 or 128"
            )
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ConfigError(f"class_names={self.class_names} needs two or more distinct names")
        check_choice("lr_schedule", self.lr_schedule, schedules.SCHEDULES)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("box_head", self.box_head, BOX_HEADS)
        if not 1 <= self.edge_block <= len(self.filters):
            raise ConfigError(f"edge_block={self.edge_block} is not in 1..{len(self.filters)}")
        for name in (
            "convs_per_block",
            "dense_units",
            "edge_units",
            "batch_size",
            "epochs",
            "num_train",
            "num_val",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch={self.steps_per_epoch} must be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(
                f"ema_momentum={self.ema_momentum} must be in [0, 1); 0 turns the average off"
            )
        for name in ("learning_rate", "alpha", "beta"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.iou_weight < 0:
            raise ConfigError(f"iou_weight={self.iou_weight} must be 0 or more")


PRESETS: dict[str, LocalizerConfig] = {
    # The source's network: plain conv/pool trunk, one dense layer, softmax + 4 box units,
    # alpha = beta = 1, at 128 px.
    "seed": LocalizerConfig(
        image_size=128,
        alpha=1.0,
        beta=1.0,
        convs_per_block=1,
        batch_norm=False,
        pooling="flatten",
        dense_units=128,
        box_head="dense",
        learning_rate=1e-3,
        ema_momentum=0.0,
        augment_hflip=False,
        augment_vflip=False,
    ),
    # Spatial-softmax edge head sized for a 2-core CPU, with 15 cosine epochs and a 1 - IoU box
    # term: the squared error alone plateaus where small boxes are still a pixel off (measurements:
    # docs/benchmarks.md#model-quality-the-earlier-and-the-current-slim-presets).
    "slim": LocalizerConfig(epochs=15, lr_schedule="cosine", iou_weight=1.0),
    # Seconds-long runs for tests.
    "tiny": LocalizerConfig(
        image_size=32,
        filters=(8, 16, 16),
        dense_units=16,
        edge_units=8,
        batch_size=8,
        epochs=1,
        steps_per_epoch=2,
        # A moving average over a handful of steps would mostly remember the initial weights.
        ema_momentum=0.0,
        num_train=32,
        num_val=16,
    ),
}


def contract(config: LocalizerConfig) -> Contract:
    """The serving contract that a model built from `config` fulfils."""
    return localizer_contract(config.image_size, config.class_names)


@keras.saving.register_keras_serializable(package="localizer")
class EdgeBox(layers.Layer):
    """Turns start/end logits over columns and rows into a BOX_FORMAT box.

    Each input is `[N, L + 2, 2]`: logits for the low and the high edge at the centres of `L`
    cells plus one padding cell on each side, so that edges on the image border are reachable.
    The soft-argmax (expected position) of each edge is clipped to the image; the box is their
    midpoint and distance.
    """

    def call(self, inputs):
        col_logits, row_logits = inputs
        x_lo, x_hi = self._edges(col_logits)
        y_lo, y_hi = self._edges(row_logits)
        return ops.stack(
            [(x_lo + x_hi) / 2, (y_lo + y_hi) / 2, ops.abs(y_hi - y_lo), ops.abs(x_hi - x_lo)],
            axis=-1,
        )

    @staticmethod
    def _edges(logits):
        cells = logits.shape[1] - 2
        support = (ops.arange(cells + 2, dtype="float32") - 0.5) / cells
        probs = ops.softmax(logits, axis=1)
        pos = ops.clip(ops.sum(probs * support[None, :, None], axis=1), 0.0, 1.0)
        return pos[:, 0], pos[:, 1]


def build_localizer(config: LocalizerConfig) -> keras.Model:
    """Builds the servable localizer.

    Args:
        config: the architecture (trunk, pooling, box head) and the classes.

    Returns:
        A model from `image` [N,S,S,3] in [0,1] to a dict of `class_probs` [N,K] (softmax) and
        `box` [N,4] (normalised BOX_FORMAT, each value in [0,1]).
    """
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = inputs
    block_outputs = []
    for i, filters in enumerate(config.filters, start=1):
        for j in range(1, config.convs_per_block + 1):
            x = layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=not config.batch_norm,
                name=f"block{i}_conv{j}",
            )(x)
            if config.batch_norm:
                # Short runs take ~100 steps an epoch; with the default momentum of 0.99 the
                # moving statistics lag the weights and validation accuracy collapses.
                x = layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn{j}")(x)
            x = layers.Activation("relu", name=f"block{i}_relu{j}")(x)
        block_outputs.append(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    if config.pooling == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    features = layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    class_probs = layers.Dense(len(config.class_names), activation="softmax", name="class_probs")(
        features
    )
    if config.box_head == "dense":
        box = layers.Dense(4, activation="sigmoid", name="box")(features)
    else:
        box = _edge_head(block_outputs[config.edge_block - 1], config.edge_units)
    return keras.Model(
        inputs, {"class_probs": class_probs, "box": box}, name=f"localizer_{config.box_head}"
    )


def _edge_head(features, units: int):
    """Column and row profiles (max over the other axis) -> 1-D convs -> edge logits -> box.

    A column holds part of the object when any of its rows does, so the max over rows keeps the
    object's horizontal extent exactly; finding its ends is then a local 1-D problem, with none
    of the position bookkeeping that a dense layer on a flattened map must learn.
    """
    h, w = features.shape[1], features.shape[2]
    x = layers.Conv2D(units, 1, activation="relu", name="edges_reduce")(features)
    logits = []
    for axis, pool, length in (("cols", (h, 1), w), ("rows", (1, w), h)):
        p = layers.MaxPooling2D(pool, name=f"edges_{axis}_max")(x)
        p = layers.Reshape((length, units), name=f"edges_{axis}_profile")(p)
        p = layers.ZeroPadding1D(1, name=f"edges_{axis}_pad")(p)
        for k in (1, 2):
            p = layers.Conv1D(
                units, 3, padding="same", activation="relu", name=f"edges_{axis}_conv{k}"
            )(p)
        logits.append(layers.Conv1D(2, 1, name=f"edges_{axis}_logits")(p))
    return EdgeBox(name="box")(logits)


def box_sse(y_true, y_pred):
    """The box term of the loss before its weight: the squared errors summed over x, y, h, w.

    Args:
        y_true: target boxes `[N, 4]`.
        y_pred: predicted boxes `[N, 4]`.

    Returns:
        `[N]` per-image sums (Keras averages them over the batch).
    """
    return ops.sum(ops.square(y_pred - ops.cast(y_true, y_pred.dtype)), axis=-1)


def callbacks(config) -> list:
    """The learning-rate schedule's `fit` callbacks."""
    return schedules.callbacks(config.lr_schedule, config.learning_rate, config.epochs)


def box_iou_loss(y_true, y_pred):
    """`1 - IoU` per image for BOX_FORMAT boxes `[N, 4]` (centre x, y, then h, w)."""
    y_true = ops.cast(y_true, y_pred.dtype)

    def corners(box):
        x, y, h, w = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2

    tx0, ty0, tx1, ty1 = corners(y_true)
    px0, py0, px1, py1 = corners(y_pred)
    inter_w = ops.maximum(ops.minimum(tx1, px1) - ops.maximum(tx0, px0), 0.0)
    inter_h = ops.maximum(ops.minimum(ty1, py1) - ops.maximum(ty0, py0), 0.0)
    inter = inter_w * inter_h
    union = (tx1 - tx0) * (ty1 - ty0) + (px1 - px0) * (py1 - py0) - inter
    return 1.0 - inter / ops.maximum(union, 1e-9)


def _box_loss(config: LocalizerConfig):
    """The box output's loss; Keras multiplies it by `beta`, so the IoU term is divided by it."""
    if not config.iou_weight:
        return box_sse
    share = config.iou_weight / config.beta

    def box_sse_and_iou(y_true, y_pred):
        return box_sse(y_true, y_pred) + share * box_iou_loss(y_true, y_pred)

    return box_sse_and_iou


def build_trainable(config: LocalizerConfig) -> keras.Model:
    """The network compiled with Adam and `alpha * CE + beta * sum (s - t)^2` per image (plus
    `iou_weight * (1 - IoU)`).

    Keras averages each output's per-image loss over the batch and adds them with the weights,
    which equals the batch mean of the weighted per-image sum. Targets are class ids (sparse).
    With `ema_momentum > 0`, `fit` leaves the averaged weights in the model when it returns.
    """
    model = build_localizer(config)
    ema = config.ema_momentum > 0
    model.compile(
        optimizer=keras.optimizers.Adam(
            config.learning_rate, use_ema=ema, ema_momentum=config.ema_momentum if ema else 0.99
        ),
        loss={
            "class_probs": keras.losses.SparseCategoricalCrossentropy(),
            "box": _box_loss(config),
        },
        loss_weights={"class_probs": config.alpha, "box": config.beta},
        metrics={"class_probs": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
    )
    return model


def predict(
    model: keras.Model, images: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities `[N, K]` and normalised boxes `[N, 4]` for pre-processed images."""
    out = model.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(out["class_probs"]), np.asarray(out["box"])


def evaluate(model: keras.Model, data: TaskData, config: LocalizerConfig) -> dict[str, float]:
    """Accuracy, macro F1, mean box IoU and the share of boxes with IoU >= 0.5 on validation."""
    probs, pred_boxes = predict(model, data.val_arrays["image"], config.batch_size)
    truth = data.val_arrays["class_id"]
    pred = probs.argmax(axis=-1)
    iou = box_ops.box_iou(pred_boxes, data.val_arrays["box"])
    return {
        "accuracy": float(np.mean(pred == truth)),
        "f1": box_ops.macro_f1(truth, pred, len(config.class_names)),
        "mean_iou": float(np.mean(iou)),
        "iou50": float(np.mean(iou >= 0.5)),
        "num_val": len(truth),
    }


def draw_predictions(
    model: keras.Model, data: TaskData, config: LocalizerConfig, path: Path
) -> None:
    """Saves a PNG grid of validation images: true box green, predicted box and class red."""
    from PIL import Image, ImageDraw

    count = min(8, len(data.val_arrays["image"]))
    probs, pred_boxes = predict(model, data.val_arrays["image"][:count], config.batch_size)
    # Small inputs are enlarged so that the boxes and labels stay legible.
    side = max(config.image_size, 160)
    tiles = []
    for i in range(count):
        tile = Image.fromarray(data.val_arrays["raw_image"][i]).resize((side, side))
        draw = ImageDraw.Draw(tile)
        for box, colour in ((data.val_arrays["box"][i], (0, 220, 0)), (pred_boxes[i], (255, 0, 0))):
            x0, y0, x1, y1 = box_ops.clip_corners(box_ops.to_corners(box, side, side), side, side)
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
        k = int(probs[i].argmax())
        label = f"{config.class_names[k]} {probs[i, k]:.2f}"
        draw.rectangle([0, 0, 8 + 6 * len(label), 13], fill=(0, 0, 0))
        draw.text((3, 1), label, fill=(255, 80, 80))
        tiles.append(tile)
    grid = Image.new("RGB", (side * min(count, 4), side * ((count + 3) // 4)), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (side * (i % 4), side * (i // 4)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
