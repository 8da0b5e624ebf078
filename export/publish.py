"""Writes a model version atomically: temporary folder, self-check, then one rename.

A polling model server only looks at folders whose names are integers, so the version is
built under a non-integer name in the same model folder (same filesystem) and renamed into
place once it has passed its checks. An interrupted or failed export leaves no numeric folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import keras
import tensorflow as tf

from export.check import check_export, sample_requests
from export.models import export_module
from export.warmup import write_warmup
from training.errors import UserError
from training.runner import load_run, read_run_config

MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-export-"


class ExportError(UserError):
    """A bad run folder, base path or version number."""


def existing_versions(model_dir: Path) -> list[int]:
    """The integer version folders under `model_dir`, ascending (other names are ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def export_run(model_name: str, run_dir: Path, base_path: Path, version: int | None = None) -> Path:
    """Exports the run in `run_dir` as `base_path/<model_name>/<version>/`.

    Args:
        model_name: `unet`, `localizer` or `generator`; must match the run.
        run_dir: a finished training run folder.
        base_path: the model base path shared with the server (`models/`).
        version: the version number; by default the highest existing one plus 1 (or 1).

    Returns:
        The published version folder.

    Raises:
        ExportError: on a missing or incomplete run, a run of another model, an unwritable
            base path or an existing version. ExportCheckError when the self-check fails.
            Nothing numeric is left on disk in either case.
    """
    run_dir, base_path = Path(run_dir), Path(base_path)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {run_dir} does not exist")
    saved = read_run_config(run_dir)
    if saved.get("model") != model_name:
        raise ExportError(
            f"{run_dir} holds a {saved.get('model')!r} run, not {model_name!r}; export it as "
            f"`python -m export {saved.get('model')} --run {run_dir} ...`"
        )
    try:
        task, config, model = load_run(run_dir)
    except UserError:
        raise  # already says what is wrong (a missing file, a mismatched checkpoint)
    except (ValueError, OSError) as exc:
        raise ExportError(
            f"the weights in {run_dir} do not fit the {model_name} model its config.json "
            f"describes: {str(exc).splitlines()[0]}"
        ) from None
    contract = task.contract(config)

    model_dir = base_path / model_name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot write to base path {base_path}: {exc.strerror}") from None
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    if version < 1:
        raise ExportError(f"--version {version} must be a positive integer")
    final = model_dir / str(version)
    if final.exists():
        raise ExportError(
            f"version {final} already exists; versions are never overwritten (omit --version "
            "to take the next free number)"
        )
    tmp = model_dir / f"{TMP_PREFIX}{version}-{os.getpid()}"
    try:
        module = tf.Module()
        module.model = model
        # Keras 3 variables wrap a tf.Variable that the module must track itself: otherwise
        # the MetaGraph's restore op never names them, and TF1's session loader (what
        # tensorflow_model_server links) fails every run with "Could not find variable".
        module.variables_ = [v.value for v in model.variables]
        signatures = export_module(model_name).signatures(module, contract)
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        requests = sample_requests(model_name, config, contract)
        write_warmup(tmp, model_name, requests)
        _write_manifest(tmp, model_name, version, contract, run_dir, saved)
        check_export(tmp, model_name, model, contract, requests)
        tmp.rename(final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"cannot write version under {model_dir}: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_manifest(
    path: Path, model_name: str, version: int, contract, run_dir: Path, saved: dict
) -> None:
    metrics_path = run_dir / "metrics.json"
    manifest = {
        "model": model_name,
        "version": version,
        "contract": contract.to_dict(),
        "training": {
            "run_dir": str(run_dir.resolve()),
            "preset": saved.get("preset"),
            "seed": saved.get("seed"),
            "data": saved.get("data"),
            "config": saved.get("config"),
        },
        "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else {},
        "source_commit": source_commit(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    target = path / "assets.extra" / MANIFEST_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def source_commit() -> str | None:
    """The project's git commit (with `-dirty` if the tree has changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit
