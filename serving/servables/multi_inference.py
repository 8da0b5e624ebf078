"""MultiInference on one loaded version, after TF Serving's `multi_inference.cc`.

Several Classify and Regress tasks over the same examples and the same model. Each task's
signature is checked for the TASK's method name (classify or regress), whatever method the
signature itself was saved under; results come back in the order of the tasks.
"""

from __future__ import annotations

from tensorflow_serving.apis import inference_pb2

from serving import errors
from serving.servables import classifier, inference, regressor


def _plan(servable, request: inference_pb2.MultiInferenceRequest, method_check: bool) -> list:
    """Checks every task in TF Serving's order; returns (task, key, signature, outputs)."""
    model_name = ""
    seen: set[str] = set()
    plan = []
    for task in request.tasks:
        name = task.model_spec.name
        if not name:
            raise errors.invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = name
        elif name != model_name:
            raise errors.invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        key = task.model_spec.signature_name or inference.DEFAULT_SIGNATURE
        if key in seen:
            raise errors.invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise errors.invalid_argument(f"Requested signature not found in model graph: {key}")
        if task.method_name == inference.CLASSIFY_METHOD:
            outputs = classifier.check_signature(signature, method_check)
        elif task.method_name == inference.REGRESS_METHOD:
            outputs = regressor.check_signature(signature, method_check)
        else:
            raise errors.unimplemented(f"Unsupported signature method_name: {task.method_name}")
        plan.append((task, key, signature, outputs))
    return plan


def multi_inference(
    servable,
    request: inference_pb2.MultiInferenceRequest,
    *,
    run: inference.Runner | None = None,
    method_check: bool = False,
) -> inference_pb2.MultiInferenceResponse:
    """`TensorFlowMultiInferenceRunner::Infer`: every task on the same examples.

    TF Serving feeds the examples to every task's input tensor in one session run. Here each
    task's signature runs on its own, which answers the same; the feed check that one run
    makes first (each input fed must be DT_STRING, in the order of the tensor names) is made
    before any task runs, so its `Expects arg[i] ...` error names the same index.

    Args:
        servable: The loaded version the first task's model_spec resolved to.
        request: The request.
        run: `(signature_key, inputs, output_aliases) -> outputs`; the servable's own `run`
            when None.
        method_check: `--enable_signature_method_name_check`.

    Returns:
        One InferenceResult per task, in the tasks' order, each with its task's ModelSpec.

    Raises:
        ServingError: INVALID_ARGUMENT for tasks naming another model, a repeated or unknown
            signature, a signature that cannot serve the task's method, or no examples;
            UNIMPLEMENTED for a task method other than classify or regress.
    """
    plan = _plan(servable, request, method_check)
    examples = inference.serialized_examples(request.input)
    fed = {signature.inputs[classifier.INPUTS].name: signature for _, _, signature, _ in plan}
    inference.arg_type_check(
        [fed[name].inputs[classifier.INPUTS] for name in sorted(fed)], examples
    )
    feeds = {classifier.INPUTS: examples}
    run = run or servable.run
    outputs = [run(key, feeds, names) for _, key, _, names in plan]
    response = inference_pb2.MultiInferenceResponse()
    for (task, key, signature, _), answer in zip(plan, outputs, strict=True):
        result = response.results.add()
        if task.method_name == inference.CLASSIFY_METHOD:
            classifier.classification_result(len(examples), answer, result.classification_result)
        else:
            regressor.regression_result(signature, len(examples), answer, result.regression_result)
        result.model_spec.CopyFrom(
            inference.model_spec(task.model_spec.name, key, servable.version)
        )
    return response
