"""TF Serving's LogCollector for request logs: rotated, size-capped TFRecord files, written on a
thread so that a request never waits for the disk.

A collector owns one `filename_prefix`. Records go to `<prefix>.<NNNNNN>.tfrecord`, numbered on
from the highest number already there, so a restart never writes over an older file. A file is
closed before a record would take it past `max_file_bytes`; before a new one is opened, the
oldest files of the prefix are removed until the files left plus a whole new file fit in
`max_total_bytes`, so the prefix never holds more than that and keeps the newest traffic.

Requests hand records over through a queue bounded in bytes. When a record does not fit (the
writer is behind, or it is bigger than a file), it is dropped and counted; the request goes on.

Example:
    collector = LogCollector(Path("/var/log/serving/unet"), limits, on_outcome)
    collector.start()
    collector.collect("unet", size, build)   # build() -> the serialized record, on the writer
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving import errors

log = logging.getLogger("serving")

SUFFIX = ".tfrecord"
# TFRecord framing around each record: length (8), its CRC (4), the data's CRC (4).
FRAMING_BYTES = 16
# The status names a record's outcome is counted under (`request_log_count`'s status_code).
OK, DROPPED, CANCELLED, WRITE_FAILED = "OK", "RESOURCE_EXHAUSTED", "CANCELLED", "UNKNOWN"

Outcome = Callable[[str, str], None]  # (model name, status code name)


@dataclass(frozen=True)
class Limits:
    """How much request logging may hold on disk and in memory.

    Attributes:
        max_file_bytes: a file is closed before a record would take it past this.
        max_total_bytes: all files of one prefix together.
        max_queued_bytes: records waiting for the writer, per prefix.
    """

    max_file_bytes: int = 64 * 2**20
    max_total_bytes: int = 2**30
    max_queued_bytes: int = 64 * 2**20


def check_prefix(prefix: str, where: str) -> Path:
    """The absolute prefix of `filename_prefix`, once its folder is known to take new files.

    Args:
        prefix: `log_collector_config.filename_prefix` (relative to the working folder).
        where: What names the config in errors (`logging_config of model unet`).

    Raises:
        ServingError: INVALID_ARGUMENT for an empty prefix, one naming a folder only, or a folder
            that is missing or where a file cannot be created.
    """
    if not prefix:
        raise errors.invalid_argument(
            f"{where}: log_collector_config.filename_prefix is empty; set it to a path and "
            'file-name prefix for the log files, e.g. "/var/log/serving/requests"'
        )
    if prefix.endswith(("/", os.sep)):
        raise errors.invalid_argument(
            f"{where}: log_collector_config.filename_prefix {prefix!r} names a folder only; "
            f'add a file-name prefix, e.g. "{prefix}requests"'
        )
    path = Path(os.path.abspath(prefix))
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise errors.invalid_argument(
            f"{where}: the folder of filename_prefix {prefix!r}, {folder}, {what}; create it "
            "or change filename_prefix"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".request-log-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise errors.invalid_argument(
            f"{where}: cannot write request logs in {folder} (filename_prefix {prefix!r}): "
            f"{error.strerror}"
        ) from None
    return path


def log_files(prefix: Path) -> list[tuple[int, Path]]:
    """The files of a prefix as (number, path), oldest first."""
    pattern = re.compile(re.escape(prefix.name) + r"\.(\d+)" + re.escape(SUFFIX))
    try:
        names = os.listdir(prefix.parent)
    except OSError:
        return []
    found = [(int(m.group(1)), prefix.parent / n) for n in names if (m := pattern.fullmatch(n))]
    return sorted(found)


class LogCollector:
    """Writes the records of one `filename_prefix`, rotated and capped, on its own thread.

    Args:
        prefix: The checked prefix (`check_prefix`).
        limits: File, total and queue sizes.
        on_outcome: Called once per record handed over, with its model and status name: OK
            when written, RESOURCE_EXHAUSTED when dropped (queue full, or larger than a file),
            UNKNOWN when writing failed, CANCELLED when the collector was closing.
    """

    def __init__(self, prefix: Path, limits: Limits, on_outcome: Outcome):
        self.prefix, self.limits, self.on_outcome = prefix, limits, on_outcome
        self._queue: deque[tuple[str, int, Callable[[], bytes]]] = deque()
        self._queued_bytes = 0
        self._closing = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"request-log {prefix.name}", daemon=True
        )
        self._writer = None
        self._file_bytes = 0
        self._last_error = ""

    def start(self) -> LogCollector:
        self._thread.start()
        return self

    def collect(self, model: str, size: int, build: Callable[[], bytes]) -> None:
        """Hands a record over without waiting; `build()` makes its bytes on the writer thread.

        Args:
            model: The model the record is counted under.
            size: The record's size in bytes (as estimated by the caller).
            build: Returns the serialized record.
        """
        size += FRAMING_BYTES
        with self._cv:
            if self._closing:
                outcome = CANCELLED
            elif (
                size > self.limits.max_file_bytes
                or self._queued_bytes + size > self.limits.max_queued_bytes
            ):
                outcome = DROPPED
            else:
                self._queue.append((model, size, build))
                self._queued_bytes += size
                self._cv.notify()
                return
        self.on_outcome(model, outcome)

    def close(self) -> None:
        """Stops taking records; the writer writes those queued, closes its file and ends."""
        with self._cv:
            self._closing = True
            self._cv.notify()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the writer to end; True when it has."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                batch, self._queue = self._queue, deque()
                self._queued_bytes = 0
                done = self._closing and not batch
            if done:
                self._close_file()
                return
            for model, size, build in batch:
                self.on_outcome(model, self._write(build, size))
            self._flush()

    def _write(self, build: Callable[[], bytes], size: int) -> str:
        try:
            data = build()
            if len(data) + FRAMING_BYTES > self.limits.max_file_bytes:
                return DROPPED  # the caller's size was an estimate; a file never holds more
            if self._writer is not None and (
                self._file_bytes + len(data) + FRAMING_BYTES > self.limits.max_file_bytes
            ):
                self._close_file()
            if self._writer is None:
                self._open_next()
            self._writer.write(data)
            self._file_bytes += len(data) + FRAMING_BYTES
            return OK
        except Exception as error:  # a full disk, a removed folder: counted, logged, never raised
            self._failed(error)
            return WRITE_FAILED

    def _open_next(self) -> None:
        import tensorflow as tf

        files = log_files(self.prefix)
        number = files[-1][0] + 1 if files else 0
        sizes = [(path, _size(path)) for _, path in files]
        total = sum(size for _, size in sizes)
        # The oldest files go until a whole new file fits under the cap.
        while sizes and total + self.limits.max_file_bytes > self.limits.max_total_bytes:
            path, size = sizes.pop(0)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        path = self.prefix.parent / f"{self.prefix.name}.{number:06d}{SUFFIX}"
        self._writer = tf.io.TFRecordWriter(str(path))
        self._file_bytes = 0

    def _flush(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except Exception as error:
            self._failed(error)

    def _close_file(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as error:
                self._failed(error)

    def _failed(self, error: Exception) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self._last_error:  # once per distinct error, not once per record
            log.error("Request log %s: cannot write: %s", self.prefix, text)
            self._last_error = text
        writer, self._writer = self._writer, None
        if writer is not None:
            # The file is already failing; the next record opens a new one.
            with contextlib.suppress(Exception):
                writer.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
