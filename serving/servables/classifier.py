"""Classify on one loaded version, after TF Serving's `servables/tensorflow/classifier.cc`.

The signature takes serialized `tf.Example`s under the input key "inputs" and answers "classes"
(DT_STRING) and/or "scores" (DT_FLOAT), each [batch_size, num_classes]. The checks, their
order and their texts are TF Serving's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from tensorflow_serving.apis import classification_pb2

from serving import errors
from serving.servables import inference

INPUTS = "inputs"
CLASSES = "classes"
SCORES = "scores"
API = "classification"


def check_signature(signature, method_check: bool) -> list[str]:
    """`PreProcessClassification`: one input "inputs"; one or two outputs, classes or scores.

    Args:
        signature: The SignatureDef.
        method_check: `--enable_signature_method_name_check`.

    Returns:
        The output aliases to read: "classes" and/or "scores".

    Raises:
        ServingError: INVALID_ARGUMENT with TF Serving's text for each broken rule.
    """
    inference.check_method(signature, inference.CLASSIFY_METHOD, API, method_check)
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise errors.invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if INPUTS not in signature.inputs:
        raise errors.invalid_argument(
            "No classification inputs found in SignatureDef: " + inference.signature_text(signature)
        )
    outputs = [alias for alias in (CLASSES, SCORES) if alias in signature.outputs]
    if not outputs:
        raise errors.invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            'or "scores". Signature was: ' + inference.signature_text(signature)
        )
    return outputs


def _checked(name: str, array: np.ndarray | None, dtype: str, num_examples: int):
    if array is None:
        return None
    if array.ndim != 2:
        raise errors.invalid_argument(
            "Expected Tensor shape: [batch_size num_classes] but got " + inference.shape_text(array)
        )
    if inference.type_text(array) != dtype:
        raise errors.invalid_argument(
            f"Expected {name} Tensor of {dtype}. Got: {inference.type_text(array)}"
        )
    if array.shape[0] != num_examples:
        raise errors.invalid_argument(
            f"Expected {name} output batch size of {num_examples}. Got: {array.shape[0]}"
        )
    return array


def _label(value) -> str:
    # A proto3 string must be UTF-8 on the wire; TF Serving would copy other bytes as they are
    # (and the client would fail to parse them), so here they are replaced, not refused.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def classification_result(
    num_examples: int,
    outputs: Mapping[str, np.ndarray],
    result: classification_pb2.ClassificationResult,
) -> None:
    """`PostProcessClassificationResult`: checks the outputs and fills `result`.

    Args:
        num_examples: How many examples the request had.
        outputs: The run's outputs by alias ("classes" and/or "scores").
        result: The ClassificationResult to fill, one Classifications per example.

    Raises:
        ServingError: INVALID_ARGUMENT for outputs of the wrong rank, type or batch size, or
            classes and scores that disagree on the number of classes.
    """
    classes = _checked(CLASSES, outputs.get(CLASSES), "DT_STRING", num_examples)
    scores = _checked(SCORES, outputs.get(SCORES), "DT_FLOAT", num_examples)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise errors.invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    labels = None if classes is None else classes.tolist()
    values = None if scores is None else scores.tolist()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            entry = classifications.classes.add()
            if labels is not None:
                entry.label = _label(labels[i][c])
            if values is not None:
                entry.score = values[i][c]


def classify(
    servable,
    request: classification_pb2.ClassificationRequest,
    *,
    run: inference.Runner | None = None,
    method_check: bool = False,
) -> classification_pb2.ClassificationResponse:
    """`RunClassify`: the examples through the signature, the answer as a ClassificationResult.

    Args:
        servable: The loaded version the request's model_spec resolved to.
        request: The request.
        run: `(signature_key, inputs, output_aliases) -> outputs`; the servable's own `run`
            when None. The server passes `inference.runner` (batching, runtime latency).
        method_check: `--enable_signature_method_name_check`.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown signature, a signature that cannot
            classify, no examples or bad outputs; the runtime's code and text for a failed run.
    """
    key, signature = inference.find_signature(
        servable, request.model_spec.signature_name, "No signature was found with the name: "
    )
    names = check_signature(signature, method_check)
    response = classification_pb2.ClassificationResponse(
        model_spec=inference.model_spec(request.model_spec.name, key, servable.version)
    )
    examples = inference.serialized_examples(request.input)
    outputs = (run or servable.run)(key, {INPUTS: examples}, names)
    classification_result(len(examples), outputs, response.result)
    return response
