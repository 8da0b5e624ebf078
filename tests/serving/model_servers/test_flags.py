"""Fast unit tests for the model server's flags, config files and Prometheus metrics.

No server process and no model: flag parsing, text-format config reading, base path mapping and
the metrics exposition are checked in-process.
"""

import dataclasses
import itertools
import math
import os
import re
import threading
from pathlib import Path

import pytest

from serving.config import files as config_lib
from serving.model_servers import main as cli
from serving.model_servers import metrics
from serving.model_servers.flags import (
    IGNORED,
    UNSUPPORTED,
    ChannelArgument,
    FlagError,
    Options,
    check_options,
    parse_flags,
    parse_grpc_channel_arguments,
    usage,
)

SERVING_DIR = Path(__file__).resolve().parents[3] / "serving"


# --- flags: parse_flags ---------------------------------------------------------------------


def test_no_flags_gives_defaults():
    options, ignored = parse_flags([])
    assert options == Options()
    assert ignored == []


def test_defaults_match_tensorflow_model_server():
    options = Options()
    assert options.port == 8500
    assert options.rest_api_port == 0
    assert options.rest_api_timeout_in_ms == 30000
    assert options.model_name == "default"
    assert options.file_system_poll_wait_seconds == 1
    assert options.enable_batching is False
    assert options.enable_model_warmup is True
    assert options.saved_model_tags == "serve"
    assert options.host == "127.0.0.1"


@pytest.mark.parametrize(
    "argv",
    [
        ["--port=9000", "--model_name=m"],
        ["--port", "9000", "--model_name", "m"],
        ["-port=9000", "-model_name=m"],
        ["-port", "9000", "-model_name", "m"],
        ["--port=9000", "--model_name", "m"],
    ],
)
def test_value_forms(argv):
    options, ignored = parse_flags(argv)
    assert options.port == 9000
    assert isinstance(options.port, int)
    assert options.model_name == "m"
    assert ignored == []


def test_dashes_in_flag_names_become_underscores():
    options, _ = parse_flags(["--rest-api-port=8501", "--model-base-path", "/m"])
    assert options.rest_api_port == 8501
    assert options.model_base_path == "/m"


def test_value_may_contain_equals_sign():
    options, _ = parse_flags(["--base_path_map=/models=models"])
    assert options.base_path_map == "/models=models"


def test_space_form_value_may_start_with_dash():
    options, _ = parse_flags(["--port", "-1"])
    assert options.port == -1


def test_empty_string_value():
    options, _ = parse_flags(["--model_name="])
    assert options.model_name == ""


def test_last_occurrence_wins():
    options, _ = parse_flags(["--port=1", "--port=2"])
    assert options.port == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=True"], True),
        (["--enable_batching=1"], True),
        (["--enable_batching=yes"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching=FALSE"], False),
        (["--enable_batching=0"], False),
        (["--enable_batching=no"], False),
        (["--enable_batching", "false"], False),
        (["--enable_batching", "true"], True),
        (["--enable_batching", "0"], False),
        (["--enable-batching"], True),
        (["-enable_batching"], True),
    ],
)
def test_boolean_forms(argv, expected):
    options, _ = parse_flags(argv)
    assert options.enable_batching is expected


def test_boolean_flag_followed_by_another_flag_is_true():
    options, _ = parse_flags(["--enable_batching", "--port=9000"])
    assert options.enable_batching is True
    assert options.port == 9000


def test_boolean_flag_followed_by_a_bare_bool_flag():
    options, _ = parse_flags(["--enable_batching", "--enable_model_warmup=false"])
    assert options.enable_batching is True
    assert options.enable_model_warmup is False


def test_boolean_default_true_can_be_turned_off():
    options, _ = parse_flags(["--enable_model_warmup", "false"])
    assert options.enable_model_warmup is False


