"""serving/servables/warmup.py: reading warmup records, and replaying them through Predict."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
)

from common.warmup_records import MAX_WARMUP_RECORDS, WARMUP_DIR, WARMUP_FILE
from serving.errors import ServingError
from serving.model_servers.metrics import Metrics
from serving.servables.predict import Predictor
from serving.servables.saved_model import load_servable
from serving.servables.warmup import Warmup, read_warmup_requests
from tests.known_models import tf, write_known_model

F32 = np.float32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_known_model(tmp_path_factory.mktemp("known") / "m", 1, a=0.5, b=2.0, warmup="good")


def _write_records(version_dir, records: list[bytes]):
    path = version_dir / WARMUP_DIR / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def _predict_log() -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], F32)))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def test_warmup_absent(tmp_path):
    assert read_warmup_requests(tmp_path) == []


def test_warmup_good(model_dir):
    logs = read_warmup_requests(model_dir)
    assert len(logs) == 1
    request = logs[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["x"]).tolist() == [1.0]


def test_warmup_not_tfrecord(tmp_path):
    path = tmp_path / WARMUP_DIR / WARMUP_FILE
    path.parent.mkdir()
    path.write_bytes(b"this is definitely not a TFRecord file, just some text" * 4)
    with pytest.raises(ServingError) as caught:
        read_warmup_requests(tmp_path)
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    assert caught.value.message.endswith("Please verify your warmup data is in TFRecord format.")


def test_warmup_too_many_records(tmp_path):
    path = _write_records(tmp_path, [_predict_log().SerializeToString()] * (MAX_WARMUP_RECORDS + 1))
    with pytest.raises(ServingError) as caught:
        read_warmup_requests(tmp_path)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == f"Number of warmup records exceeds the maximum (1000) at {path}"


def test_warmup_max_records_is_fine(tmp_path):
    _write_records(tmp_path, [_predict_log().SerializeToString()] * MAX_WARMUP_RECORDS)
    assert len(read_warmup_requests(tmp_path)) == MAX_WARMUP_RECORDS


def test_warmup_unparsable_record(tmp_path):
    _write_records(tmp_path, [b"\xff\xff\xff garbage"])
    with pytest.raises(ServingError) as caught:
        read_warmup_requests(tmp_path)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("Failed to parse warmup record: ")


def test_warmup_other_log_types_unimplemented(tmp_path):
    classify = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(
            request=classification_pb2.ClassificationRequest()
        )
    )
    _write_records(tmp_path, [_predict_log().SerializeToString(), classify.SerializeToString()])
    with pytest.raises(ServingError) as caught:
        read_warmup_requests(tmp_path)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.message == "Unsupported log_type for warmup: 2"


def _replay(version_dir, iterations):
    """Replays a version's warmup file through real Predict; returns (signatures run, metrics)."""
    servable = load_servable("m", 1, version_dir)
    predictor, metrics, seen = Predictor(), Metrics(), []

    def predict_on(held, request):
        seen.append(request.model_spec.signature_name)
        return predictor.predict_on(held, request)

    try:
        Warmup(predict_on, iterations, latency=metrics.model_warmup_latency)(servable)
    finally:
        servable.close()
    return seen, metrics.render()


def test_replay_runs_each_record_the_given_number_of_times(model_dir):
    seen, text = _replay(model_dir, iterations=3)
    assert seen == ["serving_default"] * 3
    assert f'model_path="{model_dir}",status="OK"}} 1' in text


def test_a_failing_record_fails_the_replay_and_is_counted(tmp_path):
    version_dir = write_known_model(tmp_path / "bad", 1, warmup="bad")
    with pytest.raises(ServingError) as caught:
        _replay(version_dir, iterations=2)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Expects arg[0] to be float but double is provided"
