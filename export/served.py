"""Keeps a model base path servable: `make serve` runs this before it starts the server.

For each model, the newest version under the base path must load and run its warmup records
the way TF Serving does (`export.session.check_version`). A model with no version, or whose
newest version fails that check (for example one written before the export tracked Keras 3's
variables), gets a new version exported from its shipped run, with one line saying why. So
does a version whose manifest states an older pre-processing contract (one without a field the
contract has now, such as `max_jpeg_scans`: its graph still checks pixels per request). The
failing version stays on disk: the server refuses it with TF Serving's error, and the new,
higher version is the one a latest-version policy serves.

Example:
    python -m export.served --runs shipped-runs --base-path models unet localizer generator
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import Parser, fail, parse_args
from common.contract import MODEL_NAMES, Preprocessing

PROG = "python -m export.served"


def stale_contract(version_dir: Path) -> str | None:
    """Why a version's manifest predates today's pre-processing contract, or None.

    A version exported before a pre-processing field existed (its manifest's `preprocessing`
    lacks the key) has a graph built by the older rule, so it is exported again; so is one whose
    graph decodes JPEGs at another DCT scale than the contract's `jpeg_margin` says.
    """
    from export.publish import MANIFEST_FILE

    manifest = version_dir / "assets.extra" / MANIFEST_FILE
    try:
        pre = json.loads(manifest.read_text())["contract"]["preprocessing"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pre, dict):
        return None
    missing = [f.name for f in dataclasses.fields(Preprocessing) if f.name not in pre]
    if missing:
        return f"its manifest's pre-processing has no {', '.join(missing)}: an older contract"
    # The DCT-scale rule is one for training, the graph and the client: a graph that decodes
    # JPEGs by another margin would answer REST otherwise than the client's gRPC input.
    margin = Preprocessing(size=(1, 1)).jpeg_margin
    if pre["jpeg_margin"] != margin:
        stated = pre["jpeg_margin"]
        return f"its graph decodes JPEGs by jpeg_margin {stated}, the contract's is {margin}"
    return None


def ensure_servable(model: str, runs: Path, base_path: Path) -> Path | None:
    """Exports `runs/<model>` as a new version unless the newest version already serves.

    Returns:
        The new version folder, or None when the newest version passed the check.
    """
    from export.models.base import ExportCheckError
    from export.publish import existing_versions, export_run
    from export.session import check_version

    versions = existing_versions(base_path / model)
    if versions:
        newest = base_path / model / str(versions[-1])
        stale = stale_contract(newest)
        if stale is not None:
            why = f"{newest} is out of date ({stale})"
        else:
            try:
                check_version(newest)
                return None
            except ExportCheckError as error:
                why = f"{newest} would not serve under TF Serving ({error})"
        print(f"{why}; exporting a new version from {runs / model}", file=sys.stderr)
    return export_run(model, runs / model, base_path)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Export shipped runs where the served versions can't run.")
    p.add_argument("models", nargs="+", choices=MODEL_NAMES, metavar="MODEL")
    p.add_argument("--runs", type=Path, required=True, help="folder of run folders, one a model")
    p.add_argument("--base-path", type=Path, required=True, help="the served model base path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Checks (and where needed exports) each model; returns the process exit code."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    from common.quiet import import_tensorflow
    from training.errors import UserError

    import_tensorflow()
    for model in args.models:
        try:
            made = ensure_servable(model, args.runs, args.base_path)
        except UserError as exc:
            return fail(PROG, exc)
        if made is not None:
            print(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
