"""What an export module gives for one model, and the checks all of them share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from common.contract import Contract
from training.errors import UserError

# Keras model vs the version run as TF Serving runs it, on the same input.
PARITY_ATOL = 1e-5
# Client (Pillow) vs TensorFlow pre-processing differ by float rounding only.
SKEW_ATOL = 1e-4

# The serving functions are traced with AutoGraph off: their control flow is already graph ops
# (tf.cond, tf.switch_case, tf.while_loop; Python loops only unroll constants), so AutoGraph
# only rewrote and recompiled their source on every trace, about a tenth of an export. A Python
# `if` or `while` on a tensor now fails at trace time instead of being converted silently.
AUTOGRAPH = False

# {signature name: {input alias: array}}: warmup records and the self-check both use them.
Requests = Mapping[str, Mapping[str, np.ndarray]]
# {signature name: {output alias: array}}: what the version answered to `Requests`.
Outputs = Mapping[str, Mapping[str, np.ndarray]]


class ExportCheckError(UserError):
    """The written SavedModel does not behave like the trained model or its contract."""


@dataclass(frozen=True)
class ExportModule:
    """One model's export: its serving signatures, sample requests and model-specific checks.

    Attributes:
        input_kinds: the kinds of input its signatures take (for error messages and docs).
        signatures: (module holding `module.model`, contract) -> {signature: concrete function}.
        sample_requests: (training config, contract) -> real inputs for every signature.
        check: (Keras model, the version in a Session (`export.session.SessionModel`),
            contract, requests, outputs) -> None; raises ExportCheckError when the served
            answers differ from the trained model's.
        sample_image: training config -> a real uint8 image of the kind the model serves, or
            None for models that take no images.
    """

    input_kinds: tuple[str, ...]
    signatures: Callable[[tf.Module, Contract], dict]
    sample_requests: Callable[[Any, Contract], dict[str, dict[str, np.ndarray]]]
    check: Callable[[Any, Any, Contract, Requests, Outputs], None]
    sample_image: Callable[[Any], np.ndarray] | None = None


def input_spec(contract: Contract, signature: str) -> tf.TensorSpec:
    """The TensorSpec of a signature's (single) input, named and typed by the contract."""
    spec = contract.signature(signature).inputs[0]
    return tf.TensorSpec(spec.shape, tf.dtypes.as_dtype(spec.dtype), name=spec.name)


def close(name: str, got, want, atol: float) -> None:
    """Raises ExportCheckError naming `name` when `got` and `want` differ by more than `atol`."""
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    if diff > atol:
        raise ExportCheckError(f"{name}: max difference {diff:.3g} exceeds {atol:g}")
