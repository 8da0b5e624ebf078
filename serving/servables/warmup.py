"""Warmup: replaying a version's `assets.extra/tf_serving_warmup_requests` before it serves.

TF Serving's `saved_model_warmup`: the records are PredictionLogs holding real requests; each is
run `--num_request_iterations_for_warmup` times, and any failure fails the load.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
from google.protobuf import message as protobuf_message
from tensorflow_serving.apis import prediction_log_pb2

from common.warmup_records import MAX_WARMUP_RECORDS, WarmupRecordError, read_records, warmup_path
from serving.errors import ServingError, invalid_argument
from serving.servables.saved_model import Servable

logger = logging.getLogger("serving")


class Warmup:
    """Replays a servable's warmup records through Predict; the manager calls it on each load.

    Args:
        predict_on: `(servable, PredictRequest) -> PredictResponse` on a servable in hand (the
            server's Predict, batching included, before the version is AVAILABLE).
        iterations: `--num_request_iterations_for_warmup` (at least 1).
        latency: the `model_warmup_latency` histogram (µs, by model path and status), or None.
    """

    def __init__(self, predict_on, iterations: int = 1, latency=None):
        self.predict_on = predict_on
        self.iterations = max(1, iterations)
        self.latency = latency

    def __call__(self, servable: Servable) -> None:
        start = time.perf_counter()
        status = "OK"
        try:
            records = read_warmup_requests(servable.path)
            for log_entry in records:
                for _ in range(self.iterations):
                    self.predict_on(servable, log_entry.predict_log.request)
            if records:
                logger.info(
                    "Finished reading warmup data for model at %s. Number of warmup records "
                    "read: %d. Elapsed time (microseconds): %d.",
                    servable.path,
                    len(records),
                    (time.perf_counter() - start) * 1e6,
                )
        except ServingError as error:
            status = error.code.name
            raise
        finally:
            if self.latency is not None:
                latency_us = (time.perf_counter() - start) * 1e6
                self.latency.observe(latency_us, str(servable.path), status)


def _log_type_number(log: prediction_log_pb2.PredictionLog) -> int:
    field = log.WhichOneof("log_type")
    return log.DESCRIPTOR.fields_by_name[field].number


def read_warmup_requests(version_dir: str | Path) -> list[prediction_log_pb2.PredictionLog]:
    """Reads `assets.extra/tf_serving_warmup_requests` of a version directory.

    Args:
        version_dir: The SavedModel version directory.

    Returns:
        The PredictionLog records (all predict logs), or [] when there is no warmup file.

    Raises:
        ServingError: INVALID_ARGUMENT for too many or unparsable records, DATA_LOSS for a file
            that is not TFRecord, UNIMPLEMENTED for records other than predict logs.
    """
    path = warmup_path(version_dir)
    if not path.is_file():
        logger.info("No warmup data file found at %s", path)
        return []
    logs = []
    try:
        records = read_records(path)
    except WarmupRecordError as error:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS,
            f"{error}. Please verify your warmup data is in TFRecord format.",
        ) from error
    except OSError as error:
        raise ServingError(
            grpc.StatusCode.UNKNOWN, f"Failed to read warmup data at {path}: {error}"
        ) from error
    for count, record in enumerate(records, start=1):
        if count > MAX_WARMUP_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except protobuf_message.DecodeError as error:
            raise invalid_argument(
                f"Failed to parse warmup record: {record!r} from {path}"
            ) from error
        kind = log.WhichOneof("log_type")
        if kind is None:
            # TF Serving skips a record with no log set without complaint.
            continue
        if kind != "predict_log":
            # TF Serving also replays classify/regress/multi_inference logs; this server only
            # replays Predict, so it refuses the others the way TF refuses session_run logs.
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Unsupported log_type for warmup: {_log_type_number(log)}",
            )
        logs.append(log)
    return logs
