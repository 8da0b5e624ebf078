"""Runs the C++ checker on one version folder and reads back what it printed and answered.

The checker reads the warmup records itself (as dynamic messages built from the descriptor set
written here); Python only hands it the descriptors and parses its report and answers.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.conformance.build import ConformanceError

OK = "OK"
SKIPPED = "SKIPPED"
# The checker's exit status when the load or a run failed (2 is its usage error).
EXIT_FAILED = 1


@dataclass(frozen=True)
class RecordResult:
    """One warmup record as the C++ loader ran it.

    Attributes:
        index: the record's position in the warmup file, from 0.
        signature: the signature it names (`serving_default` when it names none).
        status: `OK`, `SKIPPED` (not a predict_log) or a TF status code such as `NOT_FOUND`.
        message: the status message, empty when OK.
    """

    index: int
    signature: str
    status: str
    message: str = ""


@dataclass
class Replay:
    """The checker's verdict on one version.

    Attributes:
        load: `OK`, or `CODE: message` when LoadSavedModel (or reading the warmup) failed.
        records: one result per warmup record, in file order.
        answers: {record index: {output alias: array}} for every record that ran.
        log: the checker's stderr (TensorFlow's own log lines), for diagnosing a crash.
    """

    load: str
    records: list[RecordResult] = field(default_factory=list)
    answers: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    log: str = ""

    @property
    def passed(self) -> bool:
        """The load and every replayed record succeeded, and at least one record ran."""
        ran = [r for r in self.records if r.status != SKIPPED]
        return self.load == OK and bool(ran) and all(r.status == OK for r in ran)


def descriptor_set() -> bytes:
    """A serialized FileDescriptorSet of prediction_log.proto and everything it imports."""
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file) -> None:
        # Imports first: the C++ side builds the files in this order.
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(out.file.add())

    add(prediction_log_pb2.DESCRIPTOR)
    return out.SerializeToString()


def replay(binary: Path, version_dir: Path, tags: Sequence[str] = ("serve",)) -> Replay:
    """Loads `version_dir` with the C++ loader and replays its warmup records.

    Args:
        binary: the built checker (`export.conformance.build.build()`).
        version_dir: a SavedModel version folder.
        tags: the MetaGraph tags to load, as tensorflow_model_server's `--saved_model_tags`.

    Raises:
        ConformanceError: the checker crashed or printed something it should not.
    """
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        descriptors, answers = Path(tmp) / "prediction_log.desc", Path(tmp) / "answers.tfrecord"
        descriptors.write_bytes(descriptor_set())
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        done = subprocess.run(
            [str(binary), str(version_dir), str(descriptors), str(answers), *tags],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode not in (0, EXIT_FAILED):
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise ConformanceError(
                f"{binary.name} ended with status {done.returncode} on {version_dir}: {tail}"
            )
        result = parse_report(done.stdout)
        result.log = done.stderr
        if answers.is_file():
            signatures = {r.index: r.signature for r in result.records}
            result.answers = read_answers(answers, signatures)
    return result


def parse_report(stdout: str) -> Replay:
    """Parses the checker's tab-separated lines (see the header of savedmodel_check.cc)."""
    result = Replay(load=OK)
    # What failed, when it was not the load itself.
    prefixes = {"load": "", "warmup": "warmup file: ", "answers": "answers file: "}
    for line in stdout.splitlines():
        kind, *fields = line.split("\t")
        if kind == "record" and len(fields) >= 3:
            index, signature, status, *message = fields
            result.records.append(RecordResult(int(index), signature, status, "".join(message)))
        elif kind in prefixes and fields and fields[0] != OK:
            result.load = f"{prefixes[kind]}{fields[0]}: {''.join(fields[1:])}"
        elif kind != "load":
            raise ConformanceError(f"unexpected line from the checker: {line!r}")
    return result


def read_answers(path: Path, signatures: dict[int, str]) -> dict[int, dict[str, np.ndarray]]:
    """Reads the NamedTensorProto records `<index>/<signature>/<alias>` into arrays.

    Args:
        path: the checker's answers file.
        signatures: {record index: signature}, so names holding a `/` still split right.
    """
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    from tensorflow.core.protobuf import named_tensor_pb2

    answers: dict[int, dict[str, np.ndarray]] = {}
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        named = named_tensor_pb2.NamedTensorProto.FromString(record)
        index, rest = named.name.split("/", 1)
        alias = rest.removeprefix(signatures[int(index)] + "/")
        answers.setdefault(int(index), {})[alias] = tf.make_ndarray(named.tensor)
    return answers
