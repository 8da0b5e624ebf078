"""TF Serving's REST tests, ported: the REST cases of `tensorflow_model_server_test.py` and the
cases of `http_rest_api_handler_test.cc`, over real HTTP against the real server process.

Upstream's handler tests call the handler in-process on TensorFlow's own half_plus_two (served
as `saved_model_half_plus_two_2_versions`, versions 123 and 124 on disk, the `specific` policy
keeping 123, labelled `Version_Label`); here that model is written by
`tests/serving/tf1_models.py` and served by `python -m serving` with the same config.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from tests.serving.model_servers.tf_serving_base import (
    HALF_PLUS_TWO,
    TWO_VERSIONS,
    VERSION,
    call_rest,
)

pytestmark = pytest.mark.integration

LABEL = "Version_Label"
OK = {"error_code": "OK", "error_message": ""}
AVAILABLE = {"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": OK}]}


@pytest.fixture(scope="module")
def default_server(tfs_server, tfs_testdata):
    return tfs_server(
        "--model_name=default",
        f"--model_base_path={tfs_testdata / HALF_PLUS_TWO}",
        f"--monitoring_config_file={tfs_testdata / 'monitoring_config.txt'}",
    )


@pytest.fixture(scope="module")
def handler_server(tfs_server, tfs_testdata):
    """The REST handler tests' server core: the two-version model, version 123 labelled.

    As upstream, the label comes with a config reload once 123 is loaded: a label on a version
    that is not yet available fails start-up.
    """
    text = (
        f'model_config_list {{ config {{ name: "{TWO_VERSIONS}" '
        f'base_path: "{tfs_testdata / TWO_VERSIONS}" model_platform: "tensorflow" '
        f"model_version_policy {{ specific {{ versions: {VERSION} }} }} }} }}\n"
    )
    config = tfs_testdata / "two_versions.config"
    config.write_text(text)
    server = tfs_server(f"--model_config_file={config}")
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    request.config.model_config_list.config[0].version_labels[LABEL] = VERSION
    stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    assert stub.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
    return server


def tensor_info(name: str, dtype: str, dims: list[int] | None) -> dict:
    """A TensorInfo as GetModelMetadata's JSON shows it; dims None for an unknown rank."""
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in dims or []],
            "unknown_rank": dims is None,
        },
        "name": name,
    }


def half_plus_two_metadata(name: str, *, classify_x2: bool = False) -> dict:
    """The metadata JSON of TF Serving's half_plus_two (its `*_metadata.json` test files)."""
    examples = tensor_info("tf_example:0", "DT_STRING", None)

    def batch(tensor: str) -> dict:
        return tensor_info(tensor, "DT_FLOAT", [-1, 1])

    def signature(inputs: dict, outputs: dict, method: str) -> dict:
        return {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": f"tensorflow/serving/{method}",
            "defaults": {},
        }

    x2 = batch("x2:0")
    signatures = {
        "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": batch("y3:0")}, "regress"),
        "serving_default": signature({"x": batch("x:0")}, {"y": batch("y:0")}, "predict"),
        "classify_x_to_y": signature({"inputs": examples}, {"scores": batch("y:0")}, "classify"),
        "regress_x_to_y2": signature({"inputs": examples}, {"outputs": batch("y2:0")}, "regress"),
        "regress_x_to_y": signature({"inputs": examples}, {"outputs": batch("y:0")}, "regress"),
    }
    if classify_x2:
        signatures["classify_x2_to_y3"] = signature(
            {"inputs": x2}, {"scores": batch("y3:0")}, "classify"
        )
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(VERSION)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


# -- tensorflow_model_server_test.py ----------------------------------------------------------


def test_classify_rest(default_server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert call_rest(default_server, "/v1/models/default:classify", body) == (
        200,
        {"results": [[["", 3.0]]]},
    )


def test_regress_rest(default_server):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert call_rest(default_server, "/v1/models/default:regress", body) == (
        200,
        {"results": [3.0]},
    )


def test_predict_rest(default_server):
    """Three rows into x [-1, 1] as a [3] tensor: the session feeds it with no shape check."""
    body = {"instances": [2.0, 3.0, 4.0]}
    assert call_rest(default_server, "/v1/models/default:predict", body) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )


def test_predict_columnar_rest(default_server):
    body = {"inputs": [2.0, 3.0, 4.0]}
    assert call_rest(default_server, "/v1/models/default:predict", body) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )


