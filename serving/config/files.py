"""Text-format config files (model list, batching, monitoring), parsed with TF Serving's protos."""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.config.protos import batching_parameters_pb2, monitoring_config_pb2

# TF Serving's default Prometheus path (`PrometheusExporter::kPrometheusPath`).
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A config file that is missing or does not parse."""


def _parse(path: str | Path, message):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not a UTF-8 text file") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        name = message.DESCRIPTOR.full_name
        raise ConfigError(f"Error parsing text-format {name}: {path}:{error}") from None


def read_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    """Parses a `--model_config_file`."""
    return _parse(path, model_server_config_pb2.ModelServerConfig())


def read_batching_parameters(path: str | Path) -> batching_parameters_pb2.BatchingParameters:
    """Parses a `--batching_parameters_file`."""
    return _parse(path, batching_parameters_pb2.BatchingParameters())


def read_monitoring_config(path: str | Path) -> monitoring_config_pb2.MonitoringConfig:
    """Parses a `--monitoring_config_file`."""
    return _parse(path, monitoring_config_pb2.MonitoringConfig())


def prometheus_path(config: monitoring_config_pb2.MonitoringConfig | None) -> str | None:
    """The metrics path to serve, or None when Prometheus export is off."""
    if config is None or not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config `--model_name`/`--model_base_path` stand for."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


def map_base_paths(
    config: model_server_config_pb2.ModelServerConfig, mapping: str
) -> model_server_config_pb2.ModelServerConfig:
    """Rewrites base paths under PREFIX to DIR, for `--base_path_map=PREFIX=DIR`.

    The same models.config then serves in the container (`/models/unet`) and on the host
    (`./models/unet`). DIR is made absolute because TF Serving requires absolute base paths.
    """
    if not mapping or config.WhichOneof("config") != "model_config_list":
        return config
    prefix, _, target = mapping.partition("=")
    prefix = prefix.rstrip("/") or "/"
    target = os.path.abspath(target)
    mapped = model_server_config_pb2.ModelServerConfig()
    mapped.CopyFrom(config)
    for model in mapped.model_config_list.config:
        path = model.base_path
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            model.base_path = target + path[len(prefix.rstrip("/")) :]
    return mapped
