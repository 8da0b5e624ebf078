"""What Classify, Regress and MultiInference share, after TF Serving's `util.cc`.

The request's `tf.Example`s become one DT_STRING tensor of serialized examples, the signature's
single input; the response's ModelSpec names the model, the signature and the served version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from google.protobuf import text_format
from tensorflow_serving.apis import input_pb2, model_pb2

from common import codec
from serving import errors

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# `(signature_key, {input alias: array}, output aliases) -> {output alias: array}`: the servable's
# `run`, or the server's runner around it (batching, runtime latency).
Runner = Callable[[str, Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


def runner(servable, api: str, *, batcher=None, runtime_latency=None) -> Runner:
    """Runs signatures of `servable` for `api`, through the batch scheduler when there is one.

    TF Serving's batching session batches every signature's own tensors, so Classify and
    Regress requests join batches just as Predict requests do (same key, same batches).

    Args:
        servable: The loaded version.
        api: The API the runtime latency is recorded under ("Classify", "Regress", ...).
        batcher: The batch scheduler (`--enable_batching`), or None to run each call alone.
        runtime_latency: The `runtime_latency` histogram (µs by model, API, runtime), or None.
    """

    def run(key: str, inputs: Mapping[str, np.ndarray], names: Sequence[str]):
        start = time.perf_counter()
        if batcher is None:
            outputs = servable.run(key, inputs, names)
        else:
            batch_key = (servable.name, servable.version, key, tuple(names))
            outputs = batcher.run(
                batch_key, inputs, lambda merged: servable.run(key, merged, names)
            )
        if runtime_latency is not None:
            latency_us = (time.perf_counter() - start) * 1e6
            runtime_latency.observe(latency_us, servable.name, api, "TF1")
        return outputs

    return run


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """`InputToSerializedExampleTensor`: one serialized `tf.Example` per example.

    With `example_list_with_context` each element is the context's bytes followed by the
    example's, so that parsing merges the context's features into every example (the
    example's own value wins for a feature both have).

    Args:
        request_input: The request's `Input`.

    Returns:
        A 1-D object array of `bytes`, one per example.

    Raises:
        ServingError: INVALID_ARGUMENT `Input is empty.` when there is no example.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise errors.invalid_argument("Input is empty.")
    examples = np.empty(len(serialized), dtype=object)
    examples[:] = serialized
    return examples


def declared_examples(request_input: input_pb2.Input) -> tuple[int, int]:
    """What `serialized_examples` would build, counted without serializing anything.

    Each element is counted as a string tensor's (`codec.STRING_ELEMENT_BYTES`) and its bytes
    twice (the serialized copy and TF's). With a context, every element carries the context's
    bytes too, so a large context multiplies by the number of examples.

    Returns:
        (number of examples, bytes).
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        count, context = len(request_input.example_list.examples), 0
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        count, context = len(with_context.examples), with_context.context.ByteSize()
    else:
        return 0, 0
    # The message's size bounds the examples' (and holds the context once).
    serialized = request_input.ByteSize() + count * context
    return count, count * codec.STRING_ELEMENT_BYTES + 2 * serialized


def find_signature(servable, signature_name: str, missing: str):
    """The SignatureDef a request names ("" means serving_default).

    Args:
        servable: The loaded version.
        signature_name: The request's `model_spec.signature_name`.
        missing: The error text before the key when there is no such signature.

    Returns:
        (signature key, SignatureDef).

    Raises:
        ServingError: INVALID_ARGUMENT `<missing><key>`.
    """
    key = signature_name or DEFAULT_SIGNATURE
    signature = servable.signature_defs.get(key)
    if signature is None:
        raise errors.invalid_argument(f"{missing}{key}")
    return key, signature


def check_method(signature, method: str, api: str, enabled: bool) -> None:
    """`--enable_signature_method_name_check`: the signature must be of the API's method.

    Without the flag (TF Serving's default) only the signature's layout is checked, so the
    classify and regress signatures TF2 saves (always under the predict method) serve too.
    """
    if enabled and signature.method_name != method:
        raise errors.invalid_argument(
            f"Expected {api} signature method_name to be {method}. Was: {signature.method_name}"
        )


def model_spec(name: str, signature_name: str, version: int) -> model_pb2.ModelSpec:
    """`MakeModelSpec`: the response's name, resolved signature name and served version."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name or DEFAULT_SIGNATURE)
    spec.version.value = version
    return spec


def signature_text(signature) -> str:
    """The SignatureDef as protobuf text, as TF Serving's errors print it (`DebugString`)."""
    return text_format.MessageToString(signature)


def shape_text(array: np.ndarray) -> str:
    """TF's `TensorShape::DebugString`: `[2,3]`, `[]` for a scalar."""
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def type_text(array: np.ndarray) -> str:
    """The tensor's DataType enum name, `DT_FLOAT`, as `DataType_Name` prints it."""
    return codec.enum_name(codec.data_type(array.dtype))


def arg_type_check(signature_inputs: Sequence, examples: np.ndarray) -> None:
    """The session's feed check for inputs fed serialized examples (`Expects arg[i] ...`).

    Args:
        signature_inputs: The TensorInfos fed, in the order the session is fed them.
        examples: The DT_STRING tensor fed to each of them.

    Raises:
        ServingError: INVALID_ARGUMENT `Expects arg[i] to be <type> but string is provided`
            for the first input that is not DT_STRING.
    """
    given = codec.data_type(examples.dtype)
    for index, info in enumerate(signature_inputs):
        if info.dtype != given:
            raise errors.invalid_argument(
                f"Expects arg[{index}] to be {codec.dtype_name(info.dtype)} but "
                f"{codec.dtype_name(given)} is provided"
            )
