"""REST routing, status mapping and HTTP behaviour, over real loopback HTTP.

The core here is a plain-Python test double (y = 0.5 * x + 2, like TF Serving's half_plus_two):
these are unit tests of the REST layer only; integration tests run the real server.
"""

import http.client
import json
import logging
import re
import socket
import threading
import time

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import errors
from serving.rest.handler import RestServer
from serving.tensors import from_numpy, to_numpy

METRICS = "/monitoring/prometheus/metrics"


def _signature(inputs, outputs):
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for alias, dtype in inputs.items():
        signature.inputs[alias].CopyFrom(meta_graph_pb2.TensorInfo(name=f"{alias}:0", dtype=dtype))
    for alias, dtype in outputs.items():
        signature.outputs[alias].CopyFrom(meta_graph_pb2.TensorInfo(name=f"{alias}:0", dtype=dtype))
    return signature


SIGNATURES = {
    "serving_default": _signature({"x": types_pb2.DT_FLOAT}, {"y": types_pb2.DT_FLOAT}),
    "pair": _signature(
        {"x": types_pb2.DT_FLOAT, "name": types_pb2.DT_STRING},
        {
            "y": types_pb2.DT_FLOAT,
            "greeting": types_pb2.DT_STRING,
            "raw_bytes": types_pb2.DT_STRING,
        },
    ),
    "halves": _signature({"h": types_pb2.DT_HALF}, {"y": types_pb2.DT_FLOAT}),
}


