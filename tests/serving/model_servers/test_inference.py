"""Classify, Regress and MultiInference over real gRPC (and REST): every check TF Serving makes.

Each bad request gets TF Serving's status code and exact text (`classifier.cc`, `regressor.cc`,
`multi_inference.cc`, `util.cc`), against the real server over `half_plus_two` and a model whose
signatures each break one rule (`tests/serving/tf1_models.py`), with the method-name check off
(TF Serving's default) and on (`--enable_signature_method_name_check`, here with batching).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.tensors import from_numpy
from tests.serving.model_servers.tf_serving_base import call_rest, prediction
from tests.serving.tf1_models import write_half_plus_two, write_inference_edge_cases

pytestmark = pytest.mark.integration

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
# TF Serving prints a SignatureDef with `DebugString()`: protobuf text, two-space indents.
SERVING_DEFAULT_TEXT = """inputs {
  key: "x"
  value {
    name: "x:0"
    dtype: DT_FLOAT
    tensor_shape {
      dim {
        size: -1
      }
      dim {
        size: 1
      }
    }
  }
}
outputs {
  key: "y"
  value {
    name: "y:0"
    dtype: DT_FLOAT
    tensor_shape {
      dim {
        size: -1
      }
      dim {
        size: 1
      }
    }
  }
}
method_name: "tensorflow/serving/predict"
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    write_half_plus_two(root / "half_plus_two", 1)
    write_inference_edge_cases(root / "odd", 1)
    path = root / "models.config"
    path.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{root / name}" '
            'model_platform: "tensorflow" }\n'
            for name in ("half_plus_two", "odd")
        )
        + "}\n"
    )
    return path


@pytest.fixture(scope="module")
def stub(tfs_server, config):
    """TF Serving's default: no method-name check."""
    return prediction(tfs_server(f"--model_config_file={config}").channel)


@pytest.fixture(scope="module")
def rest_server(tfs_server, config):
    return tfs_server(f"--model_config_file={config}")


@pytest.fixture(scope="module")
def checked(tfs_server, config):
    """`--enable_signature_method_name_check`, with batching on as well."""
    server = tfs_server(
        f"--model_config_file={config}", "--enable_signature_method_name_check", "--enable_batching"
    )
    return prediction(server.channel)


def examples(request_input, *xs, context=None):
    """`tf.Example`s with feature x (None: no x), with a context holding x = `context`."""
    if context is None:
        target = request_input.example_list
    else:
        target = request_input.example_list_with_context
        target.context.features.feature["x"].float_list.value.append(context)
    for x in xs:
        example = target.examples.add()
        if x is not None:
            example.features.feature["x"].float_list.value.append(x)
        else:
            example.features.feature["other"].int64_list.value.append(1)
    return request_input


def classify_request(model="half_plus_two", signature="classify_x_to_y", *xs, **kw):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    examples(request.input, *xs, **kw)
    return request


def regress_request(model="half_plus_two", signature="regress_x_to_y", *xs, **kw):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    examples(request.input, *xs, **kw)
    return request


def error(rpc, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(request, timeout=30)
    return caught.value.code(), caught.value.details()


def scores(response) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]


# -- Classify and Regress: answers ------------------------------------------------------------


def test_classify_answers_per_example_with_model_spec(stub):
    response = stub.Classify(classify_request("half_plus_two", "classify_x_to_y", 2.0, 4.0, 0.0))
    assert scores(response) == [[("", 3.0)], [("", 4.0)], [("", 2.0)]]
    spec = response.model_spec
    assert (spec.name, spec.signature_name, spec.version.value) == (
        "half_plus_two",
        "classify_x_to_y",
        1,
    )


def test_regress_answers_per_example_and_reads_the_version_asked_for(stub):
    request = regress_request("half_plus_two", "regress_x_to_y2", 2.0, 4.0)
    request.model_spec.version.value = 1
    response = stub.Regress(request)
    assert [r.value for r in response.result.regressions] == [4.0, 5.0]
    assert (response.model_spec.signature_name, response.model_spec.version.value) == (
        "regress_x_to_y2",
        1,
    )


