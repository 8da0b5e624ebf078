"""Runs one training job into a self-describing run folder.

A run folder holds:
    config.json        the model name, preset, seed, data source and full config (enough to rebuild)
    checkpoints/       tf.train checkpoints of the model and its optimizer(s), one per epoch
    logs/              TensorBoard logs (`tensorboard --logdir RUN_DIR/logs`)
    history.json       per-epoch training and validation logs
    metrics.json       final validation metrics under plain names, plus speed figures
    curves.png         loss and metric curves
    predictions.png    (samples.png for the generator) pictures of validation predictions
    model.weights.h5   the servable model's final weights, which export reads

Example:
    >>> from training.runner import train
    >>> from training.tasks import get_task
    >>> task = get_task("unet")
    >>> result = train(task, task.presets["tiny"], out=Path("runs/unet/tiny"))
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training import config as cfg
from training import plots
from training.errors import UserError
from training.tasks import Task, get_task

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]


def pick_strategy() -> tf.distribute.Strategy:
    """Picks the distribution strategy from what is visible.

    MultiWorkerMirroredStrategy when TF_CONFIG names several workers; otherwise
    MirroredStrategy over every visible GPU (or logical CPU) when there are several; otherwise
    the default single-device strategy.
    """
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return _MultiWorkerStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3's `fit` expects of it.

    Keras 3 calls `reduce` in two ways that this strategy rejects (keras-team/keras#20585),
    so no model could train on several workers:

    - before the first step it reduces a whole (image, target) batch in one call; the strategy
      takes one value only, where MirroredStrategy maps over the nest. This one does too.
    - after each step it reduces each scalar log along axis 0 when there are several workers,
      and a scalar has no axis 0. The mean over replicas (axis None) is what it means.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_one(item):
            local = self.experimental_local_results(item)[0]
            item_axis = None if axis is not None and local.shape.rank == 0 else axis
            return parent.reduce(reduce_op, item, item_axis)

        return tf.nest.map_structure(reduce_one, value)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """Reads a run folder's config.json, or raises a UserError saying what is missing."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder: {CONFIG_FILE} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None


def load_run(run_dir: Path) -> tuple[Task, Any, keras.Model]:
    """Rebuilds a finished run's servable model from its folder alone.

    Returns:
        The task, the config, and the servable Keras model with its trained weights.
    """
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    task = get_task(saved.get("model", ""))
    config = cfg.from_dict(task.config_cls, saved["config"])
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{run_dir} has no {WEIGHTS_FILE}: the run did not finish")
    model = task.build(config)
    # Keras only warns when saved layers do not match and keeps fresh weights for them; a model
    # that is partly untrained must never pass for the trained one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(weights)
    skipped = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
    if skipped:
        raise UserError(
            f"{weights} does not match the {task.name} model in {CONFIG_FILE}: "
            f"{skipped[0].splitlines()[0]}"
        )
    return task, config, model


def train(
    task: Task,
    config: Any,
    *,
    out: Path,
    data: str | None = None,
    seed: int = 0,
    resume: bool = False,
    preset: str | None = None,
) -> RunResult:
    """Trains `task`'s model with `config`, writing everything into the run folder `out`.

    Args:
        task: the model to train (see `training.tasks`).
        config: the model's config (a preset with overrides applied).
        out: the run folder. It must not hold a run unless `resume` is set.
        data: a data path, or None for the model's built-in data.
        seed: seeds Python, NumPy, TensorFlow and the data, so runs repeat exactly.
        resume: continue from the latest checkpoint in `out`.
        preset: the preset's name, recorded in config.json.

    Raises:
        UserError: when `out` already holds a run and `resume` is not set, or on bad data.
    """
    out = Path(out)
    config_path = out / CONFIG_FILE
    if config_path.exists() and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it or a new --out")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_json(
        config,
        config_path,
        model=task.name,
        preset=preset,
        seed=seed,
        data=data,
        tensorflow=tf.__version__,
        keras=keras.__version__,
    )
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    strategy = pick_strategy()
    loaded = task.load_data(config, data, seed)
    print(f"[{task.name}] data: {loaded.description}", flush=True)
    if strategy.num_replicas_in_sync > 1:
        # TensorFlow's own class name for the multi-worker strategy is CollectiveAllReduceStrategy.
        multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        kind = "MultiWorkerMirroredStrategy" if multi else type(strategy).__name__
        print(f"[{task.name}] {kind} over {strategy.num_replicas_in_sync} devices")
    with strategy.scope():
        model = task.build_trainable(config)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, out / "checkpoints", max_to_keep=2)
    history = _load_history(out) if resume else {}
    if resume and manager.latest_checkpoint:
        # Optimizer slots are created on the first step; tf.train restores them then.
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"[{task.name}] resumed from {manager.latest_checkpoint} (epoch {int(epoch)})")
    initial_epoch = int(epoch.numpy())
    recorder = _Recorder(manager, epoch, out, history, config.batch_size)
    if initial_epoch < config.epochs:
        model.fit(
            loaded.train,
            validation_data=loaded.val,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=[
                keras.callbacks.TensorBoard(str(out / "logs")),
                recorder,
                *task.callbacks(config),
            ],
            shuffle=False,  # the data sets shuffle themselves
            verbose=1,
        )
    else:
        print(f"[{task.name}] already trained for {initial_epoch} epochs; nothing to do")

    _share_batch_norm_statistics(strategy, model)
    servable = task.servable(model)
    servable.save_weights(out / WEIGHTS_FILE)
    metrics = dict(task.evaluate(model, loaded, config))
    metrics.update(recorder.speed(task.train_flops(model)))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    plots.training_curves(history, out / "curves.png", title=f"{task.name} ({preset or 'custom'})")
    task.draw_predictions(model, loaded, config, out / task.picture)
    return RunResult(out, metrics, history)