class FakeCore:
    """Serves model `half` version 1 (label `stable`); `slow` sleeps; `buggy` has a bug."""

    def __init__(self):
        self.calls = []
        self.delay = 0.0

    def _resolve(self, spec):
        version = spec.version.value if spec.HasField("version") else None
        if spec.name not in ("half", "slow", "buggy") or version not in (None, 1):
            raise errors.servable_not_found(spec.name, version)
        if spec.version_label not in ("", "stable"):
            raise errors.invalid_argument(
                f"Unrecognized servable version label: {spec.version_label}"
            )

    def signature_inputs(self, spec, signature_name):
        self._resolve(spec)
        key = signature_name or "serving_default"
        if key not in SIGNATURES:
            raise errors.invalid_argument(
                f'Serving signature name: "{key}" not found in signature def'
            )
        return SIGNATURES[key].inputs

    def predict(self, request, entrypoint="GRPC"):
        self.calls.append(("predict", request, entrypoint))
        self._resolve(request.model_spec)
        if request.model_spec.name == "slow":
            time.sleep(self.delay)
        if request.model_spec.name == "buggy":
            raise ZeroDivisionError("division by zero")
        inputs = {alias: to_numpy(tensor, alias) for alias, tensor in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        response.outputs["y"].CopyFrom(from_numpy(inputs.get("x", np.float32(0)) * 0.5 + 2))
        if "name" in inputs:
            greeting = np.array([b"hello " + n for n in inputs["name"]], dtype=object)
            response.outputs["greeting"].CopyFrom(from_numpy(greeting))
            response.outputs["raw_bytes"].CopyFrom(from_numpy(inputs["name"]))
        return response

    def get_model_status(self, request, entrypoint="GRPC"):
        self.calls.append(("status", request, entrypoint))
        self._resolve(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=1)
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        status.status.SetInParent()  # error_code OK, as TF Serving always sets it
        return response

    def get_model_metadata(self, request, entrypoint="GRPC"):
        self.calls.append(("metadata", request, entrypoint))
        self._resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 1
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def["serving_default"].CopyFrom(SIGNATURES["serving_default"])
        response.metadata["signature_def"].Pack(signatures)
        return response

    def classify(self, request, entrypoint="GRPC"):
        self.calls.append(("classify", request, entrypoint))
        self._resolve(request.model_spec)
        response = classification_pb2.ClassificationResponse()
        response.result.classifications.add().classes.add(label="", score=12)
        return response

    def regress(self, request, entrypoint="GRPC"):
        self.calls.append(("regress", request, entrypoint))
        self._resolve(request.model_spec)
        if request.model_spec.signature_name == "nosig":
            raise errors.invalid_argument("No signature was found with the name: nosig")
        response = regression_pb2.RegressionResponse()
        response.result.regressions.add(value=42)
        return response

    def metrics_text(self):
        return "# TYPE :tensorflow:serving:request_count counter\n"


@pytest.fixture(scope="module")
def rest():
    core = FakeCore()
    server = RestServer(core, "127.0.0.1", 0, timeout_ms=500, monitoring_path=METRICS)
    server.start()
    server.core = core
    yield server
    server.shutdown()


def call(server, method, path, body=None, headers=None, connection=None):
    """One request; returns (status, content type, body text)."""
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    payload = body if isinstance(body, bytes | None) else json.dumps(body)
    connection.request(method, path, body=payload, headers=headers or {})
    response = connection.getresponse()
    text = response.read().decode("utf-8", "surrogateescape")
    if own:
        connection.close()
    return response.status, response.getheader("Content-Type"), text


def test_model_status(rest):
    status, content_type, text = call(rest, "GET", "/v1/models/half")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(text) == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert text.startswith('{\n "model_version_status": [\n  {\n   "version": "1",')
    for path in ("/v1/models/half/versions/1", "/v1/models/half/labels/stable", "/V1/MODELS/half"):
        assert call(rest, "GET", path)[0] == 200, path
    kind, request, entrypoint = rest.core.calls[-2]
    assert (kind, request.model_spec.version_label, entrypoint) == ("status", "stable", "REST")


def test_metadata_has_the_doubled_signature_def_key(rest):
    status, _, text = call(rest, "GET", "/v1/models/half/versions/1/metadata")
    assert status == 200
    body = json.loads(text)
    assert body["model_spec"] == {"name": "half", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert rest.core.calls[-1][1].metadata_field == ["signature_def"]


def test_predict_row_and_columnar(rest):
    status, content_type, text = call(
        rest, "POST", "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}
    )
    assert (status, content_type) == (200, "application/json")
    # The default layout is compact (--rest_api_json_layout=compact).
    assert text == '{"predictions":[2.5,3.0,4.5]}'
    status, _, text = call(
        rest, "POST", "/v1/models/half/versions/1:predict", {"inputs": [[1], [2]]}
    )
    assert json.loads(text) == {"outputs": [[2.5], [3.0]]}
    kind, request, entrypoint = rest.core.calls[-1]
    assert (kind, entrypoint, request.model_spec.version.value) == ("predict", "REST", 1)
    assert request.inputs["x"].tensor_content  # REST builds compact tensors for the core


def test_predict_tf_serving_layout_is_byte_for_byte():
    """With `json_layout="tf_serving"` the answer is TF Serving's PrettyWriter text, not compact."""
    server = RestServer(FakeCore(), "127.0.0.1", 0, json_layout="tf_serving")
    server.start()
    try:
        status, _, text = call(
            server, "POST", "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]}
        )
        assert (status, text) == (200, '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}')
        status, _, text = call(server, "POST", "/v1/models/half:predict", {"inputs": [1.0]})
        assert (status, text) == (200, '{\n    "outputs": [\n        2.5\n    ]\n}')
    finally:
        server.shutdown()


def test_unknown_json_layout_is_refused():
    with pytest.raises(ValueError, match="unknown JSON layout 'pretty'; expected one of compact"):
        RestServer(FakeCore(), "127.0.0.1", 0, json_layout="pretty")


def test_predict_several_outputs_and_bytes(rest):
    body = {"signature_name": "pair", "instances": [{"x": 2, "name": {"b64": "Ym9i"}}]}
    status, _, text = call(rest, "POST", "/v1/models/half/labels/stable:predict", body)
    assert status == 200
    assert json.loads(text) == {
        "predictions": [{"greeting": "hello bob", "raw_bytes": {"b64": "Ym9i"}, "y": 3.0}]
    }
    assert rest.core.calls[-1][1].model_spec.signature_name == "pair"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/half:predict", None, 400,
         "Malformed request: GET /v1/models/half:predict"),
        ("POST", "/v1/models/half/metadata", {}, 400,
         "Malformed request: POST /v1/models/half/metadata"),
        ("GET", "/v1/models/half/versions/HELLO", None, 400,
         "Malformed request: GET /v1/models/half/versions/HELLO"),
        ("GET", "/v1/models/half/version/1", None, 400,
         "Malformed request: GET /v1/models/half/version/1"),
        ("GET", "/v1/models/half/", None, 400, "Malformed request: GET /v1/models/half/"),
        ("GET", "/v1/models/half/versions/1/labels/x", None, 400,
         "Malformed request: GET /v1/models/half/versions/1/labels/x"),
        ("POST", "/v1/models/half:PREDICT", {}, 400,
         "Malformed request: POST /v1/models/half:PREDICT"),
        ("DELETE", "/v1/models/half", None, 400, "Malformed request: DELETE /v1/models/half"),
        ("GET", "/v1/models/half/versions/99999999999999999999", None, 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("GET", "/v1/models/nope", None, 404, "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/models/half/versions/7", None, 404,
         "Servable not found for request: Specific(half, 7)"),
        ("POST", "/v1/models/half/labels/canary:predict", {"instances": [1]}, 400,
         "Unrecognized servable version label: canary"),
        ("POST", "/v1/models/%68alf/labels/nope%21:predict", {"instances": [1]}, 400,
         "Unrecognized servable version label: nope!"),
        ("POST", "/v1/models/half:predict", {"signature_name": "s", "instances": [1]}, 400,
         'Serving signature name: "s" not found in signature def'),
        ("POST", "/v1/models/half:predict", {"inputs": ["a"]}, 400,
         'JSON Value: "a" Type: String is not of expected type: float'),
        ("POST", "/v1/models/half:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("POST", "/v1/models/half:predict", {"signature_name": "halves", "inputs": [1.5]}, 501,
         "Conversion of JSON Value: 1.5 to type: half"),
        ("POST", "/v1/models/half:regress", {"signature_name": "nosig", "examples": [{"x": 1}]},
         400, "No signature was found with the name: nosig"),
        ("POST", "/v1/models/half:classify", {}, 400,
         "JSON Value: {} When method is classify, key 'examples' is expected and was not found"),
    ],
)  # fmt: skip
def test_errors_map_to_http_status_with_json_body(rest, method, path, body, status, message):
    got_status, content_type, text = call(rest, method, path, body)
    assert (got_status, content_type) == (status, "application/json")
    assert json.loads(text) == {"error": message}
    assert text == '{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}"