def test_boolean_does_not_swallow_a_non_boolean_word():
    # `--enable_batching models` means true and then a stray positional argument.
    with pytest.raises(FlagError, match="unexpected argument 'models'"):
        parse_flags(["--enable_batching", "models"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port=abc"], "--port expects int, got 'abc'"),
        (["--port", "abc"], "--port expects int, got 'abc'"),
        (["--port="], "--port expects int, got ''"),
        (["--rest_api_port=1.5"], "--rest_api_port expects int, got '1.5'"),
        (["--enable_batching=maybe"], "--enable_batching expects true or false, got 'maybe'"),
        (["--num_load_threads=x"], "--num_load_threads expects int, got 'x'"),
        (["--drain_seconds=nan"], "--drain_seconds expects a finite number, got 'nan'"),
        (["--drain_seconds=inf"], "--drain_seconds expects a finite number, got 'inf'"),
        (
            ["--rest_api_write_timeout_seconds=-Infinity"],
            "--rest_api_write_timeout_seconds expects a finite number, got '-Infinity'",
        ),
        (
            ["--max_request_items=" + "9" * 30],
            f"--max_request_items is out of range (a 64-bit integer), got '{'9' * 30}'",
        ),
        (
            ["--per_process_gpu_memory_fraction=half"],
            "--per_process_gpu_memory_fraction expects float, got 'half'",
        ),
    ],
)
def test_wrong_types(argv, message):
    with pytest.raises(FlagError) as info:
        parse_flags(argv)
    assert str(info.value) == message


@pytest.mark.parametrize("flag", ["--port", "--model_name", "--model-base-path", "-port"])
def test_missing_value(flag):
    name = flag.lstrip("-").replace("-", "_")
    with pytest.raises(FlagError) as info:
        parse_flags([flag])
    assert str(info.value) == f"--{name} needs a value"


def test_missing_value_after_other_flags():
    with pytest.raises(FlagError, match=r"^--model_config_file needs a value$"):
        parse_flags(["--port=1", "--model_config_file"])


@pytest.mark.parametrize(
    ("arg", "name"), [("--bogus=1", "bogus"), ("--no-such-flag", "no_such_flag")]
)
def test_unknown_flag(arg, name):
    with pytest.raises(FlagError) as info:
        parse_flags(["--port=1", arg])
    assert str(info.value) == (
        f"unknown flag --{name}; run `python -m serving --help` for the list"
    )


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_flags_are_errors(name):
    with pytest.raises(FlagError) as info:
        parse_flags([f"--{name}=x"])
    text = str(info.value)
    assert text.startswith(f"--{name}: ")
    assert UNSUPPORTED[name] in text
    assert "does not support" in text


def test_unsupported_flag_text_and_dashed_name():
    with pytest.raises(FlagError) as info:
        parse_flags(["--use-alts-credentials=true"])
    assert str(info.value) == "--use_alts_credentials: the embedded server does not support ALTS"


def test_unsupported_flag_rejected_even_without_value():
    # Rejected before the value is looked for, so the message names the missing feature.
    with pytest.raises(FlagError, match="CORS"):
        parse_flags(["--rest_api_enable_cors_support"])


def test_ignored_flags_are_returned_not_set():
    options, ignored = parse_flags(
        [
            "--xla_cpu_compilation_enabled=true",
            "--port=9000",
            "--enable_profiler",
            "--tensorflow_session_parallelism",
            "2",
            "--per_process_gpu_memory_fraction=0.5",
            "--flush-filesystem-caches=false",
        ]
    )
    assert ignored == [
        "xla_cpu_compilation_enabled",
        "enable_profiler",
        "per_process_gpu_memory_fraction",
        "flush_filesystem_caches",
    ]
    # The session's thread pools are honoured (serving.config.files.session_config).
    assert options == dataclasses.replace(Options(), port=9000, tensorflow_session_parallelism=2)


def test_ignored_bool_flag_followed_by_flag():
    options, ignored = parse_flags(["--enable_profiler", "--port=7"])
    assert ignored == ["enable_profiler"]
    assert options.port == 7


def test_flag_tables_do_not_overlap():
    fields = {field.name for field in dataclasses.fields(Options)}
    assert not fields & set(IGNORED)
    assert not fields & set(UNSUPPORTED)
    assert not set(IGNORED) & set(UNSUPPORTED)


@pytest.mark.parametrize("arg", ["models", "-", "--", "8500"])
def test_positional_arguments_are_errors(arg):
    with pytest.raises(FlagError) as info:
        parse_flags(["--port=1", arg])
    assert str(info.value) == f"unexpected argument {arg!r}; flags look like --port=8500"


