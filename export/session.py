"""A written version loaded the way `tensorflow_model_server` loads it: into a TF1 Session.

TF Serving's C++ `LoadSavedModel` imports the MetaGraph, runs the saver's restore op and the
init op, and then runs requests by the SignatureDef's tensor names. TF2's
`tf.saved_model.load` restores variables through the object graph instead, so a SavedModel can
pass there and still fail every request under TF Serving ("Could not find variable ..."). The
export's self-check therefore runs every sample request through this path, with TensorFlow's
own Python session loader, before a version is published.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.util import deprecation

from export.models.base import ExportCheckError

SERVE_TAGS = ("serve",)
_MISSING_VARIABLE = re.compile(r"Could not find variable ([^ .]+)")


class SessionModel:
    """One version in its own graph and Session; `run` feeds and fetches by tensor names.

    Args:
        path: the version folder.
        tags: the MetaGraph's tag set (TF Serving's `--saved_model_tags`).

    Raises:
        ExportCheckError: the session loader cannot import or restore the version.
    """

    def __init__(self, path: str | Path, tags: tuple[str, ...] = SERVE_TAGS):
        self.path = Path(path)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        try:
            # The loader's advice to use tf.saved_model.load is the very path this replaces.
            with self._graph.as_default(), deprecation.silence():
                meta_graph = tf.compat.v1.saved_model.loader.load(
                    self._session, list(tags), str(self.path)
                )
        except (tf.errors.OpError, RuntimeError, ValueError) as error:
            self.close()
            raise ExportCheckError(
                f"TF Serving's session loader cannot load {self.path}: {_first_line(error)}"
            ) from None
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def
        )

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs `signature` on inputs keyed by alias; returns every output keyed by alias.

        Raises:
            ExportCheckError: naming the signature and, when the session lacks one, the first
                variable it could not find.
        """
        sig = self.signature_defs.get(signature)
        if sig is None:
            raise ExportCheckError(f"signature {signature!r} is missing from the MetaGraph")
        feeds = {sig.inputs[alias].name: value for alias, value in inputs.items()}
        aliases = sorted(sig.outputs)
        try:
            values = self._session.run([sig.outputs[a].name for a in aliases], feeds)
        except tf.errors.OpError as error:
            missing = _MISSING_VARIABLE.search(error.message)
            detail = (
                f"variable {missing.group(1)} is not restored by the MetaGraph's restore op"
                if missing
                else _first_line(error)
            )
            raise ExportCheckError(
                f"signature {signature!r} fails under TF Serving's session loader: {detail}"
            ) from None
        return {alias: np.asarray(value) for alias, value in zip(aliases, values, strict=True)}

    def close(self) -> None:
        self._session.close()


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def check_version(path: str | Path) -> int:
    """Loads a published version as TF Serving does and replays its warmup records.

    Args:
        path: a version folder (`models/<model>/<N>`).

    Returns:
        How many warmup records ran.

    Raises:
        ExportCheckError: the version fails to load or a record fails to run, naming the
            signature and the first variable the session could not find.
    """
    from common.warmup_records import warmup_path
    from export.warmup import read_warmup

    warmup = warmup_path(path)
    logs = read_warmup(warmup) if warmup.is_file() else []
    model = SessionModel(path)
    try:
        for log in logs:
            request = log.predict_log.request
            inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
            model.run(request.model_spec.signature_name or "serving_default", inputs)
    finally:
        model.close()
    return len(logs)