def _share_batch_norm_statistics(strategy: tf.distribute.Strategy, model: keras.Model) -> None:
    """Averages the batch-norm moving statistics over the workers of a multi-worker run.

    The strategy keeps trainable weights in sync, but each worker updates its own copy of the
    moving mean and variance from its own share of the batches (found by the two-worker test:
    the chief's saved statistics differed from the other worker's). Their mean describes all
    the data, and every worker then saves the same model.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    stats = [
        variable
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for variable in (layer.moving_mean, layer.moving_variance)
    ]
    if stats:
        local = strategy.run(lambda: [tf.identity(v.value) for v in stats])
        for variable, mean in zip(stats, strategy.reduce("MEAN", local, None), strict=True):
            variable.assign(mean)


def _all_layers(layer: keras.layers.Layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _all_layers(sub)


def _significant(value: float) -> float:
    """`value` to 4 significant digits: a tiny run on a busy machine trains at 0.003 GFLOP/s,
    which a fixed 2 decimals rounded to 0."""
    return float(f"{value:.4g}")


def _load_history(out: Path) -> dict[str, list[float]]:
    path = out / "history.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class _Recorder(keras.callbacks.Callback):
    """Saves a checkpoint and the history after each epoch, and times the training steps."""

    def __init__(self, manager, epoch_var, out: Path, history: dict, batch_size: int):
        super().__init__()
        self.manager, self.epoch_var, self.out = manager, epoch_var, out
        self.history, self.batch_size = history, batch_size
        self.epoch_stats: list[tuple[int, float]] = []
        # CPU time of the whole process (every thread, user + system) while training: on a
        # shared machine a fairer cost than wall time, which other people's jobs stretch.
        self.cpu_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._val_seconds, self._steps = time.perf_counter(), 0.0, 0
        self._cpu_start, self._val_cpu = time.process_time(), 0.0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        self._val_start, self._val_cpu_start = time.perf_counter(), time.process_time()

    def on_test_end(self, logs=None):
        self._val_seconds += time.perf_counter() - self._val_start
        self._val_cpu += time.process_time() - self._val_cpu_start

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start - self._val_seconds
        self.epoch_stats.append((self._steps, seconds))
        self.cpu_seconds += time.process_time() - self._cpu_start - self._val_cpu
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch_var.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")

    def speed(self, train_flops: int) -> dict[str, float]:
        """Training throughput; the first epoch (graph tracing) is left out when there are more."""
        stats = self.epoch_stats[1:] if len(self.epoch_stats) > 1 else self.epoch_stats
        if not stats:
            return {}
        steps = sum(s for s, _ in stats)
        seconds = sum(t for _, t in stats)
        images_per_second = steps * self.batch_size / max(seconds, 1e-9)
        return {
            "train_seconds": round(sum(t for _, t in self.epoch_stats), 2),
            "train_cpu_seconds": round(self.cpu_seconds, 2),
            "train_images_per_second": _significant(images_per_second),
            "train_gflops_per_image": _significant(train_flops / 1e9),
            "train_gflops_per_second": _significant(images_per_second * train_flops / 1e9),
        }
