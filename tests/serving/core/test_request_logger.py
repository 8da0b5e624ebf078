"""The request-log collector and the checks of `logging_config`, in process, on real files.

The collector writes real TFRecord files (read back with `tf.data.TFRecordDataset`); its queue
is tested with the writer thread not yet started, so a full queue is certain, not a race.
"""

from __future__ import annotations

import logging
import shutil

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.core.log_collector import FRAMING_BYTES, Limits, LogCollector, log_files
from serving.core.server_request_logger import ServerRequestLogger, effective_sampling
from serving.errors import ServingError
from tests.known_models import tf


class Outcomes:
    """Records each (model, status) the collector reports."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def __call__(self, model: str, status: str) -> None:
        self.seen.append((model, status))

    def count(self, status: str) -> int:
        return sum(s == status for _, s in self.seen)


def payload(i: int, size: int = 100) -> bytes:
    return f"{i:06d}".encode().ljust(size, b".")


def read_back(prefix) -> list[bytes]:
    paths = [str(path) for _, path in log_files(prefix)]
    return [raw.numpy() for raw in tf.data.TFRecordDataset(paths)] if paths else []


def test_files_rotate_the_oldest_go_and_a_restart_numbers_on(tmp_path):
    prefix = tmp_path / "unet"
    limits = Limits(max_file_bytes=1000, max_total_bytes=3000, max_queued_bytes=10**6)
    outcomes = Outcomes()
    collector = LogCollector(prefix, limits, outcomes)
    for i in range(50):  # queued before the writer starts: one batch, in order
        collector.collect("unet", 100, lambda i=i: payload(i))
    collector.start().close()
    assert collector.join(30)
    assert outcomes.count("OK") == 50
    files = log_files(prefix)
    sizes = [path.stat().st_size for _, path in files]
    # 116 bytes a record: 8 to a 1000-byte file; 2 files plus a whole new one fit in 3000.
    assert sizes[:-1] == [8 * (100 + FRAMING_BYTES)] * (len(sizes) - 1)
    assert sum(sizes) <= 3000 and len(files) == 3
    assert [n for n, _ in files] == [4, 5, 6]  # 0-3 were removed, oldest first
    assert read_back(prefix) == [payload(i) for i in range(32, 50)]

    again = LogCollector(prefix, limits, outcomes).start()
    again.collect("unet", 100, lambda: payload(99))
    again.close()
    assert again.join(30)
    assert [n for n, _ in log_files(prefix)] == [5, 6, 7]
    assert read_back(prefix)[-1] == payload(99)


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    prefix = tmp_path / "unet"
    limits = Limits(max_file_bytes=10**6, max_total_bytes=10**7, max_queued_bytes=500)
    outcomes = Outcomes()
    collector = LogCollector(prefix, limits, outcomes)  # no writer yet: nothing drains
    for i in range(6):
        collector.collect("unet", 100, lambda i=i: payload(i))
    # 4 records of 116 bytes fit in 500; the 5th and 6th are dropped at once.
    assert outcomes.seen == [("unet", "RESOURCE_EXHAUSTED")] * 2
    collector.collect("unet", 2_000_000, lambda: b"x")  # bigger than a file: never queued
    assert outcomes.count("RESOURCE_EXHAUSTED") == 3
    collector.start()
    collector.collect("unet", 10, lambda: b"y" * 2_000_000)  # its estimate was too small
    collector.close()
    assert collector.join(30)
    assert outcomes.count("OK") == 4 and outcomes.count("RESOURCE_EXHAUSTED") == 4
    assert read_back(prefix) == [payload(i) for i in range(4)]
    collector.collect("unet", 100, lambda: payload(9))  # closed: cancelled, not queued
    assert outcomes.seen[-1] == ("unet", "CANCELLED")


def test_a_write_failure_is_counted_and_logged_never_raised(tmp_path, caplog):
    folder = tmp_path / "logs"
    folder.mkdir()
    outcomes = Outcomes()
    collector = LogCollector(folder / "unet", Limits(), outcomes)
    shutil.rmtree(folder)  # the folder goes after the config was checked
    collector.collect("unet", 10, lambda: payload(1, 10))
    collector.collect("unet", 10, lambda: payload(2, 10))
    with caplog.at_level(logging.ERROR, logger="serving"):
        collector.start().close()
        assert collector.join(30)
    assert outcomes.seen == [("unet", "UNKNOWN")] * 2
    errors = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1, errors  # once per distinct error


def config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def models(**logging: str) -> str:
    """A config text: one model per keyword, with that `logging_config` body."""
    entries = "".join(
        f'config {{ name: "{name}" base_path: "/m/{name}" model_platform: "tensorflow" '
        f"logging_config {{ {text} }} }} "
        for name, text in logging.items()
    )
    return f"model_config_list {{ {entries}}}"


def one_model(logging_text: str) -> str:
    return models(unet=logging_text)


def collector_text(prefix, kind: str = "tfrecord") -> str:
    return f'log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }}'


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            "sampling_config { sampling_rate: 1.5 }",
            "INVALID_ARGUMENT",
            "logging_config of model unet: sampling_config.sampling_rate must be between 0 and 1",
        ),
        ("sampling_config { sampling_rate: -0.1 }", "INVALID_ARGUMENT", "got -0.1"),
        ("sampling_config { sampling_rate: nan }", "INVALID_ARGUMENT", "got nan"),
        (
            "sampling_config { per_task_sampling_configs { sampling_rate: 2 } }",
            "INVALID_ARGUMENT",
            "per_task_sampling_configs.sampling_rate must be between 0 and 1",
        ),
    ],
)
def test_bad_sampling_rates_are_refused(tmp_path, text, code, message):
    loggers = ServerRequestLogger(Limits(), ("serve",), Outcomes())
    with pytest.raises(ServingError) as caught:
        loggers.check(config(one_model(f"{collector_text(tmp_path / 'u')} {text}")))
    assert caught.value.code.name == code
    assert message in caught.value.message


def test_collector_type_prefix_and_folder_are_checked(tmp_path):
    loggers = ServerRequestLogger(Limits(), ("serve",), Outcomes())

    def refusal(text: str) -> ServingError:
        with pytest.raises(ServingError) as caught:
            loggers.check(config(one_model(text)))
        return caught.value

    error = refusal(collector_text(tmp_path / "u", kind="kafka"))
    assert error.code.name == "NOT_FOUND"
    assert error.message.startswith("Cannot find LogCollector::Factory for type: kafka (")
    assert "this server has: tfrecord" in error.message
    assert "type: " in refusal("sampling_config { sampling_rate: 1 }").message  # no collector
    assert "filename_prefix is empty" in refusal(collector_text("")).message
    assert "names a folder only" in refusal(collector_text(f"{tmp_path}/")).message
    assert "does not exist" in refusal(collector_text(tmp_path / "missing" / "u")).message
    (tmp_path / "file").write_text("")
    assert "is not a folder" in refusal(collector_text(tmp_path / "file" / "u")).message
    # sysfs refuses new files even to root: a real "Permission denied" from the kernel.
    denied = refusal(collector_text("/sys/u")).message
    assert "cannot write request logs in /sys (filename_prefix '/sys/u'): Permission denied" in (
        denied
    )
    custom = collector_text(tmp_path / "u") + (
        ' custom_logging_config { type_url: "type.googleapis.com/x" }'
    )
    assert "custom_logging_config is not supported" in refusal(custom).message
    # Nothing was created by the checks.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_models_share_a_prefix_only_with_the_same_config(tmp_path):
    loggers = ServerRequestLogger(Limits(), ("serve",), Outcomes())
    same = collector_text(tmp_path / "all") + " sampling_config { sampling_rate: 0.5 }"
    other = collector_text(tmp_path / "all") + " sampling_config { sampling_rate: 0.1 }"
    two = config(models(unet=same, localizer=same))
    assert set(loggers.check(two)) == {"unet", "localizer"}
    with pytest.raises(ServingError, match="is also the prefix of model unet"):
        loggers.check(config(models(unet=same, localizer=other)))


def test_per_task_rules_apply_only_without_dc_or_task_index():
    text = """
      sampling_rate: 0.1
      per_task_sampling_configs { dc: "aa" sampling_rate: 1.0 }
      per_task_sampling_configs { task_index: 0 sampling_rate: 0.9 }
      per_task_sampling_configs { sampling_rate: 0.5 }
      per_task_sampling_configs { sampling_rate: 0.7 }
    """
    logging_config = config(one_model(f"sampling_config {{ {text} }}")).model_config_list
    assert effective_sampling(logging_config.config[0].logging_config).sampling_rate == 0.5