def test_get_status_rest(default_server):
    assert call_rest(default_server, "/v1/models/default") == (200, AVAILABLE)


def test_get_model_metadata_rest(default_server):
    assert call_rest(default_server, "/v1/models/default/metadata") == (
        200,
        half_plus_two_metadata("default"),
    )


def test_prometheus_endpoint(default_server):
    status, text = call_rest(default_server, "/monitoring/prometheus/metrics", raw=True)
    assert status == 200 and "# TYPE" in text


# -- http_rest_api_handler_test.cc ------------------------------------------------------------

MODEL = f"/v1/models/{TWO_VERSIONS}"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (f"{MODEL}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]},
         {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
        (f"{MODEL}/versions/{VERSION}:predict", {"instances": [1.0, 2.0]},
         {"predictions": [2.5, 3.0]}),
        (f"{MODEL}/labels/{LABEL}:predict", {"instances": [1.0, 2.0]},
         {"predictions": [2.5, 3.0]}),
        (f"{MODEL}/versions/{VERSION}:predict",
         {"signature_name": "serving_default", "instances": [3.0, 4.0]},
         {"predictions": [3.5, 4.0]}),
        (f"{MODEL}/versions/{VERSION}:predict",
         {"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    ],
)  # fmt: skip
def test_predict(handler_server, path, body, expected):
    assert call_rest(handler_server, path, body) == (200, expected)


@pytest.mark.parametrize(
    "path",
    [f"{MODEL}:regress", f"{MODEL}/versions/{VERSION}:regress", f"{MODEL}/labels/{LABEL}:regress"],
)
def test_regress(handler_server, path):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    assert call_rest(handler_server, path, body) == (200, {"results": [42]})


@pytest.mark.parametrize(
    ("path", "x", "score"),
    [(f"{MODEL}:classify", 20.0, 12), (f"{MODEL}/labels/{LABEL}:classify", 10.0, 7)],
)
def test_classify(handler_server, path, x, score):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": x}]}
    assert call_rest(handler_server, path, body) == (200, {"results": [[["", score]]]})


@pytest.mark.parametrize("path", [MODEL, f"{MODEL}/versions/{VERSION}", f"{MODEL}/labels/{LABEL}"])
def test_get_status(handler_server, path):
    assert call_rest(handler_server, path) == (200, AVAILABLE)


def test_get_model_metadata(handler_server):
    expected = half_plus_two_metadata(TWO_VERSIONS, classify_x2=True)
    assert call_rest(handler_server, f"{MODEL}/metadata") == (200, expected)


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v1/foo", "Malformed request"),
        ("POST", "/v1/foo", "Malformed request"),
        ("GET", "/v1/models", "Missing model name"),
        ("GET", "/v1/models/debug/model_name", "Malformed request"),
        ("POST", "/v1/models", "Malformed request"),
        ("GET", "/v1/models/foo:predict", "Malformed request"),
        ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
        ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
        ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "Failed to convert version"),
        ("POST", "/v1/models/foo/metadata", "Malformed request"),
        ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
    ],
)
def test_unsupported_api_calls(handler_server, method, path, message):
    """UnsupportedApiCalls: INVALID_ARGUMENT (400) with the message upstream looks for."""
    status, body = call_rest(handler_server, path, "" if method == "POST" else None)
    assert status == 400 and message in body["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/models/foo:predict", 404),
        ("/v1/models/foo/versions/50:predict", 404),
        (f"{MODEL}99:predict", 404),
    ],
)
def test_predict_model_name_version_errors(handler_server, path, status):
    assert call_rest(handler_server, path, {"instances": [1]})[0] == status


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (f"{MODEL}:predict", "", "JSON Parse error: The document is empty"),
        (f"{MODEL}:predict", "instances = [1, 2]", "JSON Parse error: Invalid value"),
        (f"{MODEL}:predict", '{ "instances": ["x", "y"] }', "not of expected type: float"),
        (f"{MODEL}/labels/Version_Nonexistent:predict", '{ "instances": ["x", "y"] }',
         "Unrecognized servable version label"),
        (f"{MODEL}:predict", '{ "signature_name": 100 }',
         "'signature_name' key must be a string value."),
    ],
)  # fmt: skip
def test_predict_request_errors(handler_server, path, body, message):
    status, answer = call_rest(handler_server, path, body)
    assert status == 400 and message in answer["error"]
