"""Known-answer SavedModels built the TF1 way, like TF Serving's own `half_plus_two` test data.

Each writer builds a graph with placeholders and `tf.io.parse_example` over serialized
`tf.Example` strings, saves it with `tf.compat.v1.saved_model.Builder` (variables, an asset
file and a main op, as TF Serving's test models have) and publishes the version atomically.

Example:
    write_half_plus_two(tmp_path / "half_plus_two", 123)           # y = 0.5x + 2
    write_half_plus_two(tmp_path / "half_plus_three", 123, b=3.0)  # y = 0.5x + 3
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from common.quiet import import_tensorflow
from tests.support import staging_folder

tf = import_tensorflow()
from tensorflow.python.util import deprecation  # noqa: E402 (after the quiet import)

v1 = tf.compat.v1

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
ASSET_NAME = "foo.txt"
ASSET_TEXT = "asset-file-contents"

# What TF Serving's test data answers for x = 2.0: y = 0.5x + 2, y2 = 0.5x + 3 (same for x2).
HALF_PLUS_TWO_SIGNATURES = (
    "serving_default",
    "classify_x_to_y",
    "regress_x_to_y",
    "regress_x_to_y2",
    "regress_x2_to_y3",
)


def _publish(base_path: str | os.PathLike, version: int, build: Callable) -> Path:
    """Builds a graph in a fresh session and saves it to `<base>/<version>/` by a rename.

    Args:
        base_path: The model's base path (created if missing).
        version: The version number, the leaf directory's name.
        build: `(session, asset_path) -> (signature_def_map, main_op)`, called inside the graph.
    """
    tmp, final = staging_folder(base_path, version)
    # The TF1 builders are deprecated; their warnings say nothing about these models.
    with (
        tempfile.TemporaryDirectory() as assets,
        tf.Graph().as_default() as graph,
        deprecation.silence(),
    ):
        asset_path = Path(assets) / ASSET_NAME
        asset_path.write_text(ASSET_TEXT)
        with v1.Session(graph=graph) as session:
            signatures, main_op = build(session, str(asset_path))
            builder = v1.saved_model.Builder(str(tmp))
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=main_op,
            )
            builder.save()
    os.rename(tmp, final)
    return final


def _signature(inputs: dict, outputs: dict, method: str):
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
    )


def _asset_main_op(asset_path: str):
    """The asset's path in ASSET_FILEPATHS and a main op that initializes and reads its name."""
    v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, tf.constant(asset_path))
    filename = v1.Variable(ASSET_NAME, name="filename_tensor", trainable=False, collections=[])
    return tf.group(v1.saved_model.main_op.main_op(), filename.assign(ASSET_NAME))


def _parse(serialized):
    """`x` is required; `x2` defaults to 0.0, as in TF Serving's half_plus_two."""
    features = {
        "x": v1.io.FixedLenFeature([1], tf.float32),
        "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
    }
    parsed = v1.io.parse_example(serialized, features)
    for tensor in parsed.values():
        # TF 1.x inferred [-1, 1] even from a serialized tensor of unknown rank; TF 2.x does not.
        tensor.set_shape([None, 1])
    return parsed