def test_paths_outside_v1_are_plain_404s(rest):
    for path in ("/", "/healthz", "/v2/models/half", "/monitoring/prometheus"):
        status, content_type, text = call(rest, "GET", path)
        assert (status, content_type) == (404, "text/html"), path
        assert "Not Found" in text and not text.startswith("{")


def test_metrics_endpoint(rest):
    status, content_type, text = call(rest, "GET", METRICS + "?x=1")
    assert (status, content_type) == (200, "text/plain; version=0.0.4")
    assert "# TYPE" in text


def test_port_refuses_connections_until_started():
    server = RestServer(FakeCore(), "127.0.0.1", 0)
    try:
        with pytest.raises(ConnectionRefusedError):
            call(server, "GET", "/v1/models/half")
        server.start()
        assert call(server, "GET", "/v1/models/half")[0] == 200
    finally:
        server.shutdown()


def test_metrics_only_when_configured():
    server = RestServer(FakeCore(), "127.0.0.1", 0)
    server.start()
    try:
        assert call(server, "GET", METRICS)[0] == 404
    finally:
        server.shutdown()


def test_cors_preflight(rest):
    assert call(rest, "OPTIONS", "/v1/models/half", headers={"Origin": "http://x"})[::2] == (
        200,
        "",
    )
    status, content_type, text = call(rest, "OPTIONS", "/v1/models/half")
    assert (status, content_type, text) == (400, None, "")


