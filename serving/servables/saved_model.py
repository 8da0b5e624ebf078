"""One loaded SavedModel version: its signatures, a thread-safe `run`, and its warmup records."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from common.quiet import import_tensorflow
from serving.errors import ServingError, invalid_argument, not_found, unknown

tf = import_tensorflow()

logger = logging.getLogger("serving")

# gRPC codes by number: TF error codes and gRPC status codes share their numbering.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}

# TF's DataTypeString names where they differ from numpy-style names ("float", not "float32").
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


def grpc_code(error_code: int) -> grpc.StatusCode:
    """Returns the gRPC status code with the same number as a TF error code (UNKNOWN if none)."""
    return _GRPC_CODES.get(int(error_code), grpc.StatusCode.UNKNOWN)


def from_op_error(error: Exception) -> ServingError:
    """Converts a TF `OpError` (or any exception) into a ServingError with the same code."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        return ServingError(grpc_code(error.error_code), error.message)
    return unknown(str(error) or type(error).__name__)


def _type_name(dtype: tf.dtypes.DType) -> str:
    return _TF_TYPE_NAMES.get(dtype.name, dtype.name)


def _array_dtype(value: np.ndarray) -> tf.dtypes.DType:
    # Object, bytes and str arrays all travel as DT_STRING.
    if value.dtype.kind in "OSU":
        return tf.string
    return tf.as_dtype(value.dtype)


def _to_numpy(tensor: tf.Tensor) -> np.ndarray:
    if tensor.dtype == tf.string:
        # Keep strings as an object array of bytes, also for scalars (numpy() gives bare bytes).
        return np.array(tensor.numpy(), dtype=object)
    return np.asarray(tensor.numpy())


class Servable:
    """A loaded version of a model, safe to `run` from many threads at once."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signature_defs: dict[str, meta_graph_pb2.SignatureDef],
        loaded: object,
    ):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self._loaded = loaded
        self._functions = dict(loaded.signatures)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one signature and returns all of its outputs.

        Args:
            signature_name: The signature key, e.g. "serving_default".
            inputs: Arrays keyed by signature input alias; strings as object arrays of bytes.

        Returns:
            Every output of the signature as a numpy array, keyed by output alias.

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for inputs
                that do not bind (names, dtypes, shapes), or the TF runtime's code and message.
        """
        function = self._functions.get(signature_name)
        if function is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found.',
            )
        feeds = self._feeds(signature_name, inputs)
        try:
            outputs = function(**feeds)
        except tf.errors.OpError as error:
            raise from_op_error(error) from error
        except (TypeError, ValueError) as error:
            raise invalid_argument(str(error)) from error
        return {alias: _to_numpy(tensor) for alias, tensor in outputs.items()}

    def _feeds(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, object]:
        # Concrete functions silently cast numpy float64 to float32, so check dtypes here to
        # fail like TF Serving's session does; the caller normally has already done this.
        signature = self.signature_defs.get(signature_name)
        expected = signature.inputs if signature is not None else {}
        feeds = {}
        for index, alias in enumerate(sorted(inputs)):
            value = np.asarray(inputs[alias])
            if alias in expected:
                want = tf.as_dtype(expected[alias].dtype)
                got = _array_dtype(value)
                if want != got:
                    raise invalid_argument(
                        f"Expects arg[{index}] to be {_type_name(want)} but "
                        f"{_type_name(got)} is provided"
                    )
            if value.dtype.kind == "U":
                value = np.char.encode(value, "utf-8").astype(object)
            feeds[alias] = value
        return feeds

    def close(self) -> None:
        """Drops the loaded graph so TF can free it; `run` fails afterwards."""
        self._functions = {}
        self._loaded = None


def _read_saved_model(path: Path) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    if binary.is_file():
        try:
            proto.ParseFromString(binary.read_bytes())
        except protobuf_message.DecodeError as error:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {binary} as binary proto"
            ) from error
    elif text.is_file():
        try:
            text_format.Parse(text.read_text(), proto)
        except text_format.ParseError as error:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {text} as text proto"
            ) from error
    else:
        raise not_found(
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
        )
    return proto


def _meta_graph(
    proto: saved_model_pb2.SavedModel, tags: Sequence[str]
) -> meta_graph_pb2.MetaGraphDef:
    # TF's loader wants the tag set to match exactly, not just contain the requested tags.
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    raise not_found(
        "Could not find meta graph def matching supplied tags: { "
        + " ".join(tags)
        + " }. To inspect available tag-sets in the SavedModel, please use the SavedModel "
        "CLI: `saved_model_cli`"
    )


def load_servable(
    name: str, version: int, path: str | Path, tags: Sequence[str] = ("serve",)
) -> Servable:
    """Loads one SavedModel version directory.

    Args:
        name: The model name.
        version: The version number.
        path: The version directory holding `saved_model.pb`.
        tags: The meta graph tags to load.

    Returns:
        The loaded servable.

    Raises:
        ServingError: NOT_FOUND for a missing SavedModel or tag set, DATA_LOSS for an
            unparsable one, or TF's own code and message (UNKNOWN when it has none).
    """
    path = Path(path)
    meta_graph = _meta_graph(_read_saved_model(path), tuple(tags))
    try:
        loaded = tf.saved_model.load(str(path), tags=list(tags))
    except tf.errors.OpError as error:
        raise from_op_error(error) from error
    except Exception as error:
        raise unknown(str(error) or type(error).__name__) from error
    signature_defs = {key: meta_graph.signature_def[key] for key in meta_graph.signature_def}
    return Servable(name, version, path, signature_defs, loaded)
