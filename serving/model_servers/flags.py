"""Command-line flags with `tensorflow_model_server`'s names, defaults and `--flag=value` syntax.

Example:
    python -m serving --port=8500 --rest_api_port=8501 \\
        --model_config_file=serving/models.config --base_path_map=/models=models
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

_CPUS = os.cpu_count() or 1


class FlagError(ValueError):
    """A flag that is unknown, has no value, or has a value of the wrong type."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Server options. Field names are the flag names, so `--port=9000` sets `port`."""

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    max_num_load_retries: int = 5
    # 0 loads (and unloads) one version at a time on the manager's thread, as upstream.
    num_load_threads: int = 0
    num_unload_threads: int = 0
    load_retry_interval_micros: int = 60_000_000
    monitoring_config_file: str = ""
    grpc_max_threads: int = 4 * _CPUS
    grpc_channel_arguments: str = ""
    enable_grpc_healthcheck_service: bool = True
    enable_serialization_as_tensor_content: bool = False
    enable_signature_method_name_check: bool = False
    saved_model_tags: str = "serve"
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    ssl_config_file: str = ""
    version: bool = False
    # Added by this server; tensorflow_model_server has no such flags.
    host: str = "127.0.0.1"
    base_path_map: str = ""
    # Seconds that requests in flight get after SIGTERM/SIGINT before connections are closed.
    drain_seconds: float = 30.0
    # Bytes of decoded input tensors one Predict may declare (gRPC and REST alike); gRPC's
    # message limit follows it.
    max_request_tensor_bytes: int = 512 * 2**20
    # Decoded input bytes of all requests in flight together (RESOURCE_EXHAUSTED above it).
    max_inflight_tensor_bytes: int = 2**30
    # Items (dimension 0 of each input) one request may carry, batching on or off.
    max_request_items: int = 64
    # How long a reload waits for its loads before it answers and frees the next reload: the
    # --model_config_file poller's, and a HandleReloadConfigRequest sent with no deadline (an
    # RPC's own deadline, less a second, bounds it otherwise).
    model_config_reload_timeout_seconds: float = 60.0
    # REST limits: body (413), request head (431), URL (414), time to send the head and the
    # body (408), open connections (503), and how long an idle keep-alive connection stays.
    rest_api_max_body_bytes: int = 64 * 2**20
    rest_api_max_header_bytes: int = 64 * 2**10
    rest_api_max_url_bytes: int = 8 * 2**10
    rest_api_header_timeout_seconds: float = 10.0
    rest_api_body_timeout_seconds: float = 60.0
    # How long a client may take to read an answer before its connection is closed.
    rest_api_write_timeout_seconds: float = 30.0
    rest_api_max_connections: int = 2048
    rest_api_idle_timeout_seconds: float = 75.0
    # How REST :predict answers are written: `compact` (no whitespace, shortest round-trip
    # digits) or `tf_serving` (TF Serving's bytes); the JSON values are the same.
    rest_api_json_layout: str = "compact"
    # Request logging (a model's logging_config): a log file is closed before it passes the
    # first; the files of one filename_prefix stay under the second (the oldest are removed);
    # records waiting for the writer, per prefix, stay under the third (more are dropped).
    request_log_max_file_bytes: int = 64 * 2**20
    request_log_max_total_bytes: int = 2**30
    request_log_max_queued_bytes: int = 64 * 2**20


# Flags tensorflow_model_server accepts that change nothing here (TF runtime tuning, caches,
# profiler). They are accepted so that a production command line runs unchanged.
IGNORED = {
    "flush_filesystem_caches": bool,
    "per_process_gpu_memory_fraction": float,
    "remove_unused_fields_from_bundle_metagraph": bool,
    "enable_profiler": bool,
    "enable_per_model_batching_parameters": bool,
    "xla_cpu_compilation_enabled": bool,
    "xla_gpu_compilation_enabled": bool,
    "skip_initialize_tpu": bool,
    "mixed_precision": str,
    "thread_pool_factory_config_file": str,
}

# Flags whose feature this server does not have; passing them is an error, not a silent no-op.
UNSUPPORTED = {
    "use_alts_credentials": "ALTS",
    "platform_config_file": "platform configs",
    "prefer_tflite_model": "TensorFlow Lite models",
    "num_tflite_pools": "TensorFlow Lite models",
    "num_tflite_interpreters_per_pool": "TensorFlow Lite models",
    "rest_api_enable_cors_support": "CORS",
}