def test_classify_results(rest):
    body = {"examples": [{"x": 1.5}], "context": {"c": "a"}}
    status, _, text = call(rest, "POST", "/v1/models/half:classify", body)
    assert (status, json.loads(text)) == (200, {"results": [[["", 12]]]})
    request = rest.core.calls[-1][1]
    assert request.input.example_list_with_context.examples[0].features.feature[
        "x"
    ].float_list.value == [1.5]


def test_regress_results(rest):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    status, _, text = call(rest, "POST", "/v1/models/half/versions/1:regress", body)
    assert (status, json.loads(text)) == (200, {"results": [42]})
    request = rest.core.calls[-1][1]
    assert request.model_spec.signature_name == "regress_x_to_y"
    assert request.model_spec.version.value == 1


def test_timeout_answers_504(rest):
    rest.core.delay = 1.5
    status, _, text = call(rest, "POST", "/v1/models/slow:predict", {"instances": [1]})
    assert (status, json.loads(text)) == (504, {"error": "Timed out waiting for notification"})


def test_answers_are_sent_without_nagle_delay(rest):
    """A kept-alive answer goes out as head, then body: without TCP_NODELAY the body waits for
    the client's delayed ACK of the head (about 40 ms a request on Linux)."""
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
    assert call(rest, "GET", "/v1/models/half", connection=connection)[0] == 200
    protocols = rest._http._server.server_state.connections
    assert protocols
    for protocol in protocols:
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    connection.close()


def test_handler_bug_is_a_500_and_the_connection_survives(rest, caplog):
    """A bug's answer names no exception: a request id, which the logged traceback carries."""
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
    with caplog.at_level(logging.ERROR, logger="serving"):
        status, content_type, text = call(rest, "POST", "/v1/models/buggy:predict",
                                          {"instances": [1]}, connection=connection)  # fmt: skip
    assert (status, content_type) == (500, "application/json")
    error = json.loads(text)["error"]
    match = re.fullmatch(
        r"Internal error: the server log has the details under request id ([0-9a-f]{16})", error
    )
    assert match, error
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError
    assert "POST /v1/models/buggy:predict" in logged[0].getMessage()
    # Each failure gets its own id.
    again = json.loads(call(rest, "POST", "/v1/models/buggy:predict", {"instances": [1]})[2])
    assert again["error"] != error
    # Keep-alive: the same connection answers the next request.
    assert call(rest, "GET", "/v1/models/half", connection=connection)[0] == 200
    connection.close()


def test_shutdown_waits_for_requests_in_flight():
    core = FakeCore()
    core.delay = 0.5
    server = RestServer(core, "127.0.0.1", 0, timeout_ms=5000)
    server.start()
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            call(server, "POST", "/v1/models/slow:predict", {"instances": [2]})
        )
    )
    worker.start()
    time.sleep(0.2)  # the request is in the core now
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    assert call(server, "GET", "/v1/models/half", connection=idle)[0] == 200  # stays open, idle
    started = time.monotonic()
    server.shutdown()
    worker.join(5)
    assert results and results[0][0] == 200 and json.loads(results[0][2]) == {"predictions": [3.0]}
    assert time.monotonic() - started < 3
    with pytest.raises(OSError):
        call(server, "GET", "/v1/models/half")


def test_large_predict_round_trip(rest):
    images = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    status, _, text = call(rest, "POST", "/v1/models/half:predict", {"instances": images.tolist()})
    assert status == 200
    predictions = np.array(json.loads(text)["predictions"], dtype=np.float32)
    np.testing.assert_array_equal(predictions, images * np.float32(0.5) + np.float32(2))
