"""Predict on one loaded version, with TF Serving's checks in TF Serving's order and texts.

The order follows `predict_util.cc`: signature lookup, input count, input aliases and tensor
parsing, output filter, then the run (where TF itself reports dtype and shape errors). Two
things are added:
- admission (`serving.servables.admission`): no tensor is decoded before every input's dtype is
  checked and what they declare fits the items and bytes of one request and the bytes in
  flight, since a few bytes of `float_val` can declare gigabytes that decoding would broadcast;
- an input whose signature states rank 4 or 5 (an image or volume, what convolutions and
  pooling take) must come with that rank: TF's oneDNN convolution kernels abort the whole
  process on another rank (a CHECK failure, not an error). Other ranks, and sizes within a
  rank, are left to the run, as TF Serving leaves them (its own tests feed a [3] tensor to a
  [?,1] input).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from tensorflow_serving.apis import predict_pb2

from common import codec
from serving import errors, tensors
from serving.servables import pixels
from serving.servables.admission import Admission

DEFAULT_SIGNATURE = "serving_default"


def signature_def(servable, name: str):
    """The SignatureDef `name` ("" means serving_default), or gRPC's FAILED_PRECONDITION."""
    key = name or DEFAULT_SIGNATURE
    try:
        return key, servable.signature_defs[key]
    except KeyError:
        raise errors.failed_precondition(f'Serving signature key "{key}" not found.') from None


def _join(names) -> str:
    return ",".join(sorted(names))


def check_input_count(signature, request_keys) -> None:
    """`VerifyRequestInputsSize`: too many inputs, or too few when there are no defaults."""
    wanted = set(signature.inputs.keys())
    sent = set(request_keys)
    has_defaults = bool(getattr(signature, "defaults", None))
    if len(sent) > len(wanted) or (len(sent) < len(wanted) and not has_defaults):
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). "
            f"Sent extra: {{{_join(sent - wanted)}}}. "
            f"Missing but required: {{{_join(wanted - sent)}}}."
        )


def admit_inputs(signature, request_inputs) -> dict[str, codec.Declared]:
    """Maps every signature input to a request tensor (TF's `GetInputValues`) without decoding.

    TF decodes each tensor as it maps it; here each is only checked as far as that costs
    nothing (`tensors.declared`), so the same errors come in the same order while no tensor
    is allocated before its dtype and size are admitted.

    Returns:
        alias -> the shape, element count and bytes its tensor declares.
    """
    declared = {}
    for alias in sorted(signature.inputs.keys()):
        if alias not in request_inputs:
            raise errors.invalid_argument(
                f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not "
                "found in request and no default value provided. Inputs expected to be in the "
                f"request {{{_join(request_inputs.keys())}}}, or default input alias set: "
            )
        declared[alias] = tensors.declared(request_inputs[alias], alias)
        rank = len(declared[alias].shape)
        if rank > codec.NUMPY_MAX_DIMS:
            raise errors.invalid_argument(
                f'Input "{alias}" has {rank} dimensions; this server holds tensors of at most '
                f"{codec.NUMPY_MAX_DIMS} (NumPy's limit)"
            )
    unused = set(request_inputs.keys()) - set(declared)
    if unused:
        raise errors.invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {_join(declared)}, "
            f"request input: {_join(unused)}"
        )
    return declared


def decode_inputs(signature, request_inputs) -> dict[str, np.ndarray]:
    """Decodes the admitted inputs (`admit_inputs` has mapped and checked them)."""
    return {
        alias: tensors.to_numpy(request_inputs[alias], alias)
        for alias in sorted(signature.inputs.keys())
    }


def output_names(signature, output_filter) -> list[str]:
    """The outputs to return: the filter (checked) or every output of the signature."""
    if not output_filter:
        return sorted(signature.outputs.keys())
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{_join(signature.outputs.keys())}}}."
            )
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


def check_dtypes(signature, request_inputs) -> None:
    """The TF runtime's argument check: `Expects arg[i] to be float but double is provided`.

    It reads the TensorProto's dtype, so a tensor of the wrong type is refused undecoded.
    """
    for index, alias in enumerate(sorted(signature.inputs.keys())):
        expected = signature.inputs[alias].dtype
        given = request_inputs[alias].dtype
        if given != expected:
            raise errors.invalid_argument(
                f"Expects arg[{index}] to be {tensors.dtype_name(expected)} but "
                f"{tensors.dtype_name(given)} is provided"
            )


# The ranks of the tensors 2-D and 3-D convolutions and pooling take, whose oneDNN kernels
# abort the process on an input of another rank.
CONVOLUTION_RANKS = (4, 5)


def check_ranks(key: str, signature, declared: Mapping[str, codec.Declared]) -> None:
    """Refuses (INVALID_ARGUMENT) an input of another rank than the one its TensorInfo states,
    where it states a convolution's rank (`CONVOLUTION_RANKS`)."""
    for alias in sorted(signature.inputs.keys()):
        stated = signature.inputs[alias].tensor_shape
        if stated.unknown_rank or len(stated.dim) not in CONVOLUTION_RANKS:
            continue
        shape = declared[alias].shape
        if len(shape) != len(stated.dim):
            raise errors.invalid_argument(
                f'Input "{alias}" has shape {tensors.shape_text(shape)} ({len(shape)} '
                f'dimensions), but signature "{key}" takes {len(stated.dim)}: '
                f"{tensors.shape_text([d.size for d in stated.dim])}"
            )


