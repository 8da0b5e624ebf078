"""Compares the C++ loader's answers with the trained Keras model's, on the same warmup inputs.

The reference answers come from the model's own export module: its signature functions traced
around the Keras model rebuilt from the run folder (not around any saved or reloaded graph).
Then the model's export check (`export.models.<model>.check`, the one the export itself runs)
judges the C++ answers, with the same tolerances.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.warmup_records import warmup_path
from export.conformance.build import ConformanceError
from export.models import export_module
from export.models.base import PARITY_ATOL, ExportCheckError
from export.warmup import read_warmup

# uint8 outputs are rounded floats: a value on a half step may flip by one level (the
# generator's export check allows the same). Other integers must be equal.
LEVEL_ATOL = 1.0

# {record index: (signature, {input alias: array})}
Inputs = dict[int, tuple[str, dict[str, np.ndarray]]]


@dataclass(frozen=True)
class OutputDiff:
    """How far one output of one record is from the Keras model's answer."""

    index: int
    signature: str
    alias: str
    diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.diff <= self.tolerance


def version_model(version_dir: Path) -> str | None:
    """The model name recorded in the version's manifest, or None without one."""
    manifest = Path(version_dir) / "assets.extra" / "manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("model")


def warmup_inputs(version_dir: Path) -> Inputs:
    """The predict requests of the warmup file, read in Python for the Keras side."""
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    inputs: Inputs = {}
    path = warmup_path(version_dir)
    for index, log in enumerate(read_warmup(path) if path.is_file() else []):
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        arrays = {alias: tf.make_ndarray(t) for alias, t in request.inputs.items()}
        inputs[index] = (signature, arrays)
    return inputs


class KerasSignatures:
    """The model's serving signatures traced around the Keras model itself, with no SavedModel.

    It has the `run` method of `export.session.SessionModel`, which the models' export checks
    call for their train/serve skew test.

    Args:
        model_name: a registered model name (`export.models.EXPORTS`).
        keras_model: the trained servable Keras model.
        contract: the model's serving contract.
    """

    def __init__(self, model_name: str, keras_model, contract):
        from common.quiet import import_tensorflow

        self._tf = import_tensorflow()
        module = self._tf.Module()
        module.model = keras_model
        self._functions = export_module(model_name).signatures(module, contract)

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The Keras model's answer to `inputs` (by alias) for `signature`, by output alias."""
        function = self._functions.get(signature)
        if function is None:
            raise ConformanceError(
                f"the model's export module has no signature {signature!r}; it has "
                f"{', '.join(sorted(self._functions))}"
            )
        result = function(**{alias: self._tf.constant(v) for alias, v in inputs.items()})
        return {alias: value.numpy() for alias, value in result.items()}


def output_diffs(
    reference: KerasSignatures, inputs: Inputs, answers: dict[int, dict[str, np.ndarray]]
) -> list[OutputDiff]:
    """Max absolute difference of every output of every answered record from the reference."""
    rows = []
    for index, got in sorted(answers.items()):
        signature, arrays = inputs[index]
        want = reference.run(signature, arrays)
        for alias in sorted(set(got) | set(want)):
            mine, theirs = got.get(alias), want.get(alias)
            tolerance = _tolerance(mine if mine is not None else theirs)
            rows.append(OutputDiff(index, signature, alias, _difference(mine, theirs), tolerance))
    return rows


def model_check(
    model_name: str,
    keras_model,
    contract,
    reference: KerasSignatures,
    inputs: Inputs,
    answers: dict,
) -> str | None:
    """Runs the model's own export check on the C++ answers; returns its failure or None.

    The check also runs `serving_default` on extra inputs (its train/serve skew test) through
    `loaded.run`; `reference` answers those from the Keras model, so no other loader is
    involved and every served answer the check judges is the C++ loader's.
    """
    first: dict[str, int] = {}
    for index in sorted(answers):
        first.setdefault(inputs[index][0], index)
    missing = sorted({s.name for s in contract.signatures} - set(first))
    if missing:
        return f"not run: no answered warmup record for {', '.join(missing)}"
    requests = {name: inputs[index][1] for name, index in first.items()}
    outputs = {name: answers[index] for name, index in first.items()}
    try:
        export_module(model_name).check(keras_model, reference, contract, requests, outputs)
    except ExportCheckError as exc:
        return str(exc)
    return None


def _tolerance(value: np.ndarray) -> float:
    if value.dtype.kind == "f":
        return PARITY_ATOL
    if value.dtype == np.uint8:
        return LEVEL_ATOL
    if value.dtype.kind == "O":
        # Encoded images are compared by their decoded levels.
        return LEVEL_ATOL
    return 0.0


def _difference(got: np.ndarray | None, want: np.ndarray | None) -> float:
    if got is None or want is None or got.shape != want.shape:
        return float("inf")
    if got.dtype.kind == "O" or want.dtype.kind == "O":
        return _encoded_difference(got, want)
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def _encoded_difference(got: np.ndarray, want: np.ndarray) -> float:
    """Bytes outputs: 0 when equal, else the max level difference of the decoded images."""
    if all(a == b for a, b in zip(got.ravel(), want.ravel(), strict=True)):
        return 0.0
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    worst = 0.0
    for a, b in zip(got.ravel(), want.ravel(), strict=True):
        try:
            pixels = [tf.io.decode_image(x, expand_animations=False).numpy() for x in (a, b)]
        except tf.errors.InvalidArgumentError:
            return float("inf")  # different bytes that are not images
        worst = max(worst, _difference(*pixels))
    return worst
