"""`--enable_batching` on the real server: merged requests, a full queue, an oversized task."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

# A long timeout so that concurrent requests surely meet in one batch; one batch thread and
# two batches per queue so that a busy thread fills the queue quickly.
BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 300000 }
max_enqueued_batches { value: 2 }
num_batch_threads { value: 1 }
"""
METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    write_known_model(root / "half", 1)
    (root / "batching.config").write_text(BATCHING)
    (root / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
    )
    process = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        "--enable_batching",
        f"--batching_parameters_file={root / 'batching.config'}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
        log_path=root / "server.log",
    )
    with process:
        yield process


def predict(server, signature="", **inputs):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="half", signature_name=signature)
    )
    for alias, value in inputs.items():
        req.inputs[alias].CopyFrom(from_numpy(value))
    return stub.Predict.future(req, timeout=60)


def metric(server, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("GET", METRICS_PATH)
    text = conn.getresponse().read().decode()
    values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)


def test_concurrent_requests_are_merged_into_one_batch(server):
    batches_before = metric(server, ":tensorflow:serving:batching_session:queuing_latency_count")
    futures = [predict(server, x=np.array([float(i)], np.float32)) for i in range(6)]
    answers = [to_numpy(f.result().outputs["y"], "y").tolist() for f in futures]
    assert answers == [[0.5 * i + 2.0] for i in range(6)]
    batches = metric(server, ":tensorflow:serving:batching_session:queuing_latency_count")
    # Six requests, fewer batches: the scheduler merged them (usually into one).
    assert 1 <= batches - batches_before < 6


@pytest.mark.reliability
def test_full_queue_is_unavailable_and_oversized_task_is_invalid(server):
    busy = predict(
        server,
        "spin",
        x=np.array([1.0], np.float32),
        rounds=np.array([30000], np.int32),
    )
    time.sleep(0.6)  # the spin batch's timeout passes and the only batch thread takes it
    eight = np.arange(8, dtype=np.float32)
    first, second = predict(server, x=eight), predict(server, x=eight)
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as caught:
        predict(server, x=eight).result()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details().startswith(
        "The batch scheduling queue to which this task was submitted is full"
    )
    # The same over REST is a 503 with the same text.
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", "/v1/models/half:predict", json.dumps({"instances": eight.tolist()}))
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 503 and "batch scheduling queue" in body["error"]

    with pytest.raises(grpc.RpcError) as caught:
        predict(server, x=np.arange(9, dtype=np.float32)).result()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Task size 9 is larger than maximum input batch size 8"

    # Nothing queued was lost: every accepted request gets its answer.
    assert to_numpy(busy.result().outputs["y"], "y").tolist() == [2.5]
    for future in (first, second):
        np.testing.assert_allclose(to_numpy(future.result().outputs["y"], "y"), eight * 0.5 + 2)


def test_requests_from_many_threads_all_get_their_own_rows(server):
    results, errors = {}, []

    def client(i):
        try:
            x = np.full(1 + i % 2, float(i), np.float32)
            results[i] = to_numpy(predict(server, x=x).result().outputs["y"], "y")
        except grpc.RpcError as error:
            errors.append(error.details())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i, y in results.items():
        np.testing.assert_array_equal(y, np.full(1 + i % 2, 0.5 * i + 2.0, np.float32))