def write_half_plus_two(
    base_path: str | os.PathLike,
    version: int,
    *,
    a: float = 0.5,
    b: float = 2.0,
    c: float = 3.0,
    predict_examples: bool = True,
    classify_x2: bool = False,
) -> Path:
    """Writes TF Serving's half_plus_two test model (y = a*x + b) as version `version`.

    The signatures and their tensor names are those of TF Serving's
    `saved_model_half_plus_two_cpu` test data: `serving_default` (predict, x -> y, both
    [-1, 1]), `classify_x_to_y` (classify, inputs -> scores), `regress_x_to_y`,
    `regress_x_to_y2` (y2 = a*x + c) and `regress_x2_to_y3` (regress from the float tensor x2,
    y3 = a*x2 + c). The `tf.Example` placeholder `tf_example` has no shape, as there.

    Args:
        base_path: The model's base path (created if missing).
        version: The version number.
        a: The slope, a variable.
        b: The intercept of y, a variable (3.0 gives TF Serving's half_plus_three).
        c: The intercept of y2 and y3, a variable.
        predict_examples: Also add `predict_examples`, a predict signature taking serialized
            `tf.Example`s (inputs "examples" -> outputs "y").
        classify_x2: Also add `classify_x2_to_y3` (classify, inputs x2 -> scores y3), as
            TensorFlow's own `cc/saved_model/testdata/half_plus_two` has.

    Returns:
        The version directory.
    """

    def build(session, asset_path):
        slope = v1.Variable(a, name="a")
        y_bias, y2_bias = v1.Variable(b, name="b"), v1.Variable(c, name="c")
        examples = v1.placeholder(tf.string, name="tf_example")
        parsed = _parse(examples)
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(slope * x + y_bias, name="y")
        y2 = tf.identity(slope * x + y2_bias, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.identity(slope * x2 + y2_bias, name="y3")
        main_op = _asset_main_op(asset_path)
        session.run(v1.global_variables_initializer())
        signatures = {
            "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            "classify_x_to_y": _signature({"inputs": examples}, {"scores": y}, CLASSIFY),
            "regress_x_to_y": _signature({"inputs": examples}, {"outputs": y}, REGRESS),
            "regress_x_to_y2": _signature({"inputs": examples}, {"outputs": y2}, REGRESS),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
        }
        if predict_examples:
            signatures["predict_examples"] = _signature({"examples": examples}, {"y": y}, PREDICT)
        if classify_x2:
            signatures["classify_x2_to_y3"] = _signature({"inputs": x2}, {"scores": y3}, CLASSIFY)
        return signatures, main_op

    return _publish(base_path, version, build)


def write_inference_edge_cases(base_path: str | os.PathLike, version: int) -> Path:
    """Writes a model whose signatures trip each of TF Serving's Classify/Regress checks.

    Every signature reads `x` from serialized `tf.Example`s ("inputs", DT_STRING [-1]) with
    y = 0.5x + 2 and y2 = 0.5x + 3, both [batch, 1]:

    - `classify_by_shape` / `regress_by_shape`: predict method, classify / regress layout;
    - `custom_method`: x -> y under the method name "tensorflow/serving/custom";
    - `labelled`: classes ["two", "three"] per example with scores [y, y2]; `classes_only`;
    - `two_inputs`, `three_outputs`, `two_outputs`, `no_inputs_key`, `no_known_outputs`;
    - `scores_vector` / `outputs_vector` (rank 1), `scores_double` / `outputs_double`,
      `classes_int` (int64 classes), `scores_first_row` / `outputs_first_row` (batch of 1),
      `classes_scores_mismatch` (2 classes, 3 scores), `wide_outputs` (regress [batch, 2]).

    Args:
        base_path: The model's base path (created if missing).
        version: The version number.

    Returns:
        The version directory.
    """

    def build(session, asset_path):
        slope, bias = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b")
        examples = v1.placeholder(tf.string, [None], name="tf_example")
        x = tf.identity(_parse(examples)["x"], name="x")
        y = tf.identity(slope * x + bias, name="y")
        y2 = tf.identity(y + 1.0, name="y2")
        rows = tf.shape(x)[0:1]
        labels = tf.tile(tf.constant([[b"two", b"three"]]), tf.concat([rows, [1]], 0))
        pairs = tf.concat([y, y2], axis=1)
        main_op = _asset_main_op(asset_path)
        session.run(v1.global_variables_initializer())
        inputs = {"inputs": examples}
        layouts = {
            "classify_by_shape": ({"scores": y}, PREDICT),
            "regress_by_shape": ({"outputs": y}, PREDICT),
            "labelled": ({"classes": labels, "scores": pairs}, CLASSIFY),
            "classes_only": ({"classes": labels}, CLASSIFY),
            "three_outputs": ({"classes": labels, "scores": pairs, "extra": y}, CLASSIFY),
            "two_outputs": ({"outputs": y, "extra": y2}, REGRESS),
            "no_known_outputs": ({"probabilities": y}, CLASSIFY),
            "scores_vector": ({"scores": tf.reshape(y, [-1])}, CLASSIFY),
            "outputs_vector": ({"outputs": tf.reshape(y, [-1])}, REGRESS),
            "scores_double": ({"scores": tf.cast(y, tf.float64)}, CLASSIFY),
            "outputs_double": ({"outputs": tf.cast(y, tf.float64)}, REGRESS),
            "classes_int": ({"classes": tf.cast(x, tf.int64)}, CLASSIFY),
            "scores_first_row": ({"scores": y[:1]}, CLASSIFY),
            "outputs_first_row": ({"outputs": y[:1]}, REGRESS),
            "classes_scores_mismatch": (
                {"classes": labels, "scores": tf.concat([pairs, y], 1)},
                CLASSIFY,
            ),
            "wide_outputs": ({"outputs": pairs}, REGRESS),
        }
        signatures = {
            key: _signature(inputs, outputs, method) for key, (outputs, method) in layouts.items()
        }
        signatures["custom_method"] = _signature({"x": x}, {"y": y}, "tensorflow/serving/custom")
        signatures["two_inputs"] = _signature({"inputs": examples, "x": x}, {"scores": y}, CLASSIFY)
        signatures["no_inputs_key"] = _signature({"examples": examples}, {"scores": y}, CLASSIFY)
        return signatures, main_op

    return _publish(base_path, version, build)


class _HalfPlusTwoTf2(tf.Module):
    """TF Serving's native TF2 half_plus_two: the same answers from `tf.saved_model.save`."""

    def __init__(self):
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")
        self.c = tf.Variable(3.0, name="c")

    def _y(self, serialized, bias):
        return self.a * _parse(serialized)["x"] + bias

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_x_to_y(self, serialized):
        return {"scores": self._y(serialized, self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y(self, serialized):
        return {"outputs": self._y(serialized, self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y2(self, serialized):
        return {"outputs": self._y(serialized, self.c)}


def write_half_plus_two_tf2(base_path: str | os.PathLike, version: int) -> Path:
    """Writes TF Serving's TF2 half_plus_two (`tf.saved_model.save` of a `tf.Module`).

    Signatures: `serving_default` (x [1] -> y), `classify_x_to_y`, `regress_x_to_y` and
    `regress_x_to_y2`, the last three over serialized `tf.Example`s ("inputs").

    Returns:
        The version directory.
    """
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    module = _HalfPlusTwoTf2()
    signatures = {
        "serving_default": module.predict,
        "classify_x_to_y": module.classify_x_to_y,
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
    }
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    final = base / str(version)
    os.rename(tmp, final)
    return final