def test_a_parse_leaves_the_next_parse_its_defaults():
    # A parser that set values on a shared Options would leak one call's flags into the next.
    options, _ = parse_flags(["--port=1", "--enable_batching", "--model_name=m"])
    assert (options.port, options.enable_batching, options.model_name) == (1, True, "m")
    assert parse_flags([])[0] == Options()
    assert parse_flags(["--model_name=n"])[0] == dataclasses.replace(Options(), model_name="n")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--port=abc"], "--port expects int, got 'abc'"),
        (["--model_base_path=/m", "--bogus=1"], "unknown flag --bogus; run `python -m serving"),
        (["--port=9000"], "Both server_options.model_base_path and"),
    ],
)
def test_cli_flag_errors_exit_255_with_one_line(capsys, argv, line):
    assert cli.main(argv) == 255
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"python -m serving: {line}")
    assert err.count("\n") == 1 and "Traceback" not in err


# --- flags: check_options -------------------------------------------------------------------


def _options(*argv):
    return parse_flags(list(argv))[0]


def test_check_options_accepts_a_config_file():
    check_options(_options("--model_config_file=m.config", "--rest_api_port=8501"))


def test_check_options_accepts_a_base_path():
    check_options(_options("--model_base_path=/models/m"))


def test_check_options_accepts_batching_file_with_batching():
    check_options(
        _options("--model_base_path=/m", "--enable_batching", "--batching_parameters_file=b")
    )


def test_batching_file_without_enable_batching():
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_base_path=/m", "--batching_parameters_file=b"))
    assert str(info.value) == (
        "server_options.batching_parameters_file is set without setting "
        "server_options.enable_batching to true."
    )


def test_batching_file_with_enable_batching_false():
    with pytest.raises(FlagError, match="batching_parameters_file is set without"):
        check_options(
            _options(
                "--model_base_path=/m", "--enable_batching=false", "--batching_parameters_file=b"
            )
        )


def test_neither_config_file_nor_base_path():
    with pytest.raises(FlagError) as info:
        check_options(_options("--port=9000"))
    assert str(info.value) == (
        "Both server_options.model_base_path and server_options.model_config_file are empty!"
    )


def test_port_zero_without_socket_path():
    # tensorflow_model_server's text (server.cc, Server::BuildAndStart).
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_base_path=/m", "--port=0"))
    assert str(info.value) == (
        "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
    )


def test_port_zero_with_socket_path_is_accepted():
    options = _options("--model_base_path=/m", "--port=0", "--grpc_socket_path=/tmp/s.sock")
    check_options(options)
    assert options.grpc_socket_path == "/tmp/s.sock"


def test_socket_path_with_a_port_is_accepted():
    check_options(_options("--model_base_path=/m", "--grpc_socket_path=relative.sock"))


@pytest.mark.parametrize("extra", [[], ["--grpc_socket_path=/tmp/s.sock"]])
def test_negative_port(extra):
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_base_path=/m", "--port", "-1", *extra))
    assert str(info.value) == (
        "--port must be a TCP port (1-65535), or 0 with --grpc_socket_path, got -1"
    )


def test_rest_port_equal_to_port():
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_base_path=/m", "--port=9000", "--rest_api_port=9000"))
    assert str(info.value) == "--rest_api_port (9000) must differ from --port"


def test_rest_port_default_equal_to_default_port():
    with pytest.raises(FlagError, match=r"\(8500\) must differ"):
        check_options(_options("--model_base_path=/m", "--rest_api_port=8500"))


def test_bad_base_path_map():
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_config_file=c", "--base_path_map=/models"))
    assert str(info.value) == "--base_path_map expects PREFIX=DIR, got '/models'"


def test_good_base_path_map():
    check_options(_options("--model_config_file=c", "--base_path_map=/models=models"))


def test_json_layout_default_and_values():
    assert Options().rest_api_json_layout == "compact"
    for layout in ("compact", "tf_serving"):
        options = _options("--model_base_path=/m", f"--rest_api_json_layout={layout}")
        check_options(options)
        assert options.rest_api_json_layout == layout


def test_bad_json_layout():
    with pytest.raises(FlagError) as info:
        check_options(_options("--model_base_path=/m", "--rest_api_json_layout=pretty"))
    assert str(info.value) == (
        "--rest_api_json_layout must be one of compact, tf_serving, got 'pretty'"
    )


