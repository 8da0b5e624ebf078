"""Metric labels: client-chosen names must not grow the Prometheus page.

Only the models in the current config get their own `model_name`; any other name a request
carries (unknown, empty, or missing) is counted under `UNKNOWN_MODEL`. A model that a reload
removes keeps the series it has (counters never go down), and later requests naming it are
unknown. Other client strings (signature names, version labels, versions) never become labels.
"""

from __future__ import annotations

import http.client
import random
import string
import urllib.parse

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.model_servers.metrics import UNKNOWN_MODEL
from serving.rollout.metrics import request_counts
from serving.tensors import from_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess

METRICS_PATH = "/monitoring/prometheus/metrics"
NAME_BYTES = 2048
# The page grows by a few new series at most (one per status), never by one per name: before
# the fix each 2 KB name added a 2 KB line, megabytes for the thousands sent here.
GROWTH_LIMIT = 4096
CONFIG = """
model_config_list {{
  config {{ name: "half" base_path: "{root}/half" model_platform: "tensorflow" }}
  {extra}
}}
"""
TRIPLE = 'config { name: "triple" base_path: "%s/triple" model_platform: "tensorflow" }'


def _random_name(rng: random.Random, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(NAME_BYTES))


def _start(root, extra: str = "") -> ServerProcess:
    write_known_model(root / "models" / "half", 1, a=0.5, b=2.0)
    write_known_model(root / "models" / "triple", 1, a=3.0, b=0.0)
    config = root / "models.config"
    config.write_text(CONFIG.format(root=root / "models", extra=extra))
    (root / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
    )
    server = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
        log_path=root / "server.log",
    )
    return server.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = _start(tmp_path_factory.mktemp("labels"))
    yield server
    assert server.stop() == 0, server.log()


def _get(server, path: str) -> tuple[int, bytes]:
    # A connection per request, as the thousands of clients this test stands for would open.
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _page(server) -> str:
    status, body = _get(server, METRICS_PATH)
    assert status == 200, body[:200]
    return body.decode("utf-8")


def _x(value: float = 2.0):
    return from_numpy(np.array([value], np.float32))


def _predict(name: str, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, **spec))
    request.inputs["x"].CopyFrom(_x())
    return request


def _rest_get(server, path: str) -> int:
    return _get(server, path)[0]


def _grpc_code(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_thousands_of_random_model_names_leave_the_page_bounded(server):
    """REST metadata and status, and gRPC Predict, GetModelMetadata, Classify, Regress,
    MultiInference and GetModelStatus with random 2 KB names: the page keeps its size, no
    name appears on it, and every counted request is under the one fixed label."""
    rng = random.Random(7)
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    models = model_service_pb2_grpc.ModelServiceStub(server.channel)
    assert _grpc_code(prediction.Predict, _predict("half")) == grpc.StatusCode.OK
    before = _page(server)
    unknown_before = request_counts(before, UNKNOWN_MODEL)

    for i in range(1500):
        name = _random_name(rng)
        path = f"/v1/models/{name}/metadata" if i % 2 else f"/v1/models/{name}"
        assert _rest_get(server, path) == 404
    # URL-decoded names with quotes, backslashes and newlines: escaping must not matter either.
    for _ in range(50):
        name = _random_name(rng, 'ab"\\\n\u00e9')
        assert _rest_get(server, f"/v1/models/{urllib.parse.quote(name)}/metadata") == 404

    calls = [
        (prediction.Predict, lambda n: _predict(n)),
        (
            prediction.GetModelMetadata,
            lambda n: get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name=n), metadata_field=["signature_def"]
            ),
        ),
        (
            prediction.Classify,
            lambda n: classification_pb2.ClassificationRequest(
                model_spec=model_pb2.ModelSpec(name=n)
            ),
        ),
        (
            prediction.Regress,
            lambda n: regression_pb2.RegressionRequest(model_spec=model_pb2.ModelSpec(name=n)),
        ),
    ]
    counted = 0
    for i in range(1500):
        call, make = calls[i % len(calls)]
        assert _grpc_code(call, make(_random_name(rng, string.printable))) != grpc.StatusCode.OK
        counted += 1
    for _ in range(50):
        name = _random_name(rng)
        task = inference_pb2.InferenceTask(model_spec=model_pb2.ModelSpec(name=name))
        multi = inference_pb2.MultiInferenceRequest(tasks=[task])
        assert _grpc_code(prediction.MultiInference, multi) != grpc.StatusCode.OK
        status = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=name)
        )
        assert _grpc_code(models.GetModelStatus, status) == grpc.StatusCode.NOT_FOUND
    # A spec with an empty name, and none at all.
    assert _grpc_code(prediction.Predict, _predict("")) == grpc.StatusCode.INVALID_ARGUMENT
    assert _grpc_code(prediction.Predict, predict_pb2.PredictRequest()) != grpc.StatusCode.OK
    counted += 2

    after = _page(server)
    print(f"metrics page: {len(before)} bytes before, {len(after)} after")
    assert len(after) - len(before) < GROWTH_LIMIT, (len(before), len(after))
    assert max(map(len, after.splitlines())) < 1024
    unknown_after = request_counts(after, UNKNOWN_MODEL)
    # Of the REST requests, the /metadata ones are counted (this server counts no GetModelStatus).
    rest_counted = 750 + 50
    gained = sum(unknown_after.values()) - sum(unknown_before.values())
    assert gained == counted + rest_counted, (unknown_before, unknown_after)
    assert unknown_after["NOT_FOUND"] - unknown_before.get("NOT_FOUND", 0) >= 1500


