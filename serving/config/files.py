"""Text-format config files (models, batching, monitoring, SSL, session) parsed with real protos."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config.protos import batching_parameters_pb2, monitoring_config_pb2, ssl_config_pb2

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


def session_config(
    path: str | Path = "",
    *,
    parallelism: int = 0,
    intra_op: int = 0,
    inter_op: int = 0,
) -> config_pb2.ConfigProto:
    """The ConfigProto every version's Session gets, as `tensorflow_model_server` builds it.

    Args:
        path: `--tensorflow_session_config_file`, a text ConfigProto, or "" for none.
        parallelism: `--tensorflow_session_parallelism`.
        intra_op: `--tensorflow_intra_op_parallelism`.
        inter_op: `--tensorflow_inter_op_parallelism`.

    Returns:
        The file's ConfigProto (or an empty one) with both thread-pool sizes set from the flags:
        intra and inter when either is set, else `parallelism` for both (0 means TF's choice).
        The flags always win over the file's thread counts, as upstream's do.

    Raises:
        ConfigError: the file is unreadable or does not parse, or all three flags are set.
    """
    config = _parse(path, config_pb2.ConfigProto()) if path else config_pb2.ConfigProto()
    if parallelism > 0 and intra_op > 0 and inter_op > 0:
        raise ConfigError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    if intra_op > 0 or inter_op > 0:
        config.intra_op_parallelism_threads = intra_op
        config.inter_op_parallelism_threads = inter_op
    else:
        config.intra_op_parallelism_threads = parallelism
        config.inter_op_parallelism_threads = parallelism
    return config


def read_monitoring_config(path: str | Path) -> monitoring_config_pb2.MonitoringConfig:
    """Parses a `--monitoring_config_file`."""
    return _parse(path, monitoring_config_pb2.MonitoringConfig())


def read_ssl_config(path: str | Path) -> ssl_config_pb2.SSLConfig:
    """Parses and checks an `--ssl_config_file` (TF Serving's `SSLConfig` text proto).

    The file holds the PEM text itself, not paths. Beyond parsing, the key and certificate are
    loaded once here, so a mistake fails start-up with its field named rather than as gRPC's
    bare "Failed to bind" (which reads like a port in use).

    Raises:
        ConfigError: the file is missing or does not parse; server_key or server_cert is empty,
            not PEM, or not a matching pair; custom_ca is not PEM; or client_verify is true
            without a custom_ca to verify client certificates against.
    """
    config = _parse(path, ssl_config_pb2.SSLConfig())
    wanted = {"server_key": "private key", "server_cert": "certificate"}
    for field, what in wanted.items():
        if not getattr(config, field).strip():
            raise ConfigError(
                f"{path}: SSLConfig.{field} is empty; put the server's PEM {what} text "
                f'in it: {field}: "-----BEGIN ..."'
            )
    for field in ("server_key", "server_cert", "custom_ca"):
        value = getattr(config, field)
        if value.strip() and "-----BEGIN " not in value:
            # The usual mistake is a path; anything else is not echoed, as it may be a secret.
            text = value.strip()
            path_like = len(text) < 256 and text.endswith((".pem", ".crt", ".key", ".cert"))
            looks = f" (it looks like a path: {text!r})" if path_like else ""
            raise ConfigError(
                f"{path}: SSLConfig.{field} is not PEM text{looks}; the file holds the PEM "
                "itself (-----BEGIN ... -----END ...), not a path to it"
            )
    if "ENCRYPTED" in config.server_key:
        raise ConfigError(
            f"{path}: SSLConfig.server_key is encrypted; gRPC needs the key unencrypted "
            "(e.g. `openssl pkey -in key.pem -out plain.pem`)"
        )
    if config.client_verify and not config.custom_ca.strip():
        raise ConfigError(
            f"{path}: SSLConfig.client_verify is true but custom_ca is empty; set custom_ca "
            "to the PEM certificate of the CA that signs the client certificates"
        )
    try:
        server_ssl_context(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def server_ssl_context(config: ssl_config_pb2.SSLConfig) -> ssl.SSLContext:
    """A server-side `ssl.SSLContext` with TF Serving's meaning of an SSLConfig.

    client_verify true requires a client certificate that chains to custom_ca (gRPC's
    REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY); false asks for none. An HTTPS server
    can wrap its sockets with it; `read_ssl_config` uses it to check the PEM text.

    Raises:
        ConfigError: the key and certificate do not load as a pair, or custom_ca is not PEM.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # `ssl` loads a key pair only from files, so the PEM text goes through a private temporary
    # folder (mode 0700) that is removed at once.
    with tempfile.TemporaryDirectory(prefix="ssl-config-") as folder:
        key, cert = Path(folder, "key.pem"), Path(folder, "cert.pem")
        key.touch(mode=0o600)
        key.write_text(config.server_key, encoding="utf-8")
        cert.write_text(config.server_cert, encoding="utf-8")
        try:
            # A password callback stops OpenSSL from prompting on the terminal for a key that
            # turns out to be encrypted after all; the empty password then fails to decrypt it.
            context.load_cert_chain(cert, key, password=lambda: b"")
        except ssl.SSLError as error:
            raise ConfigError(
                "SSLConfig.server_key and server_cert do not load as a key pair "
                f"({error.reason or error}); server_cert must be the certificate of server_key"
            ) from None
    if config.custom_ca.strip():
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except ssl.SSLError as error:
            raise ConfigError(
                f"SSLConfig.custom_ca is not a PEM certificate ({error.reason or error})"
            ) from None
    context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_NONE
    return context


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