def test_json_layouts_are_the_rest_writers():
    """flags.py keeps its own copy (flags must not import the REST package): the two agree."""
    from serving.model_servers.flags import JSON_LAYOUTS
    from serving.rest.json.response import COMPACT, LAYOUTS

    assert JSON_LAYOUTS == LAYOUTS and Options().rest_api_json_layout == COMPACT


# --- flags: --grpc_channel_arguments -------------------------------------------------------

_EXAMPLE = "grpc.max_connection_age_ms=2000,grpc.max_receive_message_length=1048576"


def test_channel_arguments_empty_flag_means_none():
    # TF's str_util::Split gives no items for an empty text.
    assert parse_grpc_channel_arguments("") == []


def test_channel_arguments_tf_serving_test_harness_values():
    # What TF Serving's own tests pass (tensorflow_model_server_test.py, test base).
    assert parse_grpc_channel_arguments(
        "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,grpc.so_reuseaddr=1"
    ) == [
        ("grpc.max_connection_age_ms", 2000, ""),
        ("grpc.lb_policy_name", "grpclb", ""),
        ("grpc.so_reuseaddr", 1, ""),
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        # absl::SimpleAtoi into an int32: whitespace around and a sign are fine.
        ("42", 42),
        (" 42 ", 42),
        ("\t-7\n", -7),
        ("+5", 5),
        ("007", 7),
        ("-0", 0),
        ("2147483647", 2147483647),
        ("-2147483648", -2147483648),
        # Anything else stays text, as server.cc passes it to gRPC as a string.
        ("2147483648", "2147483648"),
        ("-2147483649", "-2147483649"),
        ("0x10", "0x10"),
        ("1_000", "1_000"),
        ("1.5", "1.5"),
        ("1 2", "1 2"),
        ("- 5", "- 5"),
        ("+", "+"),
        ("\u0663", "\u0663"),  # an Arabic-Indic digit: Python's int() reads it, absl does not
        ("", ""),
        ("grpclb", "grpclb"),
    ],
)
def test_channel_argument_int_or_string(raw, value):
    ((key, parsed, dropped),) = parse_grpc_channel_arguments(f"k={raw}")
    assert (key, dropped) == ("k", "")
    assert parsed == value
    assert type(parsed) is type(value)


def test_channel_argument_keys_are_not_trimmed():
    assert parse_grpc_channel_arguments(" grpc.a =1") == [(" grpc.a ", 1, "")]


def test_channel_argument_empty_key_is_kept():
    assert parse_grpc_channel_arguments("=5") == [("", 5, "")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # server.cc takes the second piece of the split at '=' and drops the rest.
        ("a=b=c", ChannelArgument("a", "b", "=c")),
        ("a==c", ChannelArgument("a", "", "=c")),
        ("a=1=2=3", ChannelArgument("a", 1, "=2=3")),
    ],
)
def test_channel_argument_text_after_a_second_equals_is_dropped(text, expected):
    assert parse_grpc_channel_arguments(text) == [expected]


def test_channel_arguments_keep_order_and_repeats():
    # Repeated keys all reach gRPC, which settles them as it does under TF Serving.
    assert parse_grpc_channel_arguments("a=1,b=x,a=2") == [
        ("a", 1, ""),
        ("b", "x", ""),
        ("a", 2, ""),
    ]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("grpc.foo", "'grpc.foo' is not key=value"),
        ("a=1,grpc.foo,b=2", "'grpc.foo' is not key=value"),
        ("a=1,,b=2", "item 2 is empty"),
        ("a=1,", "item 2 is empty"),
        (",a=1", "item 1 is empty"),
        (",", "item 1 is empty"),
        (" ", "' ' is not key=value"),
    ],
)
def test_malformed_channel_arguments(text, what):
    with pytest.raises(FlagError) as info:
        parse_grpc_channel_arguments(text)
    assert str(info.value) == (
        f"--grpc_channel_arguments={text!r}: {what}; give comma-separated key=value pairs, "
        f"e.g. {_EXAMPLE}"
    )


def test_check_options_refuses_malformed_channel_arguments():
    options = _options("--model_base_path=/m", "--grpc_channel_arguments=a=1,,b=2")
    with pytest.raises(FlagError, match=r"^--grpc_channel_arguments='a=1,,b=2': item 2 is empty;"):
        check_options(options)