def test_client_strings_on_a_configured_model_are_not_labels(server):
    """Random signature names, version labels and versions for `half` are counted under `half`
    with their status; none of them becomes a series."""
    rng = random.Random(11)
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    before = _page(server)
    half_before = request_counts(before, "half")
    for i in range(300):
        text = _random_name(rng)
        if i % 3 == 0:
            request = _predict("half", signature_name=text)
        elif i % 3 == 1:
            request = _predict("half", version_label=text)
        else:
            request = _predict("half")
            request.model_spec.version.value = rng.randrange(2, 2**62)
        assert _grpc_code(prediction.Predict, request) != grpc.StatusCode.OK
    for _ in range(100):
        assert _rest_get(server, f"/v1/models/half/labels/{_random_name(rng)}/metadata") == 400

    after = _page(server)
    assert len(after) - len(before) < GROWTH_LIMIT, (len(before), len(after))
    half_after = request_counts(after, "half")
    assert sum(half_after.values()) - sum(half_before.values()) == 400
    assert half_after["FAILED_PRECONDITION"] - half_before.get("FAILED_PRECONDITION", 0) == 100


def test_a_configured_model_keeps_the_series_tf_serving_names(server):
    """Served and failed requests for a configured model are labelled with its name, API and
    entrypoint, exactly as TF Serving labels them."""
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    assert _grpc_code(prediction.Predict, _predict("half")) == grpc.StatusCode.OK
    assert _rest_get(server, "/v1/models/half/metadata") == 200
    assert _rest_get(server, "/v1/models/half/versions/9/metadata") == 404
    page = _page(server)
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"} ' in page
    assert ':tensorflow:serving:request_count{model_name="half",status="NOT_FOUND"} ' in page
    for api, entrypoint in (("Predict", "GRPC"), ("GetModelMetadata", "REST")):
        labels = f'model_name="half",API="{api}",entrypoint="{entrypoint}"'
        assert f":tensorflow:serving:request_latency_count{{{labels}}} " in page
    assert ':tensorflow:serving:runtime_latency_count{model_name="half",API="Predict"' in page


def test_reloads_decide_which_names_are_labels(tmp_path):
    """A model added by a reload gets its own series; a model removed keeps the series it has,
    and requests naming it afterwards are counted as unknown."""
    server = _start(tmp_path)
    try:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
        models = model_service_pb2_grpc.ModelServiceStub(server.channel)
        assert _grpc_code(prediction.Predict, _predict("triple")) == grpc.StatusCode.NOT_FOUND
        assert request_counts(_page(server), "triple") == {}

        def reload(text: str) -> None:
            config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
            answer = models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=config), timeout=60
            )
            assert answer.status.error_code == 0, answer.status

        root = tmp_path / "models"
        reload(CONFIG.format(root=root, extra=TRIPLE % root))
        assert _grpc_code(prediction.Predict, _predict("triple")) == grpc.StatusCode.OK
        assert _grpc_code(prediction.Predict, _predict("half")) == grpc.StatusCode.OK
        page = _page(server)
        assert request_counts(page, "triple") == {"OK": 1}
        half = request_counts(page, "half")
        unknown = request_counts(page, UNKNOWN_MODEL)

        # Only `triple` now: `half` leaves the config.
        reload("model_config_list { " + TRIPLE % root + " }")
        assert _grpc_code(prediction.Predict, _predict("half")) == grpc.StatusCode.NOT_FOUND
        page = _page(server)
        assert request_counts(page, "half") == half
        after = request_counts(page, UNKNOWN_MODEL)
        assert after.get("NOT_FOUND", 0) == unknown.get("NOT_FOUND", 0) + 1
    finally:
        assert server.stop() == 0, server.log()
