"""The embedded server's REST API over real HTTP on loopback, against TF Serving's formats."""

from __future__ import annotations

import base64
import http.client
import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rest(known_server):
    def call(method: str, path: str, body=None, raw: bool = False):
        conn = http.client.HTTPConnection("127.0.0.1", known_server.rest_port, timeout=60)
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn.request(method, path, body=data)
        response = conn.getresponse()
        payload = response.read().decode()
        conn.close()
        if raw:
            return response.status, response.getheader("Content-Type"), payload
        return response.status, json.loads(payload)

    return call


def test_status_per_model_version_and_label(rest):
    available = {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert rest("GET", "/v1/models/half") == (200, {"model_version_status": [available]})
    assert rest("GET", "/v1/models/half/versions/1") == (200, {"model_version_status": [available]})
    status, body = rest("GET", "/v1/models/triple/labels/stable")
    assert status == 200 and sorted(s["version"] for s in body["model_version_status"]) == [
        "1",
        "2",
    ]
    assert rest("GET", "/v1/models/nope")[0] == 404


def test_metadata_json(rest):
    status, body = rest("GET", "/v1/models/half/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "half", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["x"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]


def test_predict_row_and_columnar(rest):
    assert rest("POST", "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    assert rest("POST", "/v1/models/half:predict", {"inputs": [1.0, 2.0]}) == (
        200,
        {"outputs": [2.5, 3.0]},
    )
    status, body = rest(
        "POST",
        "/v1/models/half:predict",
        {"signature_name": "two_inputs", "instances": [{"a": 3, "b": 1}, {"a": 1, "b": 1}]},
    )
    assert status == 200
    assert body == {"predictions": [{"diff": 2.0, "sum": 4.0}, {"diff": 0.0, "sum": 2.0}]}
    status, body = rest(
        "POST",
        "/v1/models/half:predict",
        {"signature_name": "two_inputs", "inputs": {"a": [3.0], "b": [1.0]}},
    )
    assert (status, body) == (200, {"outputs": {"diff": [2.0], "sum": [4.0]}})


def test_versions_and_labels_over_rest(rest):
    assert rest("POST", "/v1/models/triple/versions/1:predict", {"instances": [1.0]}) == (
        200,
        {"predictions": [3.0]},
    )
    assert rest("POST", "/v1/models/triple/labels/canary:predict", {"instances": [1.0]}) == (
        200,
        {"predictions": [4.0]},
    )


def test_b64_strings_and_bytes_outputs(rest):
    raw = b"\xff\x00car"
    status, body = rest(
        "POST",
        "/v1/models/half:predict",
        {"signature_name": "echo_bytes", "instances": [{"b64": base64.b64encode(raw).decode()}]},
    )
    assert status == 200
    # `text_bytes` ends in _bytes, so it comes back base64-encoded; `length` is a plain int.
    assert body == {
        "predictions": [{"length": 5, "text_bytes": {"b64": base64.b64encode(raw).decode()}}]
    }


def test_float_formatting(rest):
    status, _, text = rest(
        "POST", "/v1/models/half:predict", json.dumps({"instances": [0.0, 1e30]}), raw=True
    )
    assert status == 200
    assert json.loads(text) == {"predictions": [2.0, 5e29]}
    assert "2.0" in text and "5e+29" in text
    status, _, text = rest(
        "POST", "/v1/models/half:predict", '{"instances": [NaN, Infinity]}', raw=True
    )
    assert status == 200 and "NaN" in text and "Infinity" in text


@pytest.mark.reliability
@pytest.mark.parametrize(
    "method, path, body, status, error",
    [
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [1.0]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/half/versions/9:predict",
            {"instances": [1.0]},
            404,
            "Servable not found for request: Specific(half, 9)",
        ),
        (
            "POST",
            "/v1/models/half/labels/beta:predict",
            {"instances": [1.0]},
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            "POST",
            "/v1/models/half:predict",
            {"signature_name": "nosig", "instances": [1.0]},
            400,
            'Serving signature name: "nosig" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/half:predict",
            {"instances": ["a"]},
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        (
            "POST",
            "/v1/models/half:predict",
            {"nothing": 1},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        ("POST", "/v1/models/half:predict", "", 400, "JSON Parse error: The document is empty"),
        (
            "POST",
            "/v1/models/half:predict",
            {"signature_name": "two_inputs", "inputs": {"a": [1.0]}},
            400,
            "Missing named input: b in 'inputs' object.",
        ),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        (
            "GET",
            "/v1/models/half:predict",
            None,
            400,
            "Malformed request: GET /v1/models/half:predict",
        ),
        (
            "POST",
            "/v1/models/half/metadata",
            {},
            400,
            "Malformed request: POST /v1/models/half/metadata",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "unknown-signature",
        "wrong-type",
        "no-instances",
        "empty-body",
        "missing-named-input",
        "list-models",
        "get-predict",
        "post-metadata",
    ],
)
def test_rest_errors(rest, method, path, body, status, error):
    got_status, got = rest(method, path, body)
    assert (got_status, got) == (status, {"error": error})


def test_unmatched_paths_are_plain_404s_and_metrics_are_exported(rest):
    status, content_type, _ = rest("GET", "/healthz", raw=True)
    assert status == 404 and "json" not in (content_type or "")
    rest("POST", "/v1/models/half:predict", {"instances": [1.0]})
    status, content_type, text = rest("GET", "/monitoring/prometheus/metrics", raw=True)
    assert status == 200 and content_type.startswith("text/plain")
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"}' in text
    assert ":tensorflow:serving:request_latency_bucket" in text