def test_context_features_merge_into_each_example_and_the_example_wins(stub):
    """The context's bytes come first, so an example's own x replaces the context's."""
    response = stub.Regress(
        regress_request("half_plus_two", "regress_x_to_y", None, 6.0, context=2.0)
    )
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]


def test_labels_and_scores(stub):
    response = stub.Classify(classify_request("odd", "labelled", 2.0))
    assert scores(response) == [[("two", 3.0), ("three", 4.0)]]
    response = stub.Classify(classify_request("odd", "classes_only", 2.0, 4.0))
    assert scores(response) == [[("two", 0.0), ("three", 0.0)]] * 2


def test_a_vector_output_regresses(stub):
    response = stub.Regress(regress_request("odd", "outputs_vector", 2.0, 4.0))
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]


# -- Classify and Regress: TF Serving's errors ------------------------------------------------


def test_request_errors_before_any_signature(stub):
    for rpc, cls in ((stub.Classify, classification_pb2.ClassificationRequest),
                     (stub.Regress, regression_pb2.RegressionRequest)):  # fmt: skip
        assert error(rpc, cls()) == (INVALID, "Missing ModelSpec")
        request = cls()
        request.model_spec.signature_name = "x"
        assert error(rpc, request) == (INVALID, "ModelSpec has no name specified.")
        request.model_spec.name = "nope"
        assert error(rpc, request) == (
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        )


def test_unknown_signature_is_invalid_argument_not_failed_precondition(stub):
    message = "No signature was found with the name: nosig"
    assert error(stub.Classify, classify_request("half_plus_two", "nosig", 2.0)) == (
        INVALID,
        message,
    )
    assert error(stub.Regress, regress_request("half_plus_two", "nosig", 2.0)) == (INVALID, message)


def test_default_signature_is_serving_default_printed_in_the_error(stub):
    assert error(stub.Classify, classify_request("half_plus_two", "", 2.0)) == (
        INVALID,
        "No classification inputs found in SignatureDef: " + SERVING_DEFAULT_TEXT,
    )
    assert error(stub.Regress, regress_request("half_plus_two", "", 2.0)) == (
        INVALID,
        "No regression inputs found in SignatureDef: " + SERVING_DEFAULT_TEXT,
    )


def test_no_examples_is_input_is_empty(stub):
    assert error(stub.Classify, classify_request()) == (INVALID, "Input is empty.")
    assert error(stub.Regress, regress_request(context=2.0)) == (INVALID, "Input is empty.")


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("two_inputs", "Expected one input Tensor."),
        ("three_outputs", "Expected one or two output Tensors, found 3"),
        ("scores_vector", "Expected Tensor shape: [batch_size num_classes] but got [2]"),
        ("scores_double", "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        ("classes_int", "Expected classes Tensor of DT_STRING. Got: DT_INT64"),
        ("scores_first_row", "Expected scores output batch size of 2. Got: 1"),
        ("classes_scores_mismatch",
         "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
    ],
)  # fmt: skip
def test_classify_signature_and_output_errors(stub, signature, message):
    assert error(stub.Classify, classify_request("odd", signature, 2.0, 4.0)) == (INVALID, message)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("two_inputs", "Expected one input Tensor."),
        ("two_outputs", "Expected one output Tensor."),
        ("wide_outputs",
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]"),
        ("outputs_first_row", "Input batch size did not match output batch size: 2 vs. 1"),
        ("outputs_double", "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ],
)  # fmt: skip
def test_regress_signature_and_output_errors(stub, signature, message):
    assert error(stub.Regress, regress_request("odd", signature, 2.0, 4.0)) == (INVALID, message)


