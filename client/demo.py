"""End-to-end demo against a running server: writes inputs, runs the client CLI, lists the output.

Usage:
    make serve                      # in another terminal
    python -m client.demo --out out --server 127.0.0.1:8500
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import sys
from pathlib import Path

from PIL import Image

from client import cli
from common.cli import Parser, parse_args
from common.contract import MODEL_NAMES

MODELS = MODEL_NAMES
# The shipped input pictures (package data).
INPUTS = Path(__file__).resolve().parent / "demo_inputs"


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns 0 when every step worked, 1 otherwise (no server, a failed step)."""
    parser = Parser(prog="python -m client.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"), help="output root (default out)")
    parser.add_argument("--server", default="127.0.0.1:8500", metavar="HOST:PORT")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    if not listening(args.server):
        print(
            f"demo: nothing listens on {args.server}; run `make serve` in another terminal "
            "and try again",
            file=sys.stderr,
        )
        return 1
    root = args.out / "demo"
    try:
        inputs = write_inputs(root / "inputs")
    except OSError as error:
        print(f"demo: cannot write inputs under {root}: {error}", file=sys.stderr)
        return 1
    failed = run_steps(root, inputs, args.server)
    print_summary(root)
    if failed:
        print(f"demo: {len(failed)} step(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def listening(address: str) -> bool:
    """Whether something accepts TCP connections at `HOST:PORT`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def write_inputs(folder: Path) -> dict[str, list[Path]]:
    """Copies the demo's input pictures into `folder` and returns their paths by group.

    Groups: `cars` (synthetic car photos, one a JPEG stored sideways with an EXIF orientation
    tag), `shapes` (synthetic single objects, the true class in the name), both shipped in
    `client/demo_inputs/` (made by `training.data.demo_inputs`), and `coins` (scikit-image's
    coins photo).
    """
    from skimage import data as skdata

    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {"cars": [], "shapes": []}
    for source in sorted(INPUTS.iterdir()):
        group = "cars" if source.name.startswith("car-") else "shapes"
        target = folder / source.name
        shutil.copyfile(source, target)
        groups[group].append(target)
    groups["coins"] = [_save(Image.fromarray(skdata.coins()), folder / "coins.png")]
    return groups


def run_steps(root: Path, inputs: dict[str, list[Path]], server: str) -> list[str]:
    """Runs each CLI step in-process, printing its output; returns the names of failed steps."""
    at = ["--server", server]
    steps = [
        ("segment cars (unet)", ["segment", *inputs["cars"], "--out", root / "segment", *at]),
        ("localize shapes", ["localize", *inputs["shapes"], "--out", root / "localize", *at]),
        (
            "generate a 4x4 grid from seeds 0..15",
            ["generate", "--n", "16", "--seed", "0", "--out", root / "generated.png", *at],
        ),
    ]
    coins = ["segment", *inputs["coins"], "--fallback", "only", "--method", "watershed"]
    steps.append(
        ("segment coins (classical watershed, no model)", [*coins, "--out", root / "coins", *at])
    )
    failed = []
    for title, argv in steps:
        argv = [str(a) for a in argv]
        print(f"\n== {title}\n$ python -m client {' '.join(argv)}", flush=True)
        if cli.main(argv) != 0:
            failed.append(title)

    print("\n== model status", flush=True)
    statuses = {}
    for model in MODELS:
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            code = cli.main(["status", model, *at])
        if code != 0:
            failed.append(f"status {model}")
            continue
        statuses[model] = json.loads(captured.getvalue())
        versions = ", ".join(f"{s['version']} {s['state']}" for s in statuses[model])
        print(f"{model}: {versions}")
    (root / "status.json").write_text(json.dumps(statuses, indent=2) + "\n")
    return failed


def print_summary(root: Path) -> None:
    """Lists every file under `root` with its size."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    print(f"\n== {len(files)} files under {root}")
    for path in files:
        print(f"  {path.relative_to(root)!s:<44} {path.stat().st_size / 1024:8.1f} KiB")


def _save(picture: Image.Image, path: Path) -> Path:
    picture.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