def check_method(signature, enabled: bool) -> None:
    """`--enable_signature_method_name_check`: only predict/classify/regress signatures."""
    allowed = (
        "tensorflow/serving/predict",
        "tensorflow/serving/classify",
        "tensorflow/serving/regress",
    )
    if enabled and signature.method_name not in allowed:
        raise errors.internal(
            f"Expected prediction signature method_name to be one of {{{', '.join(allowed)}}}. "
            f"Was: {signature.method_name}"
        )


def predict(
    servable,
    request: predict_pb2.PredictRequest,
    *,
    run: Callable[[str, Mapping[str, np.ndarray], list[str]], dict[str, np.ndarray]] | None = None,
    tensor_content: bool = False,
    method_check: bool = False,
    admission: Admission | None = None,
) -> predict_pb2.PredictResponse:
    """Runs a PredictRequest on `servable` and builds the PredictResponse.

    Args:
        servable: the loaded version (`serving.servables.saved_model.Servable`).
        request: the request; its model_spec has already been resolved to `servable`.
        run: `(signature_key, inputs, output_names) -> outputs`; defaults to the servable itself.
            The server passes the batching scheduler here when batching is on.
        tensor_content: serialise outputs as `tensor_content` instead of typed `*_val` fields.
        method_check: `--enable_signature_method_name_check`.
        admission: the server's admission limits, or None for none.

    Raises:
        ServingError: with TF Serving's code and text; INVALID_ARGUMENT for too many items,
            RESOURCE_EXHAUSTED for too many bytes in the request or in flight.
    """
    key, signature = signature_def(servable, request.model_spec.signature_name)
    check_method(signature, method_check)
    check_input_count(signature, request.inputs.keys())
    declared = admit_inputs(signature, request.inputs)
    names = output_names(signature, request.output_filter)
    check_dtypes(signature, request.inputs)
    check_ranks(key, signature, declared)
    admission = admission or Admission()
    admission.check_items(signature, request.inputs, declared)
    nbytes = admission.check_bytes(request.inputs, declared)
    with admission.hold(nbytes):
        return _run(servable, request, key, signature, names, run, tensor_content)


def _run(servable, request, key, signature, names, run, tensor_content):
    """Decodes the admitted inputs, runs the signature and encodes the response."""
    arrays = decode_inputs(signature, request.inputs)
    pixels.check_request(servable, key, arrays)  # before a batch: see its module
    outputs = servable.run(key, arrays) if run is None else run(key, arrays, names)
    del arrays  # not held while the response is encoded
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name or servable.name
    response.model_spec.signature_name = key
    response.model_spec.version.value = servable.version
    for name in names:
        if name not in outputs:
            raise errors.unknown("Predict internal error")
        tensors.from_numpy(
            np.asarray(outputs[name]), tensor_content=tensor_content, out=response.outputs[name]
        )
    return response


class Predictor:
    """Predict on loaded versions with the server's settings: batching, encoding, checks.

    Args:
        batcher: the batch scheduler (`--enable_batching`), or None to run each call alone.
        tensor_content: `--enable_serialization_as_tensor_content`.
        method_check: `--enable_signature_method_name_check`.
        runtime_latency: the `runtime_latency` histogram (µs by model, API, runtime), or None.
        admission: the admission limits (`--max_request_tensor_bytes`, `--max_request_items`,
            `--max_inflight_tensor_bytes`); None for none.
    """

    def __init__(
        self,
        *,
        batcher=None,
        tensor_content: bool = False,
        method_check: bool = False,
        runtime_latency=None,
        admission: Admission | None = None,
    ):
        self.batcher = batcher
        self.tensor_content = tensor_content
        self.method_check = method_check
        self.runtime_latency = runtime_latency
        self.admission = admission or Admission()

    def predict_on(
        self, servable, request: predict_pb2.PredictRequest
    ) -> predict_pb2.PredictResponse:
        """Predict on a servable already in hand (warmup uses this before AVAILABLE)."""
        return predict(
            servable,
            request,
            run=self._runner(servable),
            tensor_content=self.tensor_content,
            method_check=self.method_check,
            admission=self.admission,
        )

    def _runner(self, servable):
        def run(key, arrays, names):
            start = time.perf_counter()
            # Only the outputs asked for are fetched, so the session prunes the rest of the graph.
            if self.batcher is None:
                outputs = servable.run(key, arrays, names)
            else:
                batch_key = (servable.name, servable.version, key, tuple(names))
                outputs = self.batcher.run(batch_key, arrays, lambda a: servable.run(key, a, names))
            if self.runtime_latency is not None:
                latency_us = (time.perf_counter() - start) * 1e6
                self.runtime_latency.observe(latency_us, servable.name, "Predict", "TF1")
            return outputs

        return run