def test_missing_input_and_output_keys_print_the_signature(stub):
    code, message = error(stub.Classify, classify_request("odd", "no_inputs_key", 2.0))
    assert code == INVALID
    assert message.startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "examples"'
    )
    code, message = error(stub.Classify, classify_request("odd", "no_known_outputs", 2.0))
    assert message.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: inputs {\n  key: "inputs"'
    )
    assert 'key: "probabilities"' in message
    code, message = error(stub.Regress, regress_request("odd", "no_inputs_key", 2.0))
    assert message.startswith("No regression inputs found in SignatureDef: inputs {")
    code, message = error(stub.Regress, regress_request("half_plus_two", "classify_x_to_y", 2.0))
    assert message.startswith("No regression outputs found in SignatureDef: inputs {")
    assert message.endswith('method_name: "tensorflow/serving/classify"\n')


def test_examples_fed_to_a_float_input_fail_in_the_session(stub):
    assert error(stub.Regress, regress_request("half_plus_two", "regress_x2_to_y3", 2.0)) == (
        INVALID,
        "Expects arg[0] to be float but string is provided",
    )


def test_an_example_without_the_required_feature_fails_in_the_graph(stub):
    code, message = error(stub.Classify, classify_request("half_plus_two", "classify_x_to_y", None))
    assert code == INVALID
    assert "Feature: x (data type: float) is required but could not be found." in message


# -- --enable_signature_method_name_check -----------------------------------------------------


def test_without_the_flag_a_signature_serves_by_its_layout(stub):
    """TF2 saves every signature under the predict method; TF Serving serves them anyway."""
    assert scores(stub.Classify(classify_request("odd", "classify_by_shape", 2.0))) == [[("", 3.0)]]
    response = stub.Regress(regress_request("odd", "regress_by_shape", 2.0))
    assert [r.value for r in response.result.regressions] == [3.0]
    assert custom_method_predict(stub).outputs["y"].float_val == [3.0]


def custom_method_predict(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "odd"
    request.model_spec.signature_name = "custom_method"
    request.inputs["x"].CopyFrom(from_numpy(np.array([[2.0]], dtype=np.float32)))
    return stub.Predict(request, timeout=30)


def test_with_the_flag_the_method_name_must_match(checked):
    assert error(checked.Classify, classify_request("odd", "classify_by_shape", 2.0)) == (
        INVALID,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict",
    )
    assert error(checked.Regress, regress_request("half_plus_two", "classify_x_to_y", 2.0)) == (
        INVALID,
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify",
    )
    with pytest.raises(grpc.RpcError) as caught:
        custom_method_predict(checked)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INTERNAL,
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: tensorflow/serving/custom",
    )


def test_with_the_flag_matching_signatures_still_answer_through_batching(checked):
    response = checked.Classify(classify_request("half_plus_two", "classify_x_to_y", 2.0, 6.0))
    assert scores(response) == [[("", 3.0)], [("", 5.0)]]
    response = checked.Regress(regress_request("half_plus_two", "regress_x_to_y", 4.0))
    assert [r.value for r in response.result.regressions] == [4.0]


# -- MultiInference ---------------------------------------------------------------------------


def multi(*tasks, xs=(2.0,), model="half_plus_two"):
    """tasks: (signature, method) pairs, or (model, signature, method) triples."""
    request = inference_pb2.MultiInferenceRequest()
    for task in tasks:
        name, signature, method = task if len(task) == 3 else (model, *task)
        added = request.tasks.add(method_name=method)
        added.model_spec.name = name
        added.model_spec.signature_name = signature
    examples(request.input, *xs)
    return request


def test_multi_inference_results_in_task_order_with_each_model_spec(stub):
    request = multi(
        ("classify_x_to_y", CLASSIFY), ("regress_x_to_y2", REGRESS), ("regress_x_to_y", REGRESS),
        xs=(2.0, 4.0),
    )  # fmt: skip
    response = stub.MultiInference(request, timeout=30)
    first, second, third = response.results
    assert [
        [c.score for c in row.classes] for row in first.classification_result.classifications
    ] == [
        [3.0],
        [4.0],
    ]
    assert [r.value for r in second.regression_result.regressions] == [4.0, 5.0]
    assert [r.value for r in third.regression_result.regressions] == [3.0, 4.0]
    specs = [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value)
             for r in response.results]  # fmt: skip
    assert specs == [
        ("half_plus_two", "classify_x_to_y", 1),
        ("half_plus_two", "regress_x_to_y2", 1),
        ("half_plus_two", "regress_x_to_y", 1),
    ]


