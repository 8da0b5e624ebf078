"""Known-answer SavedModels in the spirit of TF Serving's half_plus_two, written with TensorFlow.

Only tests that need TensorFlow import this module (or import it inside a fixture); the
TensorFlow-free helpers, the server process among them, are in `tests.support`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.quiet import import_tensorflow
from tests.support import staging_folder

# TensorFlow, imported quietly; the tests that build graphs or tensors themselves use this one.
tf = import_tensorflow()


# -- known-answer models ---------------------------------------------------------------------

# Side of the square matrix multiplied on every `spin` round: big enough that a few hundred rounds
# take measurable time, small enough that one round is cheap.
SPIN_SIDE = 128

SIGNATURES = ("serving_default", "two_inputs", "echo_bytes", "spin", "matrix")


class _KnownModel(tf.Module):
    """y = a*x + b and friends; `a` and `b` are variables so the export has a variables/ dir."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a = tf.Variable(a, dtype=tf.float32, name="a")
        self.b = tf.Variable(b, dtype=tf.float32, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serving_default(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="a"),
            tf.TensorSpec([None], tf.float32, name="b"),
        ]
    )
    def two_inputs(self, a, b):
        return {"sum": a + b, "diff": a - b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def echo_bytes(self, text):
        return {"text_bytes": tf.identity(text), "length": tf.strings.length(text)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="x"),
            tf.TensorSpec([None], tf.int32, name="rounds"),
        ]
    )
    def spin(self, x, rounds):
        # `rounds` has a batch dimension (one entry per row, the largest wins) so that the
        # server's batching can merge spin requests like any other.
        rounds = tf.reduce_max(rounds)
        # Multiplying by the identity keeps the matrix all ones (finite), yet the runtime cannot
        # skip the loop because its result feeds y; 0 * finite sum leaves y exact.
        eye = tf.eye(SPIN_SIDE, dtype=tf.float32)
        _, m = tf.while_loop(
            lambda i, m: i < rounds,
            lambda i, m: (i + 1, tf.matmul(m, eye)),
            (tf.constant(0, tf.int32), tf.ones([SPIN_SIDE, SPIN_SIDE], tf.float32)),
        )
        return {"y": self.a * x + self.b + 0.0 * tf.reduce_sum(m)}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="m")])
    def matrix(self, m):
        return {"row_sum": tf.reduce_sum(m, axis=1)}


def write_known_model(
    base_path: str | os.PathLike,
    version: int,
    *,
    a: float = 0.5,
    b: float = 2.0,
    warmup: str | None = None,
) -> Path:
    """Writes a known-answer SavedModel to `<base_path>/<version>/`, atomically.

    Args:
        base_path: The model's base path (created if missing).
        version: The version number, used as the leaf directory name.
        a: Slope of `serving_default` and `spin` (y = a*x + b).
        b: Intercept of `serving_default` and `spin`.
        warmup: None for no warmup file, "good" for a valid one (serving_default x=[1.0]), or
            "bad" for a record whose `x` is float64, which must fail the load.

    Returns:
        The version directory.
    """
    tmp, final = staging_folder(base_path, version)
    module = _KnownModel(a, b)
    signatures = {name: getattr(module, name) for name in SIGNATURES}
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    if warmup is not None:
        _write_warmup(tmp, warmup)
    os.rename(tmp, final)
    return final


def _write_warmup(version_dir: Path, kind: str) -> None:
    from export.warmup import write_warmup

    if kind == "good":
        x = np.array([1.0], dtype=np.float32)
    elif kind == "bad":
        x = np.array([1.0], dtype=np.float64)
    else:
        raise ValueError(f"warmup must be None, 'good' or 'bad', not {kind!r}")
    write_warmup(version_dir, "known", {"serving_default": {"x": x}})
