"""TF Serving warmup records: `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of `tensorflow.serving.PredictionLog` messages, each holding a real
`PredictRequest`. TF Serving (and the embedded server) replays them before marking a version
AVAILABLE, so the first user request does not pay for graph tracing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from common.warmup_records import MAX_WARMUP_RECORDS as MAX_RECORDS
from common.warmup_records import WARMUP_FILE, read_records, warmup_path

__all__ = ["MAX_RECORDS", "WARMUP_FILE", "prediction_logs", "read_warmup", "write_warmup"]

Requests = Mapping[str, Mapping[str, np.ndarray]]


def prediction_logs(model_name: str, requests: Requests) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictionLog per signature, holding a PredictRequest with the given inputs."""
    logs = []
    for signature, inputs in requests.items():
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup(version_dir: Path, model_name: str, requests: Requests) -> Path:
    """Writes the warmup file into `version_dir/assets.extra/` and returns its path."""
    logs = prediction_logs(model_name, requests)
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"{len(logs)} warmup records exceed TF Serving's maximum ({MAX_RECORDS})")
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Parses a warmup file back into PredictionLog messages."""
    return [prediction_log_pb2.PredictionLog.FromString(record) for record in read_records(path)]
