"""One conformance check of a version folder: the C++ replay, then (with a run) the comparison.

Example:
    report = check_version(Path("models/unet/1"), run_dir=Path("shipped-runs/unet"))
    print("\\n".join(report.lines()))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from export.conformance.build import ConformanceError, build
from export.conformance.compare import (
    KerasSignatures,
    OutputDiff,
    model_check,
    output_diffs,
    version_model,
    warmup_inputs,
)
from export.conformance.replay import OK, SKIPPED, Replay, replay
from export.warmup import WARMUP_FILE

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass
class Report:
    """What the harness found for one version.

    Attributes:
        version_dir: the version folder checked.
        tags: the MetaGraph tags loaded.
        replay: the C++ loader's verdict and answers.
        run_dir: the training run compared against, or None.
        diffs: per output, the C++ answer against the Keras model's (empty without a run).
        check_failure: why the model's export check failed or could not run; None when it passed.
    """

    version_dir: Path
    tags: tuple[str, ...]
    replay: Replay
    run_dir: Path | None = None
    diffs: list[OutputDiff] = field(default_factory=list)
    check_failure: str | None = None

    @property
    def passed(self) -> bool:
        """Loaded, every record ran and, with a run, every output and the model check passed."""
        return (
            self.replay.passed and all(d.passed for d in self.diffs) and self.check_failure is None
        )

    def lines(self) -> list[str]:
        """The human-readable report, one line per record and per output."""
        from common.quiet import import_tensorflow

        version = import_tensorflow().__version__
        out = [
            f"version  {self.version_dir}",
            f"loader   tensorflow::LoadSavedModel (TensorFlow {version}), tags "
            f"{','.join(self.tags)}: {self.replay.load}",
        ]
        width = max((len(a) for r in self.replay.answers.values() for a in r), default=0)
        diffs = {(d.index, d.alias): d for d in self.diffs}
        for record in self.replay.records:
            status = record.status + (f": {record.message}" if record.message else "")
            out.append(f"record {record.index} {record.signature}: {status}")
            for alias, value in sorted(self.replay.answers.get(record.index, {}).items()):
                dtype = "string" if value.dtype.kind == "O" else str(value.dtype)
                line = f"    {alias:<{width}}  {dtype:<7}  {list(value.shape)!s:<16}"
                diff = diffs.get((record.index, alias))
                if diff is not None:
                    verdict = "OK" if diff.passed else "OVER TOLERANCE"
                    line += f"  max diff {diff.diff:.3g} (tolerance {diff.tolerance:g})  {verdict}"
                out.append(line.rstrip())
        if self.run_dir is not None:
            out.append(f"model check against {self.run_dir}: {self.check_failure or 'OK'}")
        out.append(self.verdict())
        return out

    def verdict(self) -> str:
        """`PASS: ...` or `FAIL: ...`, saying what was checked or what failed."""
        ran = [r for r in self.replay.records if r.status != SKIPPED]
        failed = [r for r in ran if r.status != OK]
        over = [d for d in self.diffs if not d.passed]
        if self.replay.load != OK:
            return "FAIL: the C++ loader could not load this version"
        if not ran:
            return (
                f"FAIL: no predict records in assets.extra/{WARMUP_FILE}; the load passed, "
                "but no request was run"
            )
        if failed or over or self.check_failure:
            return (
                f"FAIL: {len(failed)} of {len(ran)} records failed, {len(over)} outputs over "
                f"tolerance{', model check failed' if self.check_failure else ''}"
            )
        compared = " and match the Keras model" if self.run_dir is not None else ""
        return f"PASS: all {len(ran)} warmup records ran through Session::Run{compared}"


def check_version(
    version_dir: Path,
    run_dir: Path | None = None,
    tags: Sequence[str] = ("serve",),
    binary: Path | None = None,
) -> Report:
    """Loads `version_dir` as TF Serving does, replays its warmup and compares with `run_dir`.

    Args:
        version_dir: a SavedModel version folder (`models/unet/3`).
        run_dir: a training run folder; when given, the answers are compared with its Keras
            model's and judged by the model's export check.
        tags: the MetaGraph tags to load.
        binary: a built checker; built (or taken from the cache) when None.

    Raises:
        ConformanceError (a UserError): a bad folder, a run of another model, no compiler.
    """
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise ConformanceError(f"version folder {version_dir} does not exist")
    if not any((version_dir / name).is_file() for name in SAVED_MODEL_FILES):
        raise ConformanceError(
            f"{version_dir} holds no saved_model.pb; give a version folder such as models/unet/1"
        )
    # The run is checked first, so that a usage error comes before the slow replay.
    if run_dir is not None:
        run_dir = Path(run_dir)
        _check_run(version_dir, run_dir)
    report = Report(version_dir, tuple(tags), replay(binary or build(), version_dir, tags))
    if run_dir is not None:
        _compare(report, run_dir)
    return report


def _check_run(version_dir: Path, run_dir: Path) -> None:
    """The run folder exists and trains the model the version's manifest names."""
    from training.runner import read_run_config

    if not run_dir.is_dir():
        raise ConformanceError(f"run folder {run_dir} does not exist")
    recorded, trained = version_model(version_dir), read_run_config(run_dir).get("model")
    if recorded is not None and recorded != trained:
        raise ConformanceError(
            f"{version_dir} is a {recorded!r} version but {run_dir} trains {trained!r}"
        )


def _compare(report: Report, run_dir: Path) -> None:
    """Fills in the report's per-output differences and the model check's verdict."""
    from training.runner import load_run

    task, config, keras_model = load_run(run_dir)
    contract = task.contract(config)
    reference = KerasSignatures(task.name, keras_model, contract)
    inputs = warmup_inputs(report.version_dir)
    answers = report.replay.answers
    report.run_dir = run_dir
    report.diffs = output_diffs(reference, inputs, answers)
    report.check_failure = model_check(task.name, keras_model, contract, reference, inputs, answers)
