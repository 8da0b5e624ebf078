"""The trained slim models that ship in the repository (`shipped-runs/`), and their manifests.

A clean clone serves the three models without training them: `make serve` exports each one
from `shipped-runs/<model>/`, a run folder cut down to what export and a reader need (config,
metrics, history, weights, the predictions picture) plus a `manifest.json` that records the
exact training command, the git commit it ran at, the metrics and each file's sha256.
`make models` retrains all three from scratch and rewrites the folder:

    python -m training.shipped retrain            # all three, slim preset (about 25 min)
    python -m training.shipped check              # every file against its manifest

`tests/training/test_shipped.py` holds the shipped files to their manifests and to the
current slim presets, and measures each model again on fresh data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli import Parser, fail, parse_args
from common.contract import MODEL_NAMES

PROG = "python -m training.shipped"
ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "shipped-runs"
MANIFEST_FILE = "manifest.json"
# Everything export reads (config.json, model.weights.h5) and what a reader wants to see.
WEIGHTS_FILE = "model.weights.h5"
RUN_FILES = ("config.json", "metrics.json", "history.json", WEIGHTS_FILE)
PICTURES = {"unet": "predictions.png", "localizer": "predictions.png", "generator": "samples.png"}
PRESET, SEED = "slim", 0


def training_command(model: str, run_dir: str, preset: str = PRESET) -> list[str]:
    """The training command line that makes a shipped run (relative to the repository)."""
    return [
        *("python", "-m", "training", model),
        *("--preset", preset, "--seed", str(SEED), "--out", run_dir),
    ]


def sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state(root: Path = ROOT) -> tuple[str | None, list[str]]:
    """The checked-out commit and the paths with uncommitted changes (None, [] outside git)."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None, []
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return commit, [p for p in changed if not p.startswith(FOLDER.name + "/")]


