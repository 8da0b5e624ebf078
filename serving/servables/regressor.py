"""Regress on one loaded version, after TF Serving's `servables/tensorflow/regressor.cc`.

The signature takes serialized `tf.Example`s under the input key "inputs" and answers one
DT_FLOAT value per example under "outputs", shaped [batch_size] or [batch_size, 1]. The checks,
their order and their texts are TF Serving's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tensorflow_serving.apis import regression_pb2

from serving import errors
from serving.servables import inference

INPUTS = "inputs"
OUTPUTS = "outputs"
API = "regression"


def check_signature(signature, method_check: bool) -> list[str]:
    """`PreProcessRegression`: one input "inputs" and one output "outputs".

    Args:
        signature: The SignatureDef.
        method_check: `--enable_signature_method_name_check`.

    Returns:
        The output aliases to read: ["outputs"].

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's text for each broken rule.
    """
    inference.check_method(signature, inference.REGRESS_METHOD, API, method_check)
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise errors.invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise errors.invalid_argument(
            "No regression inputs found in SignatureDef: " + inference.signature_text(signature)
        )
    if OUTPUTS not in signature.outputs:
        raise errors.invalid_argument(
            "No regression outputs found in SignatureDef: " + inference.signature_text(signature)
        )
    return [OUTPUTS]


def regression_result(
    signature,
    num_examples: int,
    outputs: Mapping[str, np.ndarray],
    result: regression_pb2.RegressionResult,
) -> None:
    """`PostProcessRegressionResult`: checks the output and fills `result`.

    Args:
        signature: The SignatureDef the outputs came from.
        num_examples: How many examples the request had.
        outputs: The run's outputs by alias ("outputs").
        result: The RegressionResult to fill, one Regression per example.

    Raises:
        ServingError: INVALID_ARGUMENT for an output of the wrong shape, batch size or type.
    """
    output = outputs.get(OUTPUTS)
    if output is None:
        name = signature.outputs[OUTPUTS].name
        raise errors.invalid_argument(f"Could not find output tensor '{name}'")
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise errors.invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            + inference.shape_text(output)
        )
    if output.shape[0] != num_examples:
        raise errors.invalid_argument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {output.shape[0]}"
        )
    if inference.type_text(output) != "DT_FLOAT":
        # Two spaces after the full stop, as in TF Serving's text.
        raise errors.invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {inference.type_text(output)}"
        )
    for value in output.reshape(-1).tolist():
        result.regressions.add().value = value


def regress(
    servable,
    request: regression_pb2.RegressionRequest,
    *,
    run: inference.Runner | None = None,
    method_check: bool = False,
) -> regression_pb2.RegressionResponse:
    """`RunRegress`: the examples through the signature, the answer as a RegressionResult.

    Args:
        servable: The loaded version the request's model_spec resolved to.
        request: The request.
        run: `(signature_key, inputs, output_aliases) -> outputs`; the servable's own `run`
            when None. The server passes `inference.runner` (batching, runtime latency).
        method_check: `--enable_signature_method_name_check`.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown signature, a signature that cannot
            regress, no examples or a bad output; the runtime's code and text for a failed run.
    """
    key, signature = inference.find_signature(
        servable, request.model_spec.signature_name, "No signature was found with the name: "
    )
    names = check_signature(signature, method_check)
    response = regression_pb2.RegressionResponse(
        model_spec=inference.model_spec(request.model_spec.name, key, servable.version)
    )
    examples = inference.serialized_examples(request.input)
    outputs = (run or servable.run)(key, {INPUTS: examples}, names)
    regression_result(signature, len(examples), outputs, response.result)
    return response
