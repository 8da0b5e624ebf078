"""Request logging as TF Serving configures it: each model's `logging_config` in the model config.

TF Serving's `ServerRequestLogger` maps model names to request loggers, rebuilt from the
`logging_config` of every model at each config reload (`ServerCore::ReloadConfig`); a logger
samples each answered request with `sampling_config.sampling_rate` and hands a
`tensorflow.serving.PredictionLog` (the request, the response and `log_metadata`) to a
LogCollector chosen by `log_collector_config.type`. The open-source `tensorflow_model_server`
registers no collector, so there a `logging_config` fails the config ("No request-logger-creator
provided."). This server registers one type, `tfrecord` (`serving.core.log_collector`).

Example:
    loggers = ServerRequestLogger(Limits(), ("serve",), on_outcome)
    loggers.update(loggers.check(config))      # at each reload; check raises for a bad config
    loggers.log(request, response)             # after each answered request
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from pathlib import Path

from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    logging_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import logging_config_pb2

from serving import errors
from serving.core.log_collector import Limits, LogCollector, Outcome, check_prefix

log = logging.getLogger("serving")

# The collector types this server knows (TF Serving's LogCollector factory registry).
COLLECTOR_TYPES = ("tfrecord",)
# The PredictionLog field each API's request and response go to.
LOG_FIELDS = {
    predict_pb2.PredictRequest: "predict_log",
    classification_pb2.ClassificationRequest: "classify_log",
    regression_pb2.RegressionRequest: "regress_log",
    inference_pb2.MultiInferenceRequest: "multi_inference_log",
}


def model_name_of(request) -> str:
    """The model a request is logged under (MultiInference: its first task's)."""
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name


def effective_sampling(config: logging_config_pb2.LoggingConfig):
    """The SamplingConfig a logger applies, as TF Serving's RequestLogger builds it.

    The first `per_task_sampling_configs` entry that matches this task replaces
    `sampling_rate`. This server has no datacenter and no task index, so only an entry that
    sets neither `dc` nor `task_index` matches.
    """
    sampling = logging_config_pb2.SamplingConfig()
    sampling.CopyFrom(config.sampling_config)
    for rule in sampling.per_task_sampling_configs:
        if not rule.dc and not rule.HasField("task_index"):
            sampling.sampling_rate = rule.sampling_rate
            break
    return sampling


def _check_rate(rate: float, where: str, field: str) -> None:
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise errors.invalid_argument(
            f"{where}: {field} must be between 0 and 1 (the share of requests logged), got {rate}"
        )


class RequestLogger:
    """One logging_config: its sampling, its metadata, and the collector of its prefix."""

    def __init__(self, config, collector: LogCollector, saved_model_tags: tuple[str, ...]):
        self.config = config
        self.sampling = effective_sampling(config)
        self.rate = self.sampling.sampling_rate
        self.collector = collector
        self.tags = saved_model_tags

    def log(self, request, response) -> None:
        # `random() < rate`: 1.0 logs every request and 0.0 none, as TF Serving's sampler.
        if not random.random() < self.rate:
            return
        field = LOG_FIELDS[type(request)]
        metadata = logging_pb2.LogMetadata()
        if isinstance(response, inference_pb2.MultiInferenceResponse):
            if response.results:
                metadata.model_spec.CopyFrom(response.results[0].model_spec)
        else:
            metadata.model_spec.CopyFrom(response.model_spec)
        if not metadata.model_spec.name:
            metadata.model_spec.name = model_name_of(request)
        metadata.sampling_config.CopyFrom(self.sampling)
        metadata.saved_model_tags.extend(self.tags)
        metadata.timestamp_secs = int(time.time())

        def build() -> bytes:
            record = prediction_log_pb2.PredictionLog(log_metadata=metadata)
            entry = getattr(record, field)
            entry.request.CopyFrom(request)
            entry.response.CopyFrom(response)
            return record.SerializeToString()

        size = request.ByteSize() + response.ByteSize() + metadata.ByteSize()
        self.collector.collect(metadata.model_spec.name, size, build)


def _describe(loggers: dict[str, RequestLogger]) -> str:
    """`half at rate 1 to /logs/half; zero at rate 0 to /logs/zero`, by model name."""
    return "; ".join(
        f"{name} at rate {logger.rate:g} to {logger.collector.prefix}"
        for name, logger in sorted(loggers.items())
    )


class ServerRequestLogger:
    """Model name -> request loggers, replaced as a whole at every config reload.

    Loggers are shared by models with the same logging_config, as TF Serving shares them; a
    collector (one per `filename_prefix`) lives on across reloads while a config uses its
    prefix, so a changed sampling rate keeps writing the same files.

    Args:
        limits: File, total and queue sizes of every collector.
        saved_model_tags: `--saved_model_tags`, written into each record's metadata.
        on_outcome: Counts each sampled record's outcome (model, status name).
    """

    def __init__(self, limits: Limits, saved_model_tags: tuple[str, ...], on_outcome: Outcome):
        self.limits, self.tags, self.on_outcome = limits, saved_model_tags, on_outcome
        self._lock = threading.Lock()
        self._loggers: dict[str, RequestLogger] = {}
        self._collectors: dict[Path, LogCollector] = {}

    def check(self, model_server_config) -> dict[str, tuple]:
        """Checks every model's logging_config; nothing changes here.

        Returns:
            model name -> (its LoggingConfig, its absolute prefix), for `update`.

        Raises:
            ServingError: NOT_FOUND for an unknown collector type (TF Serving's text);
                INVALID_ARGUMENT for a sampling rate outside [0, 1], an empty prefix, a folder
                that cannot take files, a custom_logging_config, or two different configs that
                share a prefix.
        """
        checked: dict[str, tuple] = {}
        by_prefix: dict[Path, tuple[str, bytes]] = {}
        for model in model_server_config.model_config_list.config:
            if not model.HasField("logging_config"):
                continue
            config, where = model.logging_config, f"logging_config of model {model.name}"
            kind = config.log_collector_config.type
            if kind not in COLLECTOR_TYPES:
                raise errors.not_found(
                    f"Cannot find LogCollector::Factory for type: {kind} ({where}; this server "
                    f"has: {', '.join(COLLECTOR_TYPES)})"
                )
            if config.HasField("custom_logging_config"):
                raise errors.invalid_argument(
                    f"{where}: custom_logging_config is not supported by this server; remove it"
                )
            sampling = config.sampling_config
            _check_rate(sampling.sampling_rate, where, "sampling_config.sampling_rate")
            for rule in sampling.per_task_sampling_configs:
                _check_rate(rule.sampling_rate, where, "per_task_sampling_configs.sampling_rate")
            prefix = check_prefix(config.log_collector_config.filename_prefix, where)
            key = config.SerializeToString(deterministic=True)
            other = by_prefix.setdefault(prefix, (model.name, key))
            if other[1] != key:
                raise errors.invalid_argument(
                    f"{where}: filename_prefix {prefix} is also the prefix of model {other[0]}, "
                    "whose logging_config differs; models may share a prefix only with the "
                    "same logging_config"
                )
            checked[model.name] = (config, prefix)
        return checked

    def update(self, checked: dict[str, tuple]) -> None:
        """Logs the models of `checked` (from `check`) from now on, and no others."""
        with self._lock:
            shared: dict[bytes, RequestLogger] = {}
            loggers, collectors = {}, {}
            for name, (config, prefix) in checked.items():
                key = config.SerializeToString(deterministic=True)
                if key not in shared:
                    collector = collectors.get(prefix) or self._collectors.get(prefix)
                    if collector is None:
                        collector = LogCollector(prefix, self.limits, self.on_outcome).start()
                    collectors[prefix] = collector
                    shared[key] = RequestLogger(config, collector, self.tags)
                loggers[name] = shared[key]
            retired = [c for p, c in self._collectors.items() if p not in collectors]
            changed = _describe(loggers) != _describe(self._loggers)
            self._loggers, self._collectors = loggers, collectors
        if changed:
            log.info("Request logging: %s", _describe(loggers) or "off")
        for collector in retired:
            collector.close()  # writes what it holds, then ends on its own thread

    def log(self, request, response) -> None:
        """Samples an answered request for its model's logger, if the model has one."""
        logger = self._loggers.get(model_name_of(request))
        if logger is not None:
            logger.log(request, response)

    def close(self, timeout: float) -> None:
        """Stops every collector and waits up to `timeout` s for their queued records."""
        with self._lock:
            collectors, self._collectors, self._loggers = list(self._collectors.values()), {}, {}
        for collector in collectors:
            collector.close()
        deadline = time.monotonic() + timeout
        for collector in collectors:
            collector.join(max(deadline - time.monotonic(), 0.0))