# --rest_api_json_layout's values (serving.rest.json.response.LAYOUTS, kept here so that flags
# do not import the REST package).
JSON_LAYOUTS = ("compact", "tf_serving")

_TYPES = {field.name: field.type for field in dataclasses.fields(Options)}
# Values that only make sense above zero (ours, and thread counts that 0 would deadlock).
_POSITIVE = (
    "grpc_max_threads",
    "rest_api_num_threads",
    "max_request_tensor_bytes",
    "max_inflight_tensor_bytes",
    "max_request_items",
    "model_config_reload_timeout_seconds",
    "rest_api_write_timeout_seconds",
    "rest_api_max_body_bytes",
    "rest_api_max_header_bytes",
    "rest_api_max_url_bytes",
    "rest_api_header_timeout_seconds",
    "rest_api_body_timeout_seconds",
    "rest_api_max_connections",
    "rest_api_idle_timeout_seconds",
    "request_log_max_file_bytes",
    "request_log_max_total_bytes",
    "request_log_max_queued_bytes",
)
# Counts and durations where 0 has a meaning and a negative value has none.
_NON_NEGATIVE = (
    "num_load_threads",
    "num_unload_threads",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "num_request_iterations_for_warmup",
    "drain_seconds",
)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# tensorflow_model_server's integer flags are int32 or int64; none here takes more.
_INT_RANGE = (-(2**63), 2**63 - 1)


