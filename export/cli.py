"""Command line for export: `python -m export MODEL --run RUN_DIR --base-path MODELS_DIR`.

Example:
    python -m export unet --run runs/unet/slim --base-path models
    # prints models/unet/1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import Parser, fail, parse_args
from common.contract import MODEL_NAMES

PROG = "python -m export"


def build_parser() -> argparse.ArgumentParser:
    """The export CLI's argument parser."""
    p = Parser(prog=PROG, description="Export a training run as a TF Serving model version.")
    p.add_argument("model", choices=MODEL_NAMES, help="which model the run trained")
    p.add_argument("--run", type=Path, required=True, help="the training run folder")
    p.add_argument(
        "--base-path",
        type=Path,
        required=True,
        help="model base path; the version goes to BASE/MODEL/N",
    )
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number (default: highest existing + 1, starting at 1)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the export CLI; returns the process exit code."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    from common.quiet import import_tensorflow
    from training.errors import UserError

    import_tensorflow()
    from export.publish import export_run

    try:
        path = export_run(args.model, args.run, args.base_path, args.version)
    except UserError as exc:
        return fail(PROG, exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was published", file=sys.stderr)
        return 130
    print(path)
    return 0
