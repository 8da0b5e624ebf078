"""Command line: `python -m export.conformance VERSION_DIR [--run RUN_DIR] [--tags serve]`.

Example:
    python -m export.conformance models/unet/1 --run shipped-runs/unet
    # one line per warmup record and output, then PASS or FAIL; exit 0, 1 (FAIL) or 2 (usage)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common.cli import Parser, fail, parse_args

PROG = "python -m export.conformance"


def build_parser() -> argparse.ArgumentParser:
    """The conformance CLI's argument parser."""
    p = Parser(
        prog=PROG,
        description="Load a SavedModel version with TensorFlow's C++ loader (the one "
        "tensorflow_model_server links) and run every warmup record through Session::Run.",
    )
    p.add_argument("version_dir", type=Path, help="a version folder, such as models/unet/1")
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a training run folder; compare the answers with its Keras model",
    )
    p.add_argument(
        "--tags",
        default="serve",
        help="comma-separated MetaGraph tags, as --saved_model_tags (default: serve)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the harness; returns 0 on PASS, 1 on FAIL and 2 on usage errors."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    tags = tuple(t.strip() for t in args.tags.split(",") if t.strip())
    if not tags:
        return fail(PROG, f"--tags {args.tags!r} names no tag; the usual one is `serve`")
    from common.quiet import import_tensorflow
    from training.errors import UserError

    import_tensorflow()
    from export.conformance.harness import check_version

    try:
        report = check_version(args.version_dir, args.run, tags)
    except UserError as exc:
        return fail(PROG, exc)
    print("\n".join(report.lines()))
    return 0 if report.passed else 1
