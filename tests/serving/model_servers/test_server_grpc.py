"""The embedded server over real gRPC on loopback: TF Serving's codes, texts and encodings."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tensors import from_numpy, to_numpy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stubs(known_server):
    channel = known_server.channel
    return (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


@pytest.fixture(scope="module")
def predict(stubs):
    return stubs[0]


def request(name="half", signature="", version=None, label=None, **inputs):
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name))
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for alias, value in inputs.items():
        req.inputs[alias].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else from_numpy(value)
        )
    return req


def x(*values):
    return np.array(values, dtype=np.float32)


def call_error(rpc, req) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(req, timeout=30)
    return caught.value


# -- Predict: happy paths ---------------------------------------------------------------------


def test_predict_known_answer_and_response_model_spec(predict):
    response = predict.Predict(request(x=x(1.0, 2.0, 5.0)), timeout=30)
    np.testing.assert_array_equal(to_numpy(response.outputs["y"], "y"), [2.5, 3.0, 4.5])
    assert response.model_spec.name == "half"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1
    # TF Serving's default encoding: typed float_val, not tensor_content.
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert response.outputs["y"].tensor_content == b""


def test_versions_and_labels_pick_the_right_model(predict):
    def y(**spec):
        response = predict.Predict(request("triple", x=x(1.0), **spec), timeout=30)
        return response.model_spec.version.value, float(to_numpy(response.outputs["y"], "y")[0])

    assert y() == (2, 4.0)  # Latest = highest available
    assert y(version=1) == (1, 3.0)
    assert y(label="stable") == (1, 3.0)
    assert y(label="canary") == (2, 4.0)


def test_multi_input_output_filter_and_strings(predict):
    req = request(signature="two_inputs", a=x(5.0, 1.0), b=x(2.0, 1.0))
    outputs = predict.Predict(req, timeout=30).outputs
    assert sorted(outputs) == ["diff", "sum"]
    req.output_filter.append("diff")
    outputs = predict.Predict(req, timeout=30).outputs
    assert list(outputs) == ["diff"]
    np.testing.assert_array_equal(to_numpy(outputs["diff"], "diff"), [3.0, 0.0])

    text = np.array([b"car", b"\xff\x00bytes"], dtype=object)
    outputs = predict.Predict(request(signature="echo_bytes", text=text), timeout=30).outputs
    assert list(outputs["text_bytes"].string_val) == [b"car", b"\xff\x00bytes"]
    assert list(outputs["length"].int_val) == [3, 7]


def test_typed_fields_broadcast_and_ignore_extra_values(predict):
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)])
    one = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[2.0])
    y = predict.Predict(request(x=one), timeout=30).outputs["y"]
    assert list(y.float_val) == [3.0, 3.0, 3.0]
    five = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[0, 2, 4, 6, 8]
    )
    assert list(predict.Predict(request(x=five), timeout=30).outputs["y"].float_val) == [2, 3, 4]


@pytest.mark.reliability
def test_twenty_megabyte_request_and_big_response(predict):
    rows = 20 * 2**20 // 12 + 1  # [rows, 3] float32 is just over 20 MiB
    m = np.ones((rows, 3), dtype=np.float32)
    req = request(signature="matrix", m=m)
    assert req.ByteSize() > 20 * 2**20
    response = predict.Predict(req, timeout=120)
    row_sum = to_numpy(response.outputs["row_sum"], "row_sum")
    assert row_sum.shape == (rows,) and response.ByteSize() > 4 * 2**20
    assert np.all(row_sum == 3.0)


# -- Predict: TF Serving's errors -------------------------------------------------------------


@pytest.mark.reliability
@pytest.mark.parametrize(
    "req, code, text",
    [
        (predict_pb2.PredictRequest(), "INVALID_ARGUMENT", "Missing ModelSpec"),
        (request(name=""), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
        (request(name="nope"), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        (request(version=99), "NOT_FOUND", "Servable not found for request: Specific(half, 99)"),
        (request(label="beta"), "INVALID_ARGUMENT", "Unrecognized servable version label: beta"),
        (
            request(signature="nosig"),
            "FAILED_PRECONDITION",
            'Serving signature key "nosig" not found.',
        ),
        (
            request(),
            "INVALID_ARGUMENT",
            "input size does not match signature: 0!=1 len({}) != len({x}). "
            "Sent extra: {}. Missing but required: {x}.",
        ),
        (
            request(x=x(1.0), z=x(1.0)),
            "INVALID_ARGUMENT",
            "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
            "Sent extra: {z}. Missing but required: {}.",
        ),
        (
            request(z=x(1.0)),
            "INVALID_ARGUMENT",
            "Signature input alias: x(feed name: serving_default_x:0) not found in request and no "
            "default value provided. Inputs expected to be in the request {z}, or default input "
            "alias set: ",
        ),
        (
            request(x=np.array([1.0], np.float64)),
            "INVALID_ARGUMENT",
            "Expects arg[0] to be float but double is provided",
        ),
    ],
    ids=[
        "no-spec",
        "no-name",
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "unknown-signature",
        "missing-input",
        "extra-input",
        "renamed-input",
        "wrong-dtype",
    ],
)
def test_predict_errors_match_tf_serving(predict, req, code, text):
    error = call_error(predict.Predict, req)
    assert error.code().name == code
    assert error.details() == text


def test_wrong_shape_and_bad_tensor_content(predict):
    # Shapes are the session's to refuse, with TF's own text (as under TF Serving).
    req = request(signature="two_inputs", a=np.ones(2, np.float32), b=np.ones(3, np.float32))
    error = call_error(predict.Predict, req)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Incompatible shapes: [2] vs. [3]" in error.details()
    bad = from_numpy(x(1.0, 2.0), tensor_content=True)
    bad.tensor_content = bad.tensor_content[:-1]
    error = call_error(predict.Predict, request(x=bad))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    )


def test_output_filter_errors(predict):
    req = request(signature="two_inputs", a=x(1.0), b=x(1.0))
    req.output_filter.append("product")
    error = call_error(predict.Predict, req)
    assert error.details() == (
        "output tensor alias not found in signature: product Outputs expected to be in the set "
        "{diff,sum}."
    )
    del req.output_filter[:]
    req.output_filter.extend(["sum", "sum"])
    assert call_error(predict.Predict, req).details() == "duplicate output tensor alias: sum"


def test_long_messages_are_truncated(predict):
    error = call_error(predict.Predict, request(name="m" * 2000))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert len(error.details()) == 1024 + len("...TRUNCATED")
    assert error.details().endswith("...TRUNCATED")


@pytest.mark.reliability
def test_server_keeps_serving_after_errors(predict):
    for req in (request(name="nope"), request(x=np.array([1.0]))):
        call_error(predict.Predict, req)
    assert list(predict.Predict(request(x=x(0.0)), timeout=30).outputs["y"].float_val) == [2.0]


# -- Classify / Regress / MultiInference ------------------------------------------------------


def test_classify_and_multi_inference_errors(predict):
    """The method name is not checked by default: a predict signature fails on its layout."""
    req = classification_pb2.ClassificationRequest(model_spec=model_pb2.ModelSpec(name="half"))
    error = call_error(predict.Classify, req)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"\n'
    )
    assert error.details().endswith('method_name: "tensorflow/serving/predict"\n')
    req.model_spec.signature_name = "nosig"
    assert (
        call_error(predict.Classify, req).details() == "No signature was found with the name: nosig"
    )

    # Each task is checked whole before the next: the first one's missing method name is
    # found before the second one's other model (tests/.../test_inference.py has the rest).
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "half"
    multi.tasks.add().model_spec.name = "triple"
    error = call_error(predict.MultiInference, multi)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Unsupported signature method_name: ",
    )


# -- Metadata, status, health -----------------------------------------------------------------


def test_model_metadata_is_a_signature_def_map(predict):
    req = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="triple", version_label="stable"),
        metadata_field=["signature_def"],
    )
    response = predict.GetModelMetadata(req, timeout=30)
    assert response.model_spec.name == "triple" and response.model_spec.version.value == 1
    any_proto = response.metadata["signature_def"]
    assert any_proto.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert any_proto.Unpack(signatures)
    # Every signature of the MetaGraph, TF2's init-op signature included, as TF Serving sends.
    assert set(signatures.signature_def) == {
        "serving_default",
        "two_inputs",
        "echo_bytes",
        "spin",
        "matrix",
        "__saved_model_init_op",
    }
    x_info = signatures.signature_def["serving_default"].inputs["x"]
    assert x_info.dtype == types_pb2.DT_FLOAT and [d.size for d in x_info.tensor_shape.dim] == [-1]

    del req.metadata_field[:]
    assert call_error(predict.GetModelMetadata, req).details() == (
        "GetModelMetadataRequest must specify at least one metadata_field"
    )
    req.metadata_field.append("tags")
    assert (
        call_error(predict.GetModelMetadata, req).details()
        == "Metadata field tags is not supported"
    )


def test_model_status(stubs):
    models = stubs[1]

    def status(**spec):
        req = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(**spec))
        return [
            (s.version, s.state, s.status.error_code)
            for s in models.GetModelStatus(req).model_version_status
        ]

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert sorted(status(name="triple")) == [(1, available, 0), (2, available, 0)]
    # TF Serving ignores a label here and lists every version.
    assert sorted(status(name="triple", version_label="stable")) == [
        (1, available, 0),
        (2, available, 0),
    ]
    req = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="half"))
    req.model_spec.version.value = 1
    assert [s.version for s in models.GetModelStatus(req).model_version_status] == [1]

    req.model_spec.version.value = 7
    error = call_error(models.GetModelStatus, req)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 7 of model half",
    )
    req = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="nope"))
    assert (
        call_error(models.GetModelStatus, req).details()
        == "Could not find any versions of model nope"
    )
    error = call_error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    assert error.details() == "Missing ModelSpec"


def test_health_service_reports_each_model(known_server):
    stub = health_pb2_grpc.HealthStub(known_server.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "half", "triple", "PredictionService", "ModelService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == serving, service
    error = call_error(stub.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