def _convert(name: str, kind: str | type, raw: str):
    kind = {"int": int, "str": str, "bool": bool, "float": float}.get(kind, kind)
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise FlagError(f"--{name} expects true or false, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError:
        raise FlagError(f"--{name} expects {kind.__name__}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise FlagError(f"--{name} expects a finite number, got {raw!r}")
    if kind is int and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise FlagError(f"--{name} is out of range (a 64-bit integer), got {raw!r}")
    return value


class ChannelArgument(NamedTuple):
    """One `key=value` item of `--grpc_channel_arguments`."""

    key: str
    # An int when the value reads as a 32-bit integer, else the text (gRPC takes both kinds).
    value: int | str
    # Text after a second '=' in the item, which tensorflow_model_server drops.
    dropped: str = ""


# absl::SimpleAtoi's int32 syntax: ASCII whitespace around, an optional sign, decimal digits.
_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")
_CHANNEL_EXAMPLE = "grpc.max_connection_age_ms=2000,grpc.max_receive_message_length=1048576"


def _channel_value(text: str) -> int | str:
    match = _ATOI.fullmatch(text)
    if match and -(2**31) <= int(match.group(1)) < 2**31:
        return int(match.group(1))
    return text


def parse_grpc_channel_arguments(text: str) -> list[ChannelArgument]:
    """Splits `--grpc_channel_arguments` as tensorflow_model_server does (server.cc).

    The text is split at every ',' and each item at every '='; the key is the first piece and
    the value the second, with no trimming. A value that absl::SimpleAtoi reads as an int32
    (surrounding whitespace and a sign allowed) is passed to gRPC as an integer, any other as a
    string. An empty flag means no arguments.

    Raises:
        FlagError: an item without '=' (an empty one too, from a doubled or trailing comma).
            tensorflow_model_server indexes past the end of its list there (undefined
            behaviour), so such an item is refused rather than guessed at.
    """
    if not text:
        return []
    arguments = []
    for position, item in enumerate(text.split(","), start=1):
        if "=" not in item:
            what = f"{item!r} is not key=value" if item else f"item {position} is empty"
            raise FlagError(
                f"--grpc_channel_arguments={text!r}: {what}; give comma-separated key=value "
                f"pairs, e.g. {_CHANNEL_EXAMPLE}"
            )
        key, value, *rest = item.split("=")
        dropped = "=" + "=".join(rest) if rest else ""
        arguments.append(ChannelArgument(key, _channel_value(value), dropped))
    return arguments


def parse_flags(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """Parses tensorflow_model_server flags.

    Both `--flag=value` and `--flag value` work (one or two dashes). A boolean flag alone means
    true; `--flag=false` turns it off.

    Returns:
        The options and the names of flags that were accepted but have no effect here.

    Raises:
        FlagError: an unknown flag, a missing value or a value of the wrong type.
    """
    values: dict[str, object] = {}
    ignored: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise FlagError(f"unexpected argument {arg!r}; flags look like --port=8500")
        name, has_value, raw = arg.lstrip("-").partition("=")
        name = name.replace("-", "_")
        if name in UNSUPPORTED:
            raise FlagError(f"--{name}: the embedded server does not support {UNSUPPORTED[name]}")
        kind = _TYPES.get(name) or IGNORED.get(name)
        if kind is None:
            raise FlagError(f"unknown flag --{name}; run `python -m serving --help` for the list")
        if not has_value:
            if kind in (bool, "bool"):
                # `--flag` alone is true; `--flag false` is also accepted.
                if i < len(args) and args[i].lower() in _TRUE + _FALSE:
                    raw = args[i]
                    i += 1
                else:
                    raw = "true"
            elif i < len(args):
                raw = args[i]
                i += 1
            else:
                raise FlagError(f"--{name} needs a value")
        value = _convert(name, kind, raw)
        if name in IGNORED:
            ignored.append(name)
        else:
            values[name] = value
    return Options(**values), ignored


def check_options(options: Options) -> None:
    """Rejects combinations tensorflow_model_server rejects (with its texts where it has one)."""
    if options.batching_parameters_file and not options.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if not options.model_config_file and not options.model_base_path:
        raise FlagError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    if options.port == 0 and not options.grpc_socket_path:
        raise FlagError(
            "At least one of server_options.grpc_port or "
            "server_options.grpc_socket_path must be set."
        )
    if not 0 <= options.port < 65536:
        raise FlagError(
            f"--port must be a TCP port (1-65535), or 0 with --grpc_socket_path, got {options.port}"
        )
    parse_grpc_channel_arguments(options.grpc_channel_arguments)
    if not 0 <= options.rest_api_port < 65536:
        raise FlagError(
            f"--rest_api_port must be 0 (off) or a TCP port, got {options.rest_api_port}"
        )
    if options.rest_api_port and options.rest_api_port == options.port:
        raise FlagError(f"--rest_api_port ({options.rest_api_port}) must differ from --port")
    if options.base_path_map and "=" not in options.base_path_map:
        raise FlagError(f"--base_path_map expects PREFIX=DIR, got {options.base_path_map!r}")
    for name in _NON_NEGATIVE:
        value = getattr(options, name)
        if value < 0:
            raise FlagError(f"--{name} must be 0 or more, got {value:g}")
    for name in _POSITIVE:
        value = getattr(options, name)
        if not value > 0:
            raise FlagError(f"--{name} must be greater than 0, got {value:g}")
    if options.request_log_max_total_bytes < options.request_log_max_file_bytes:
        raise FlagError(
            f"--request_log_max_total_bytes ({options.request_log_max_total_bytes}) must be at "
            f"least --request_log_max_file_bytes ({options.request_log_max_file_bytes})"
        )
    if options.rest_api_json_layout not in JSON_LAYOUTS:
        raise FlagError(
            f"--rest_api_json_layout must be one of {', '.join(JSON_LAYOUTS)}, got "
            f"{options.rest_api_json_layout!r}"
        )
    if options.max_inflight_tensor_bytes < options.max_request_tensor_bytes:
        raise FlagError(
            f"--max_inflight_tensor_bytes ({options.max_inflight_tensor_bytes}) must be at "
            f"least --max_request_tensor_bytes ({options.max_request_tensor_bytes})"
        )


def usage() -> str:
    """The flag list with defaults, for --help."""
    lines = [
        "usage: python -m serving [--flag=value ...]",
        "",
        "Flags (tensorflow_model_server's):",
    ]
    for field in dataclasses.fields(Options):
        lines.append(f"  --{field.name}={field.default}")
    lines += [
        "",
        "The flags from --host on are this server's own: the address to bind (default",
        "127.0.0.1); PREFIX=DIR to read a config's base_path PREFIX/... from DIR/...; the",
        "drain deadline after SIGTERM; the bytes of input tensors one Predict may declare",
        "and all requests in flight together; the items one request may carry; how long a",
        'poller reload waits; the REST API\'s limits (README, "Security") and its :predict',
        "answer layout (compact, or tf_serving for TF Serving's bytes); and the sizes of",
        "request-log files, of all files of one prefix, and of records queued for them.",
        f"Accepted and ignored: {', '.join('--' + n for n in sorted(IGNORED))}",
    ]
    return "\n".join(lines)