def test_check_options_accepts_channel_arguments():
    options = _options(
        "--model_base_path=/m", "--grpc_channel_arguments", "grpc.max_connection_age_ms=1000"
    )
    check_options(options)
    assert options.grpc_channel_arguments == "grpc.max_connection_age_ms=1000"


def test_cli_malformed_channel_arguments(capsys):
    assert cli.main(["--model_base_path=/m", "--grpc_channel_arguments=grpc.foo"]) == 255
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "python -m serving: --grpc_channel_arguments='grpc.foo': 'grpc.foo' is not key=value; "
        f"give comma-separated key=value pairs, e.g. {_EXAMPLE}\n"
    )


def test_cli_port_zero_without_socket(capsys):
    assert cli.main(["--model_base_path=/m", "--port=0"]) == 255
    assert capsys.readouterr().err == (
        "python -m serving: At least one of server_options.grpc_port or "
        "server_options.grpc_socket_path must be set.\n"
    )


# --- flags: usage ---------------------------------------------------------------------------


def test_usage_lists_every_flag_with_default():
    text = usage()
    assert text.startswith("usage: python -m serving")
    for field in dataclasses.fields(Options):
        assert f"  --{field.name}={field.default}\n" in text + "\n"
    assert "  --port=8500\n" in text
    assert "  --model_name=default\n" in text


def test_usage_names_ignored_flags_but_not_unsupported_ones():
    text = usage()
    for name in IGNORED:
        assert f"--{name}" in text
    for name in UNSUPPORTED:
        assert f"--{name}" not in text


# --- cli.main in-process --------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--help", "-h", "-help"])
def test_cli_help(flag, capsys):
    assert cli.main(["--port=1", flag]) == 0
    out, err = capsys.readouterr()
    assert out == usage() + "\n"
    assert "--model_config_file=" in out
    assert err == ""


def test_cli_unknown_flag(capsys):
    assert cli.main(["--bogus=1"]) == 255
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "python -m serving: unknown flag --bogus; run `python -m serving --help` for the list\n"
    )
    assert err.count("\n") == 1


def test_cli_check_options_error(capsys):
    assert cli.main(["--port=9000"]) == 255
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().endswith("model_config_file are empty!")
    assert err.count("\n") == 1


