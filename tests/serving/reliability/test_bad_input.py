"""Bad input over gRPC and REST: the right code, a message naming the problem, and service after.

Each case is one request to the shared known-answer server (`half`: y = 0.5x + 2; `triple`
versions 1 and 2 labelled stable and canary), followed by an ordinary request that must still
be answered.
"""

from __future__ import annotations

import http.client
import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import from_numpy, to_numpy

F32 = np.float32


def _request(name="half", signature="", version=None, label=None, **inputs):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name))
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        tensor = value if isinstance(value, tensor_pb2.TensorProto) else from_numpy(value)
        request.inputs[alias].CopyFrom(tensor)
    return request


def _tensor(dtype, dims, **fields) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **fields)


@pytest.fixture(scope="module")
def stub(known_server):
    return prediction_service_pb2_grpc.PredictionServiceStub(known_server.channel)


def _still_serves(stub) -> None:
    answer = stub.Predict(_request(x=np.array([2.0], F32)), timeout=30)
    assert to_numpy(answer.outputs["y"], "y").tolist() == [3.0]


GRPC_CASES = [
    (
        "unknown-model",
        _request(name="nope", x=np.array([1.0], F32)),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown-version",
        _request(version=9, x=np.array([1.0], F32)),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half, 9)",
    ),
    (
        "unknown-label",
        _request(name="triple", label="beta", x=np.array([1.0], F32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: beta",
    ),
    (
        "unknown-signature",
        _request(signature="nosig", x=np.array([1.0], F32)),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nosig" not found.',
    ),
    (
        "wrong-dtype",
        _request(x=np.array([1.0], np.float64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but double is provided",
    ),
    (
        "wrong-input-name",
        _request(z=np.array([1.0], F32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Signature input alias: x(feed name: serving_default_x:0) not found in request",
    ),
    (
        "bad-tensor-content",
        _request(x=_tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 5)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    (
        "negative-dimension",
        _request(x=_tensor(types_pb2.DT_FLOAT, [-2], float_val=[1.0])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    (
        "unsupported-dtype",
        _request(x=_tensor(types_pb2.DT_VARIANT, [1])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
]


@pytest.mark.parametrize(
    "request_, code, message", [c[1:] for c in GRPC_CASES], ids=[c[0] for c in GRPC_CASES]
)
def test_bad_grpc_requests(stub, request_, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request_, timeout=30)
    assert caught.value.code() == code
    assert caught.value.details().startswith(message), caught.value.details()
    _still_serves(stub)


def test_a_shape_the_graph_refuses_is_invalid_argument(stub):
    # No shape binding before the run (TF Serving feeds tensors as they come): a [2, 2] x is
    # served, and shapes the graph cannot combine get the runtime's INVALID_ARGUMENT.
    answer = stub.Predict(_request(x=np.ones((2, 2), F32)), timeout=30)
    assert to_numpy(answer.outputs["y"], "y").tolist() == [[2.5, 2.5], [2.5, 2.5]]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(
            _request(signature="two_inputs", a=np.ones(2, F32), b=np.ones(3, F32)), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Incompatible shapes: [2] vs. [3]" in caught.value.details()
    _still_serves(stub)


@pytest.mark.parametrize(
    ("model", "shape"),
    [("unet", (1, 32, 32)), ("unet", (1,)), ("unet", ()), ("localizer", (32, 32, 3, 1, 1))],
)
def test_an_image_tensor_of_another_rank_is_refused_not_fatal(vision_server, model, shape):
    """Before: TF's oneDNN convolution aborted the process on a rank-3 image tensor (a CHECK
    failure in `GetTensorDimIndex`), so `{"instances": [0]}` to the unet killed the server.
    An input stated as rank 4 (an image batch) must now come as rank 4; other ranks are fed as
    they come (the test above)."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(vision_server.channel)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model))
    request.inputs["image"].CopyFrom(from_numpy(np.zeros(shape, F32)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    given = ",".join(map(str, shape))
    assert caught.value.details().startswith(f'Input "image" has shape [{given}]')
    assert 'but signature "serving_default" takes 4: [?,' in caught.value.details()
    connection = http.client.HTTPConnection("127.0.0.1", vision_server.rest_port, timeout=60)
    connection.request("POST", f"/v1/models/{model}:predict", body='{"instances": [0]}')
    response = connection.getresponse()
    assert response.status == 400
    assert 'Input "image" has shape [1]' in json.loads(response.read())["error"]
    connection.close()
    assert vision_server.process.poll() is None


def test_nan_and_infinity_go_through_as_values(stub, known_server):
    answer = stub.Predict(_request(x=np.array([np.nan, np.inf, -np.inf], F32)), timeout=30)
    y = to_numpy(answer.outputs["y"], "y")
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf
    # REST takes and writes the tokens NaN and Infinity, as TF Serving's rapidjson does.
    body = b'{"instances": [NaN, Infinity, -Infinity]}'
    status, text = _rest(known_server, "POST", "/v1/models/half:predict", body)
    assert status == 200
    assert "".join(text.split()) == '{"predictions":[NaN,Infinity,-Infinity]}'
    _still_serves(stub)


def test_empty_batch_answers_an_empty_batch(stub, known_server):
    answer = stub.Predict(_request(x=np.zeros((0,), F32)), timeout=30)
    assert to_numpy(answer.outputs["y"], "y").shape == (0,)
    status, text = _rest(known_server, "POST", "/v1/models/half:predict", b'{"instances": []}')
    assert status == 400 and "instances" in json.loads(text)["error"]
    _still_serves(stub)


@pytest.mark.parametrize("megabytes", [5, 70])
def test_messages_over_4_and_over_64_megabytes(stub, megabytes):
    """gRPC's 4 MiB default is raised to TF Serving's 2 GiB both ways; big calls just work."""
    x = np.arange(megabytes * 2**20 // 4, dtype=F32)
    answer = stub.Predict(_request(x=x), timeout=120)
    y = to_numpy(answer.outputs["y"], "y")
    assert y.shape == x.shape and y[-1] == np.float32(0.5) * x[-1] + 2
    _still_serves(stub)


def _rest(server, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


REST_CASES = [
    ("invalid-json", "POST", "/v1/models/half:predict", b"{bad", 400, "JSON Parse error: "),
    (
        "invalid-base64",
        "POST",
        "/v1/models/half:predict",
        b'{"signature_name": "echo_bytes", "instances": [{"b64": "%%%"}]}',
        400,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to "
        "base64 decode",
    ),
    (
        "path-traversal-in-name",
        "GET",
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        None,
        404,
        "Could not find any versions of model ../../etc/passwd",
    ),
    ("path-traversal-outside-api", "GET", "/../../etc/passwd", None, 404, None),
    ("path-traversal-dots", "GET", "/v1/models/../../etc/passwd", None, 400, "Malformed request"),
]


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [c[1:] for c in REST_CASES],
    ids=[c[0] for c in REST_CASES],
)
def test_bad_rest_requests(known_server, stub, method, path, body, status, message):
    got, text = _rest(known_server, method, path, body)
    assert got == status, text
    assert "root:" not in text  # nothing is ever read from outside the model folders
    if message is not None:
        assert json.loads(text)["error"].startswith(message), text
    _still_serves(stub)
