"""Request logging from a model's `logging_config`, on the real server over gRPC and REST.

Each sampled request is a `tensorflow.serving.PredictionLog` in the TFRecord files of its
`filename_prefix`, read back here with `tf.data.TFRecordDataset`; the files rotate and stay under
their cap; a record that does not fit the queue is dropped and counted in TF Serving's
`request_log_count`, and the request is answered; reloads (the RPC and the file poller) change
what is logged; bad logging configs are refused with the running config left as it was.
"""

from __future__ import annotations

import re
import time

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.core.log_collector import log_files
from serving.tensors import from_numpy
from tests.known_models import tf
from tests.serving.model_servers.tf_serving_base import call_rest, prediction
from tests.serving.tf1_models import write_half_plus_two
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.integration

MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'
COUNT = re.compile(
    r':tensorflow:serving:request_log_count\{model_name="([^"]*)",status_code="([^"]*)"\} (\d+)'
)


def model_config(root, logging: dict[str, str]) -> str:
    """A config with models `half` and `zero` (both half_plus_two), each with its logging
    text (the body of `logging_config { ... }`), or none where the dict has no entry."""
    lines = ["model_config_list {"]
    for name in ("half", "zero"):
        extra = f" logging_config {{ {logging[name]} }}" if name in logging else ""
        lines.append(
            f'  config {{ name: "{name}" base_path: "{root / "models"}" '
            f'model_platform: "tensorflow"{extra} }}'
        )
    return "\n".join([*lines, "}"]) + "\n"


def logging_text(prefix, rate: float, kind: str = "tfrecord") -> str:
    return (
        f'log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }} '
        f"sampling_config {{ sampling_rate: {rate} }}"
    )


def counts(server) -> dict[tuple[str, str], int]:
    _, text = call_rest(server, "/metrics", raw=True)
    return {(m, s): int(n) for m, s, n in COUNT.findall(text)}


def records(prefix) -> list[prediction_log_pb2.PredictionLog]:
    """Every record of a prefix's files, oldest first, as TensorFlow reads them."""
    paths = [str(path) for _, path in log_files(prefix)]
    if not paths:
        return []
    return [
        prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        for raw in tf.data.TFRecordDataset(paths)
    ]


def predict_request(model: str, xs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(from_numpy(np.asarray(xs, np.float32).reshape(-1, 1)))
    return request


def examples_input(target, *xs: float) -> None:
    for x in xs:
        example = target.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)


def reload(server, text: str) -> None:
    """HandleReloadConfigRequest with a config text; raises grpc.RpcError when refused."""
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(text_format.Parse(text, model_server_config_pb2.ModelServerConfig()))
    stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    response = stub.HandleReloadConfigRequest(request, timeout=60)
    assert response.status.error_code == 0, response.status.error_message


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("request-logging")
    write_half_plus_two(root / "models", 1)
    (root / "monitoring.config").write_text(MONITORING)
    (root / "logs").mkdir()
    return root


@pytest.fixture(scope="module")
def server(root):
    """`half` logs every request, `zero` none (rate 0)."""
    config = root / "models.config"
    config.write_text(
        model_config(
            root,
            {
                "half": logging_text(root / "logs" / "half", 1.0),
                "zero": logging_text(root / "logs" / "zero", 0.0),
            },
        )
    )
    process = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
        log_path=root / "server.log",
    )
    with process:
        yield process


def test_every_api_is_logged_at_rate_one_and_none_at_rate_zero(server, root):
    stub = prediction(server.channel)
    predict = predict_request("half", [1.0, 2.0])
    predict_answer = stub.Predict(predict, timeout=30)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "half", "classify_x_to_y"
    examples_input(classify.input, 3.0)
    classify_answer = stub.Classify(classify, timeout=30)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "half", "regress_x_to_y"
    examples_input(regress.input, 4.0)
    regress_answer = stub.Regress(regress, timeout=30)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name, task.model_spec.signature_name = "half", "regress_x_to_y"
    task.method_name = "tensorflow/serving/regress"
    examples_input(multi.input, 5.0)
    multi_answer = stub.MultiInference(multi, timeout=30)
    status, body = call_rest(server, "/v1/models/half:predict", {"instances": [[6.0]]})
    assert (status, body) == (200, {"predictions": [[5.0]]})
    for _ in range(5):
        stub.Predict(predict_request("zero", [1.0]), timeout=30)
    wrong = predict_request("half", [1.0])
    wrong.inputs["nope"].CopyFrom(wrong.inputs.pop("x"))
    with pytest.raises(grpc.RpcError):  # not answered: not logged
        stub.Predict(wrong, timeout=30)

    wait_for(lambda: counts(server).get(("half", "OK")) == 5, message="5 records written")
    logs = records(root / "logs" / "half")
    assert [log.WhichOneof("log_type") for log in logs] == [
        "predict_log",
        "classify_log",
        "regress_log",
        "multi_inference_log",
        "predict_log",
    ]
    assert logs[0].predict_log.request == predict
    assert logs[0].predict_log.response == predict_answer
    assert logs[1].classify_log.request == classify
    assert logs[1].classify_log.response == classify_answer
    assert logs[2].regress_log.response == regress_answer
    assert logs[3].multi_inference_log.request == multi
    assert logs[3].multi_inference_log.response == multi_answer
    rest = tf.make_ndarray(logs[4].predict_log.request.inputs["x"])
    assert rest.tolist() == [[6.0]]
    for log in logs:
        metadata = log.log_metadata
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("half", 1)
        assert metadata.sampling_config.sampling_rate == 1.0
        assert list(metadata.saved_model_tags) == ["serve"]
        assert metadata.timestamp_secs > 1.7e9
    assert logs[0].log_metadata.model_spec.signature_name == "serving_default"
    # Rate 0: sampled never, so no record, no file and no count.
    assert log_files(root / "logs" / "zero") == []
    assert not any(model == "zero" for model, _ in counts(server))