def test_cli_version_with_a_model(capsys):
    assert cli.main(["--version", "--model_base_path=/m"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("TensorFlow ModelServer")
    assert err == ""


def test_cli_version_alone(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("TensorFlow ModelServer")


# --- config files ---------------------------------------------------------------------------


READERS = [
    (config_lib.read_model_server_config, "tensorflow.serving.ModelServerConfig"),
    (config_lib.read_batching_parameters, "tensorflow.serving.BatchingParameters"),
    (config_lib.read_monitoring_config, "tensorflow.serving.MonitoringConfig"),
]


@pytest.mark.parametrize(("reader", "full_name"), READERS)
def test_bad_file_names_the_message_and_path(tmp_path, reader, full_name):
    path = tmp_path / "bad.config"
    path.write_text("no_such_field: 1\n")
    with pytest.raises(config_lib.ConfigError) as info:
        reader(path)
    text = str(info.value)
    assert text.startswith(f"Error parsing text-format {full_name}: {path}:1:")
    assert 'has no field named "no_such_field"' in text


@pytest.mark.parametrize("reader", [reader for reader, _ in READERS])
def test_missing_file(tmp_path, reader):
    path = tmp_path / "missing.config"
    with pytest.raises(config_lib.ConfigError) as info:
        reader(path)
    assert str(info.value) == f"cannot read {path}: No such file or directory"


@pytest.mark.parametrize("reader", [reader for reader, _ in READERS])
def test_directory_instead_of_file(tmp_path, reader):
    with pytest.raises(config_lib.ConfigError, match=r"^cannot read .*: Is a directory$"):
        reader(str(tmp_path))


def test_syntax_error_reports_line(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('model_config_list {\n  config { name: "a" }\n  config { name: }\n}\n')
    with pytest.raises(
        config_lib.ConfigError, match=rf"ModelServerConfig: {re.escape(str(path))}:3:"
    ):
        config_lib.read_model_server_config(path)


def test_wrong_value_type_is_config_error(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text('max_batch_size { value: "many" }\n')
    with pytest.raises(config_lib.ConfigError, match="BatchingParameters"):
        config_lib.read_batching_parameters(path)


def test_config_error_is_a_value_error():
    assert issubclass(config_lib.ConfigError, ValueError)


def test_shipped_config_files_parse():
    models = config_lib.read_model_server_config(SERVING_DIR / "models.config")
    names = [model.name for model in models.model_config_list.config]
    assert names == ["unet", "localizer", "generator"]
    assert all(m.base_path.startswith("/models/") for m in models.model_config_list.config)
    batching = config_lib.read_batching_parameters(SERVING_DIR / "batching.config")
    assert batching.max_batch_size.value == 16
    assert batching.batch_timeout_micros.value == 2000
    monitoring = config_lib.read_monitoring_config(str(SERVING_DIR / "monitoring.config"))
    assert config_lib.prometheus_path(monitoring) == "/monitoring/prometheus/metrics"


def _monitoring(tmp_path, text):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    return config_lib.read_monitoring_config(path)


def test_prometheus_path_default(tmp_path):
    config = _monitoring(tmp_path, "prometheus_config { enable: true }\n")
    assert config_lib.prometheus_path(config) == config_lib.DEFAULT_PROMETHEUS_PATH
    assert config_lib.DEFAULT_PROMETHEUS_PATH == "/monitoring/prometheus/metrics"


def test_prometheus_path_custom(tmp_path):
    config = _monitoring(tmp_path, 'prometheus_config { enable: true path: "/metrics" }\n')
    assert config_lib.prometheus_path(config) == "/metrics"


@pytest.mark.parametrize(
    "text",
    ["", "prometheus_config { enable: false }\n", 'prometheus_config { path: "/metrics" }\n'],
)
def test_prometheus_disabled(tmp_path, text):
    assert config_lib.prometheus_path(_monitoring(tmp_path, text)) is None


def test_prometheus_no_config():
    assert config_lib.prometheus_path(None) is None


def test_single_model_config():
    config = config_lib.single_model_config("half", "/models/half")
    assert config.WhichOneof("config") == "model_config_list"
    (model,) = config.model_config_list.config
    assert model.name == "half"
    assert model.base_path == "/models/half"
    assert model.model_platform == "tensorflow"


# --- map_base_paths -------------------------------------------------------------------------


def _config(*base_paths):
    config = config_lib.single_model_config("m0", base_paths[0])
    for i, path in enumerate(base_paths[1:], start=1):
        model = config.model_config_list.config.add()
        model.name, model.base_path = f"m{i}", path
    return config


def _paths(config):
    return [model.base_path for model in config.model_config_list.config]


def test_map_base_paths_prefix_boundaries(tmp_path):
    config = _config("/models/unet", "/models", "/models2/x", "/modelsx", "/other/models/y")
    target = str(tmp_path / "m")
    mapped = config_lib.map_base_paths(config, f"/models={target}")
    assert _paths(mapped) == [
        f"{target}/unet",
        target,
        "/models2/x",
        "/modelsx",
        "/other/models/y",
    ]
    # The input is not changed.
    assert _paths(config)[0] == "/models/unet"


def test_map_base_paths_trailing_slashes(tmp_path):
    config = _config("/models/unet", "/models2/x")
    mapped = config_lib.map_base_paths(config, f"/models/={tmp_path}/")
    assert _paths(mapped) == [f"{tmp_path}/unet", "/models2/x"]


def test_map_base_paths_relative_target_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mapped = config_lib.map_base_paths(_config("/models/unet"), "/models=models")
    (path,) = _paths(mapped)
    assert os.path.isabs(path)
    assert path == os.path.join(os.getcwd(), "models", "unet")


def test_map_base_paths_dot_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mapped = config_lib.map_base_paths(_config("/models/a/b"), "/models=./x/../y")
    assert _paths(mapped) == [os.path.join(os.getcwd(), "y", "a", "b")]


def test_map_base_paths_root_prefix(tmp_path):
    mapped = config_lib.map_base_paths(_config("/models/unet"), f"/={tmp_path}")
    assert _paths(mapped) == [f"{tmp_path}/models/unet"]


def test_map_base_paths_keeps_other_fields(tmp_path):
    config = _config("/models/unet")
    config.model_config_list.config[0].model_version_policy.latest.num_versions = 2
    mapped = config_lib.map_base_paths(config, f"/models={tmp_path}")
    model = mapped.model_config_list.config[0]
    assert model.name == "m0"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2


def test_map_base_paths_no_mapping_is_identity():
    config = _config("/models/unet")
    assert config_lib.map_base_paths(config, "") is config


def test_map_base_paths_without_model_list():
    config = config_lib.model_server_config_pb2.ModelServerConfig()
    assert config_lib.map_base_paths(config, "/models=models") is config


def test_map_base_paths_no_match_untouched(tmp_path):
    config = _config("/data/unet", "models/unet")
    mapped = config_lib.map_base_paths(config, f"/models={tmp_path}")
    assert _paths(mapped) == ["/data/unet", "models/unet"]


# --- metrics --------------------------------------------------------------------------------


def test_render_has_help_and_type_for_every_metric():
    text = metrics.Metrics().render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "# HELP :tensorflow:serving:request_count The total number of requests." in lines
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    assert "# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram" in lines
    helps = [line for line in lines if line.startswith("# HELP ")]
    types = [line for line in lines if line.startswith("# TYPE ")]
    # TF Serving's six, its request_log_count, TensorFlow's two SavedModel load metrics, and
    # the embedded server's version state and per-version latency.
    assert len(helps) == len(types) == 11
    # Each TYPE line follows its HELP line.
    for help_line in helps:
        name = help_line.split()[2]
        assert lines[lines.index(help_line) + 1].startswith(f"# TYPE {name} ")
    # No samples before anything is recorded.
    assert all(line.startswith("#") for line in lines)


def test_counter_has_no_total_suffix():
    m = metrics.Metrics()
    m.request_count.inc("unet", "OK")
    m.request_count.inc("unet", "OK")
    m.request_count.inc("unet", "INVALID_ARGUMENT")
    text = m.render()
    assert "_total" not in text
    assert ':tensorflow:serving:request_count{model_name="unet",status="OK"} 2\n' in text
    assert (
        ':tensorflow:serving:request_count{model_name="unet",status="INVALID_ARGUMENT"} 1\n' in text
    )
    assert m.request_count.value("unet", "OK") == 2
    assert m.request_count.value("absent", "OK") == 0


def test_counter_fractional_amount_and_no_labels():
    counter = metrics.Counter("c", "help", ())
    counter.inc(amount=1.5)
    counter.inc()
    assert counter.samples() == ["c 2.5"]


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ('say "hi"', r"say \"hi\""),
        ("a\\b", r"a\\b"),
        ("line1\nline2", r"line1\nline2"),
        ('\\"\n', r"\\\"\n"),
        ("plain", "plain"),
    ],
)
def test_label_escaping(value, escaped):
    counter = metrics.Counter("c", "help", ("model_name",))
    counter.inc(value)
    (line,) = counter.samples()
    assert line == f'c{{model_name="{escaped}"}} 1'
    assert "\n" not in line


def test_histogram_cumulative_buckets():
    histogram = metrics.Histogram("h", "help", ("model_name",), buckets=(1, 2.5, 5))
    for value in (0.5, 1, 2, 3, 100):
        histogram.observe(value, "m")
    assert histogram.samples() == [
        'h_bucket{model_name="m",le="1"} 2',
        'h_bucket{model_name="m",le="2.5"} 3',
        'h_bucket{model_name="m",le="5"} 4',
        'h_bucket{model_name="m",le="+Inf"} 5',
        'h_sum{model_name="m"} 106.5',
        'h_count{model_name="m"} 5',
    ]
    assert histogram.count("m") == 5
    assert histogram.count("other") == 0


def test_histogram_series_are_separate_and_sorted():
    histogram = metrics.Histogram("h", "help", ("model_name",), buckets=(10,))
    histogram.observe(20, "b")
    histogram.observe(5, "a")
    assert histogram.samples() == [
        'h_bucket{model_name="a",le="10"} 1',
        'h_bucket{model_name="a",le="+Inf"} 1',
        'h_sum{model_name="a"} 5',
        'h_count{model_name="a"} 1',
        'h_bucket{model_name="b",le="10"} 0',
        'h_bucket{model_name="b",le="+Inf"} 1',
        'h_sum{model_name="b"} 20',
        'h_count{model_name="b"} 1',
    ]


def test_latency_histogram_in_render():
    m = metrics.Metrics()
    m.request_latency.observe(15.0, "unet", "predict", "rest")
    text = m.render()
    name = ":tensorflow:serving:request_latency"
    labels = 'model_name="unet",API="predict",entrypoint="rest"'
    buckets = [line for line in text.splitlines() if line.startswith(f"{name}_bucket{{")]
    assert len(buckets) == len(metrics.LATENCY_BUCKETS_US) + 1 == 34
    assert buckets[0] == f'{name}_bucket{{{labels},le="10"}} 0'
    assert buckets[1] == f'{name}_bucket{{{labels},le="18"}} 1'
    assert buckets[-1] == f'{name}_bucket{{{labels},le="+Inf"}} 1'
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert counts == sorted(counts)
    assert f"{name}_sum{{{labels}}} 15\n" in text
    assert f"{name}_count{{{labels}}} 1\n" in text


def test_latency_buckets_are_tf_servings():
    buckets = metrics.LATENCY_BUCKETS_US
    assert len(buckets) == 33
    assert buckets[0] == 10
    assert all(math.isclose(b / a, 1.8) for a, b in itertools.pairwise(buckets))


def test_concurrent_updates_are_not_lost():
    counter = metrics.Counter("c", "help", ("k",))
    histogram = metrics.Histogram("h", "help", ("k",), buckets=(0.5,))
    threads_n, per_thread = 8, 2000
    start = threading.Barrier(threads_n)

    def work(index):
        start.wait()
        for i in range(per_thread):
            counter.inc("x")
            histogram.observe(i % 2, "x")
            if i % 100 == 0:
                counter.samples()
                histogram.samples()
        counter.inc(f"t{index}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    total = threads_n * per_thread
    assert counter.value("x") == total
    assert histogram.count("x") == total
    assert all(counter.value(f"t{i}") == 1 for i in range(threads_n))
    samples = histogram.samples()
    assert samples[0] == f'h_bucket{{k="x",le="0.5"}} {total // 2}'
    assert samples[1] == f'h_bucket{{k="x",le="+Inf"}} {total}'
    assert samples[2] == f'h_sum{{k="x"}} {total // 2}'


def test_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "models.config"
    path.write_bytes(b"\xff\xfe\x00model_config_list {}")
    with pytest.raises(config_lib.ConfigError, match="not a UTF-8 text file"):
        config_lib.read_model_server_config(path)


@pytest.mark.parametrize("flag", ["--port=70000", "--rest_api_port=-1"])
def test_ports_out_of_range(flag):
    options, _ = parse_flags(["--model_base_path=/m", flag])
    with pytest.raises(FlagError, match="TCP port"):
        check_options(options)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--drain_seconds=-1", "--drain_seconds must be 0 or more, got -1"),
        (
            "--max_request_tensor_bytes=0",
            "--max_request_tensor_bytes must be greater than 0, got 0",
        ),
        (
            "--rest_api_max_body_bytes=-5",
            "--rest_api_max_body_bytes must be greater than 0, got -5",
        ),
        (
            "--rest_api_header_timeout_seconds=0",
            "--rest_api_header_timeout_seconds must be greater than 0, got 0",
        ),
        ("--grpc_max_threads=0", "--grpc_max_threads must be greater than 0, got 0"),
        ("--rest_api_num_threads=-2", "--rest_api_num_threads must be greater than 0, got -2"),
        ("--max_request_items=0", "--max_request_items must be greater than 0, got 0"),
        ("--num_load_threads=-1", "--num_load_threads must be 0 or more, got -1"),
        ("--max_num_load_retries=-3", "--max_num_load_retries must be 0 or more, got -3"),
        (
            "--max_inflight_tensor_bytes=1000",
            "--max_inflight_tensor_bytes (1000) must be at least --max_request_tensor_bytes "
            "(536870912)",
        ),
    ],
)
def test_limits_must_be_positive(flag, message):
    options, _ = parse_flags(["--model_base_path=/m", flag])
    with pytest.raises(FlagError) as info:
        check_options(options)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "flag", ["--drain_seconds=nan", "--grpc_max_threads=0", "--num_unload_threads=-1"]
)
def test_cli_out_of_range_flags_exit_255_with_one_line(flag, capsys):
    assert cli.main(["--model_base_path=/m", flag]) == 255
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"python -m serving: {flag.partition('=')[0]} ")
    assert err.count("\n") == 1