def test_multi_inference_checks_by_the_tasks_method_not_the_signatures(stub, checked):
    request = multi(("classify_by_shape", CLASSIFY), ("regress_by_shape", REGRESS), model="odd")
    response = stub.MultiInference(request, timeout=30)
    assert response.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[1].regression_result.regressions[0].value == 3.0
    assert error(checked.MultiInference, request) == (
        INVALID,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict",
    )


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (inference_pb2.MultiInferenceRequest(), INVALID, "ModelSpec has no name specified."),
        (multi(("regress_x_to_y", REGRESS), ("", "regress_x_to_y2", REGRESS)), INVALID,
         "Found ModelSpec with an empty model name."),
        (multi(("regress_x_to_y", REGRESS), ("odd", "labelled", CLASSIFY)), INVALID,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (multi(("nope", "regress_x_to_y", REGRESS)), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (multi(("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS)), INVALID,
         "Duplicate evaluation of signature: regress_x_to_y"),
        (multi(("nosig", REGRESS)), INVALID, "Requested signature not found in model graph: nosig"),
        (multi(("classify_x_to_y", "tensorflow/serving/predict")), grpc.StatusCode.UNIMPLEMENTED,
         "Unsupported signature method_name: tensorflow/serving/predict"),
        (multi(("classify_x_to_y", "")), grpc.StatusCode.UNIMPLEMENTED,
         "Unsupported signature method_name: "),
        (multi(("regress_x_to_y", REGRESS), xs=()), INVALID, "Input is empty."),
        (multi(("regress_x_to_y", REGRESS), ("regress_x2_to_y3", REGRESS)), INVALID,
         "Expects arg[1] to be float but string is provided"),
        (multi(("labelled", CLASSIFY), ("wide_outputs", REGRESS), model="odd"), INVALID,
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"),
    ],
)  # fmt: skip
def test_multi_inference_errors(stub, request_, code, message):
    assert error(stub.MultiInference, request_) == (code, message)


def test_multi_inference_classify_on_a_regress_signature(stub):
    code, message = error(stub.MultiInference, multi(("regress_x_to_y", CLASSIFY)))
    assert code == INVALID
    assert message.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: '
    )


# -- REST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "answer"),
    [
        ("/v1/models/odd:classify",
         {"signature_name": "labelled", "examples": [{"x": 2.0}, {"x": 4.0}]},
         200, {"results": [[["two", 3.0], ["three", 4.0]], [["two", 4.0], ["three", 5.0]]]}),
        ("/v1/models/half_plus_two:regress",
         {"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": 6.0}]},
         200, {"results": [3.0, 5.0]}),
        ("/v1/models/half_plus_two:classify", {"signature_name": "nosig", "examples": [{"x": 1.0}]},
         400, {"error": "No signature was found with the name: nosig"}),
        ("/v1/models/odd:classify", {"signature_name": "scores_double", "examples": [{"x": 1.0}]},
         400, {"error": "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"}),
        ("/v1/models/half_plus_two:regress",
         {"signature_name": "regress_x2_to_y3", "examples": [{"x": 1.0}]},
         400, {"error": "Expects arg[0] to be float but string is provided"}),
        ("/v1/models/half_plus_two/versions/9:regress", {"examples": [{"x": 1.0}]},
         404, {"error": "Servable not found for request: Specific(half_plus_two, 9)"}),
    ],
)  # fmt: skip
def test_rest_classify_and_regress(rest_server, path, body, status, answer):
    assert call_rest(rest_server, path, body) == (status, answer)