def test_reloads_change_logging_and_bad_configs_change_nothing(server, root):
    stub = prediction(server.channel)
    before = counts(server).get(("half", "OK"), 0)
    # `zero` now logs every request to a new prefix; `half` logs nothing.
    reload(
        server,
        model_config(
            root,
            {
                "half": logging_text(root / "logs" / "half", 0.0),
                "zero": logging_text(root / "logs" / "zero-2", 1.0),
            },
        ),
    )
    for model in ("half", "zero", "zero"):
        stub.Predict(predict_request(model, [7.0]), timeout=30)
    wait_for(lambda: counts(server).get(("zero", "OK")) == 2, message="zero's 2 records")
    assert [r.log_metadata.model_spec.name for r in records(root / "logs" / "zero-2")] == [
        "zero",
        "zero",
    ]
    assert counts(server).get(("half", "OK"), 0) == before

    bad = {
        "sampling_config.sampling_rate must be between 0 and 1": logging_text(
            root / "logs" / "half", 1.5
        ),
        "Cannot find LogCollector::Factory for type: kafka": logging_text(
            root / "logs" / "half", 1.0, kind="kafka"
        ),
        "filename_prefix is empty": logging_text("", 1.0),
        "is not a folder": logging_text(root / "models.config" / "half", 1.0),
        "does not exist": logging_text(root / "missing" / "half", 1.0),
        "cannot write request logs in /sys": logging_text("/sys/half", 1.0),
    }
    for message, text in bad.items():
        with pytest.raises(grpc.RpcError) as caught:
            reload(server, model_config(root, {"half": text}))
        assert message in caught.value.details(), caught.value.details()
        expected = "NOT_FOUND" if "kafka" in text else "INVALID_ARGUMENT"
        assert caught.value.code().name == expected
    # Still serving, and still logging `zero` as the last good config says.
    stub.Predict(predict_request("zero", [8.0]), timeout=30)
    wait_for(lambda: counts(server).get(("zero", "OK")) == 3, message="zero still logged")


def test_files_rotate_stay_under_the_cap_and_a_record_that_does_not_fit_is_dropped(root):
    """Small limits: 4 KiB files, 12 KiB per prefix, 16 KiB of queue (room for dozens of these
    records, so sequential calls never fill it). The config file is polled, so rewriting it
    turns logging off."""
    config = root / "rotating.config"
    prefix = root / "logs" / "rotating"
    config.write_text(model_config(root, {"half": logging_text(prefix, 1.0)}))
    process = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={root / 'monitoring.config'}",
        "--model_config_file_poll_wait_seconds=1",
        "--request_log_max_file_bytes=4096",
        "--request_log_max_total_bytes=12288",
        "--request_log_max_queued_bytes=16384",
        "--max_request_items=8192",
        log_path=root / "rotating.log",
    )
    with process as server:
        stub = prediction(server.channel)
        sent = 150
        for i in range(sent):
            stub.Predict(predict_request("half", [float(i)]), timeout=30)
        # Each sampled request is counted once, when written.
        wait_for(lambda: sum(counts(server).values()) == sent, message="every record counted")
        assert counts(server) == {("half", "OK"): sent}
        files = log_files(prefix)
        sizes = [path.stat().st_size for _, path in files]
        assert len(files) >= 2 and max(sizes) <= 4096 and sum(sizes) <= 12288, sizes
        numbers = [number for number, _ in files]
        assert numbers[0] > 0, "the oldest files were removed"
        assert numbers == list(range(numbers[0], numbers[-1] + 1))
        xs = [
            float(tf.make_ndarray(r.predict_log.request.inputs["x"])[0, 0]) for r in records(prefix)
        ]
        assert xs[-1] == sent - 1 and xs == sorted(xs)  # the newest traffic is kept, in order

        # A record bigger than the whole queue (32 KiB of floats) is dropped; the request answers.
        answer = stub.Predict(predict_request("half", np.ones(8192)), timeout=30)
        assert tf.make_ndarray(answer.outputs["y"]).shape == (8192, 1)
        assert counts(server) == {("half", "OK"): sent, ("half", "RESOURCE_EXHAUSTED"): 1}

        # The poller applies a config without logging_config: nothing more is logged.
        config.write_text(model_config(root, {}))
        wait_for(lambda: "Request logging: off" in server.log(), message="the poll applied")
        assert sum(counts(server).values()) == sent + 1
        last = log_files(prefix)[-1][1]
        size = last.stat().st_size
        for _ in range(5):
            stub.Predict(predict_request("half", [1.0]), timeout=30)
        time.sleep(0.5)  # a record, had one been queued, would be counted by now
        assert sum(counts(server).values()) == sent + 1 and last.stat().st_size == size
