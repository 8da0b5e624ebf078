"""One loaded SavedModel version: a Session holding its MetaGraph, and a thread-safe `run`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2
from tensorflow.python.util import deprecation

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


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype.kind in "OS"):
        # Strings stay an object array of bytes, also for scalars (a session gives bare bytes).
        return np.array(value, dtype=object)
    return np.asarray(value)


class Servable:
    """A loaded version of a model, safe to `run` from many threads at once.

    The version lives in a TF1 `Session`, as in `tensorflow_model_server`: its MetaGraph was
    imported, the restore op and the init op were run and the assets mapped, and every
    signature runs by its SignatureDef's tensor names through a session callable (one per
    signature, inputs and outputs), so tensors are fed as they come, with no shape binding.
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signature_defs: dict[str, meta_graph_pb2.SignatureDef],
        session: tf.compat.v1.Session,
    ):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self._session = session
        self._callables: dict[tuple, object] = {}
        self._callables_lock = threading.Lock()

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs one signature and returns its outputs.

        Args:
            signature_name: The signature key, e.g. "serving_default".
            inputs: Arrays keyed by signature input alias; strings as object arrays of bytes.
            output_names: The output aliases to fetch (TF Serving's `output_filter`); all of the
                signature's outputs when None or empty.

        Returns:
            The fetched outputs as numpy arrays, keyed by output alias.

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for an
                input alias or dtype the signature lacks, or the TF runtime's code and message.
        """
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found.',
            )
        aliases = sorted(inputs)
        outputs = tuple(output_names or sorted(signature.outputs))
        run = self._callable(signature_name, signature, tuple(aliases), outputs)
        feeds = [
            self._feed(signature, index, alias, inputs[alias])
            for index, alias in enumerate(aliases)
        ]
        try:
            values = run(*feeds)
        except tf.errors.OpError as error:
            raise from_op_error(error) from error
        return {alias: _to_numpy(value) for alias, value in zip(outputs, values, strict=True)}

    def _callable(self, key: str, signature, aliases: tuple[str, ...], outputs: tuple[str, ...]):
        cache_key = (key, aliases, outputs)
        found = self._callables.get(cache_key)
        if found is not None:
            return found
        for alias in aliases:
            if alias not in signature.inputs:
                raise invalid_argument(
                    f"Inputs contains invalid name. Used request inputs: {alias}"
                )
        for alias in outputs:
            if alias not in signature.outputs:
                raise invalid_argument(f"output tensor alias not found in signature: {alias}")
        options = config_pb2.CallableOptions(
            feed=[signature.inputs[alias].name for alias in aliases],
            fetch=[signature.outputs[alias].name for alias in outputs],
        )
        with self._callables_lock:
            if self._session is None:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Servable was unloaded")
            try:
                # C++ `Session::MakeCallable` itself: the public `make_callable` with feeds is
                # `Session.run` behind Python's own shape checks, which TF Serving never makes.
                made = self._session._make_callable_from_options(options)
            except tf.errors.OpError as error:
                raise from_op_error(error) from error
            except (KeyError, ValueError) as error:
                raise invalid_argument(str(error)) from error
            return self._callables.setdefault(cache_key, made)

    @staticmethod
    def _feed(signature, index: int, alias: str, value) -> np.ndarray:
        # TF Serving's session refuses a tensor of another dtype before it runs anything.
        value = np.asarray(value)
        want = tf.as_dtype(signature.inputs[alias].dtype)
        got = _array_dtype(value)
        if want != got:
            raise invalid_argument(
                f"Expects arg[{index}] to be {_type_name(want)} but {_type_name(got)} is provided"
            )
        if value.dtype.kind == "U":
            value = np.char.encode(value, "utf-8").astype(object)
        return value

    def close(self) -> None:
        """Closes the session so TF can free the graph and variables; `run` fails afterwards."""
        with self._callables_lock:
            session, self._session = self._session, None
            self._callables = {}
        if session is not None:
            session.close()


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
    name: str,
    version: int,
    path: str | Path,
    tags: Sequence[str] = ("serve",),
    session_config: config_pb2.ConfigProto | None = None,
) -> Servable:
    """Loads one SavedModel version directory into a Session, as `LoadSavedModel` does.

    The MetaGraph is imported into a new graph, the variables are restored by the saver's
    restore op, the init (main) op runs with the assets mapped, and the graph is then frozen.
    A TF2 object graph that only `tf.saved_model.load` can restore fails here just as it
    fails under `tensorflow_model_server`.

    Args:
        name: The model name.
        version: The version number.
        path: The version directory holding `saved_model.pb`.
        tags: The meta graph tags to load.
        session_config: The session's ConfigProto (thread pools), or None for TF's defaults.

    Returns:
        The loaded servable.

    Raises:
        ServingError: NOT_FOUND for a missing SavedModel or tag set, DATA_LOSS for an
            unparsable one, or TF's own code and message (UNKNOWN when it has none).
    """
    path = Path(path)
    meta_graph = _meta_graph(_read_saved_model(path), tuple(tags))
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config)
    try:
        with graph.as_default(), deprecation.silence():
            tf.compat.v1.saved_model.loader.load(session, list(tags), str(path))
    except tf.errors.OpError as error:
        session.close()
        raise from_op_error(error) from error
    except Exception as error:
        session.close()
        raise unknown(str(error) or type(error).__name__) from error
    graph.finalize()
    signature_defs = {key: meta_graph.signature_def[key] for key in meta_graph.signature_def}
    return Servable(name, version, path, signature_defs, session)