def ship(
    model: str,
    run_dir: Path,
    command: Sequence[str],
    commit: str | None,
    uncommitted: Sequence[str],
    folder: Path = FOLDER,
) -> Path:
    """Copies a finished run's files into `folder/<model>/` and writes its manifest.

    Args:
        model: the model the run trained.
        run_dir: the finished run folder.
        command: the training command line that made the run.
        commit: the git commit the run was trained at.
        uncommitted: paths that differed from `commit` when training started.
        folder: the shipped folder (`shipped-runs/`).

    Returns:
        The shipped run folder. It is replaced as a whole: written beside, then renamed.
    """
    run_dir, target = Path(run_dir), Path(folder) / model
    saved = json.loads((run_dir / "config.json").read_text())
    if saved.get("model") != model:
        raise ValueError(f"{run_dir} holds a {saved.get('model')!r} run, not {model!r}")
    tmp = target.with_name(f".tmp-{model}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [*RUN_FILES, PICTURES[model]]
    for name in names:
        if name == WEIGHTS_FILE:
            _save_servable_weights(run_dir, tmp / name)
        else:
            shutil.copy2(run_dir / name, tmp / name)
    metrics = json.loads((tmp / "metrics.json").read_text())
    manifest = {
        "model": model,
        "command": shlex.join(command),
        "commit": commit,
        "uncommitted_changes": list(uncommitted),
        "trained": dt.datetime.fromtimestamp(
            (run_dir / WEIGHTS_FILE).stat().st_mtime, dt.UTC
        ).isoformat(timespec="seconds"),
        "preset": saved.get("preset"),
        "seed": saved.get("seed"),
        "tensorflow": saved.get("tensorflow"),
        "keras": saved.get("keras"),
        "train_seconds": metrics.get("train_seconds"),
        "train_cpu_seconds": metrics.get("train_cpu_seconds"),
        "metrics": metrics,
        "files": {
            name: {"sha256": sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in names
        },
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def check(model: str, folder: Path = FOLDER) -> list[str]:
    """What is wrong with `folder/<model>/` against its manifest (an empty list when nothing).

    Every listed file must exist with its recorded size and sha256, no unlisted file may sit
    beside them, the manifest's metrics must equal metrics.json, and its command must be the
    slim preset's training command for this model.
    """
    run = Path(folder) / model
    path = run / MANIFEST_FILE
    if not path.is_file():
        return [f"{path} is missing"]
    manifest = json.loads(path.read_text())
    problems = []
    files: dict[str, Any] = manifest.get("files", {})
    for name in [*RUN_FILES, PICTURES[model]]:
        if name not in files:
            problems.append(f"{model}: the manifest does not list {name}")
    for name, want in files.items():
        file = run / name
        if not file.is_file():
            problems.append(f"{model}: {name} is missing")
        elif file.stat().st_size != want["bytes"] or sha256(file) != want["sha256"]:
            problems.append(f"{model}: {name} does not match its sha256 in the manifest")
    extra = sorted({p.name for p in run.iterdir()} - set(files) - {MANIFEST_FILE})
    if extra:
        problems.append(f"{model}: files not in the manifest: {', '.join(extra)}")
    metrics_file = run / "metrics.json"
    if metrics_file.is_file() and json.loads(metrics_file.read_text()) != manifest.get("metrics"):
        problems.append(f"{model}: the manifest's metrics differ from metrics.json")
    argv = shlex.split(manifest.get("command", ""))
    if argv[:4] != ["python", "-m", "training", model] or "--preset" not in argv:
        problems.append(f"{model}: the command {manifest.get('command')!r} does not train {model}")
    elif argv[argv.index("--preset") + 1] != PRESET or manifest.get("preset") != PRESET:
        problems.append(f"{model}: not trained with the {PRESET} preset")
    if not isinstance(manifest.get("commit"), str) or len(manifest["commit"]) != 40:
        problems.append(f"{model}: the manifest records no git commit")
    return problems


def retrain(
    models: Sequence[str],
    folder: Path = FOLDER,
    preset: str = PRESET,
    runs: Path = Path("runs") / "shipped",
) -> list[Path]:
    """Trains each model from scratch into `runs/<model>` and ships the run into `folder`.

    The command runs as its own process from the repository's root, exactly as recorded in
    the manifest. `preset` is for tests (a shipped run must be `slim` to pass `check`).
    """
    commit, uncommitted = git_state()
    shipped = []
    for model in models:
        run_dir = Path(runs) / model
        shutil.rmtree(ROOT / run_dir, ignore_errors=True)
        command = training_command(model, str(run_dir), preset)
        print(f"{PROG}: {shlex.join(command)}", flush=True)
        subprocess.run([sys.executable, *command[1:]], cwd=ROOT, check=True)
        shipped.append(ship(model, ROOT / run_dir, command, commit, uncommitted, folder))
    return shipped


def main(argv: Sequence[str] | None = None) -> int:
    """`retrain [MODEL ...]` or `check [MODEL ...]`; returns the process exit code."""
    parser = Parser(prog=PROG, description="Retrain or check the shipped slim models.")
    parser.add_argument("action", choices=("retrain", "check"))
    parser.add_argument("models", nargs="*", metavar="MODEL", help="default: all three")
    parser.add_argument("--folder", type=Path, default=FOLDER, help="default: shipped-runs/")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    models = args.models or list(MODEL_NAMES)
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        return fail(PROG, f"unknown model {unknown[0]!r}; valid models: {', '.join(MODEL_NAMES)}")
    if args.action == "check":
        problems = [p for model in models for p in check(model, args.folder)]
        for problem in problems:
            fail(PROG, problem)
        return 1 if problems else 0
    try:
        for path in retrain(models, args.folder):
            print(path)
    except subprocess.CalledProcessError as exc:
        return fail(PROG, f"training failed (exit {exc.returncode}); nothing more was shipped", 1)
    return 0


def _save_servable_weights(run_dir: Path, target: Path) -> None:
    """Writes the run's servable model weights alone.

    A run's own copy also holds the optimizer's state (Adam's moments and weight averages
    triple the U-Net's file), which export never reads.
    """
    from common.quiet import import_tensorflow

    import_tensorflow()  # first, so its native start-up notices stay off the output
    from training.runner import load_run

    _, _, model = load_run(run_dir)
    model.save_weights(target)
    # The run's time of training, not the copy's.
    stat = (run_dir / WEIGHTS_FILE).stat()
    os.utime(target, (stat.st_atime, stat.st_mtime))


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    ).stdout


if __name__ == "__main__":
    sys.exit(main())
