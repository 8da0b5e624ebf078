"""Canary versions for the gate tests: an exact copy, an untrained export, and a slow twin.

Each is a real SavedModel version folder with the project's contract signatures, written with a
temporary name and renamed into place, as an export would be.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from common.quiet import import_tensorflow
from tests.known_models import SPIN_SIDE

tf = import_tensorflow()


def copy_version(base: Path, source: int, version: int) -> Path:
    """`base/version` as an exact copy of `base/source` (an identical canary)."""
    tmp = base / f".tmp-{version}"
    shutil.copytree(base / str(source), tmp)
    os.rename(tmp, base / str(version))
    return base / str(version)


def export_untrained(run_dir: Path, base: Path, version: int, work: Path) -> Path:
    """Exports a run of the same config whose weights are the initial ones: a canary that was
    never trained, so it answers differently from the trained stable."""
    from export import publish
    from training import config as cfg
    from training.runner import CONFIG_FILE, WEIGHTS_FILE, read_run_config
    from training.tasks import get_task

    untrained = work / "untrained-run"
    untrained.mkdir(parents=True)
    shutil.copy(run_dir / CONFIG_FILE, untrained / CONFIG_FILE)
    saved = read_run_config(untrained)
    task = get_task(saved["model"])
    tf.keras.utils.set_random_seed(12345)
    task.build(cfg.from_dict(task.config_cls, saved["config"])).save_weights(
        untrained / WEIGHTS_FILE
    )
    return publish.export_run(saved["model"], untrained, base.parent, version)


class _Slow(tf.Module):
    """Every signature of a loaded version, plus a matrix-product loop before it answers."""

    def __init__(self, inner, rounds: int):
        super().__init__()
        self.inner = inner
        self.rounds = tf.constant(rounds, tf.int32)

    def spin(self):
        # Multiplying by the identity keeps the matrix all ones (finite), and the runtime cannot
        # skip the loop because its result feeds the outputs: 0 * a finite sum changes nothing.
        eye = tf.eye(SPIN_SIDE, dtype=tf.float32)
        _, m = tf.while_loop(
            lambda i, m: i < self.rounds,
            lambda i, m: (i + 1, tf.matmul(m, eye)),
            (tf.constant(0, tf.int32), tf.ones([SPIN_SIDE, SPIN_SIDE], tf.float32)),
        )
        return 0.0 * tf.reduce_sum(m)

    def wrap(self, name: str):
        inner = self.inner.signatures[name]
        specs = inner.structured_input_signature[1]
        names = sorted(specs)

        @tf.function(
            input_signature=[tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]
        )
        def slow(*args):
            zero = self.spin()
            outputs = inner(**dict(zip(names, args, strict=True)))
            return {key: _after(value, zero) for key, value in outputs.items()}

        return slow


def _after(value: tf.Tensor, zero: tf.Tensor) -> tf.Tensor:
    """`value`, made to wait for the spin: adding its zero, or (strings) a control edge."""
    if value.dtype == tf.string:
        with tf.control_dependencies([zero]):
            return tf.identity(value)
    return value + tf.cast(zero, value.dtype)


def write_slow_twin(base: Path, source: int, version: int, rounds: int) -> Path:
    """`base/version`: the same answers as `base/source`, each after `rounds` spin rounds; the
    source's warmup records and manifest come along (the manifest says what it is)."""
    module = _Slow(tf.saved_model.load(str(base / str(source))), rounds)
    signatures = {name: module.wrap(name) for name in module.inner.signatures}
    tmp = base / f".tmp-{version}"
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    shutil.copytree(base / str(source) / "assets.extra", tmp / "assets.extra")
    manifest = tmp / "assets.extra" / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        data["test_note"] = f"version {source} with {rounds} spin rounds before each answer"
        manifest.write_text(json.dumps(data, indent=2))
    os.rename(tmp, base / str(version))
    return base / str(version)
