"""The fast-path table: every ratio `make bench` measured, beside its goal.

Reads the JSON files the benchmarks wrote under out/bench/ (each ratio was measured within one
run of its benchmark) and prints one table; exits 1 when a file is missing.

Example:
    python -m benchmarks.summary
"""

from __future__ import annotations

import argparse
import json
import operator
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file, path to the figure inside it, what it is, comparison, goal)
ROWS = (
    (
        "serving",
        ("ratios", "grpc_over_in_process_p50"),
        "gRPC Predict p50 / in-process",
        "<=",
        1.10,
    ),
    ("serving", ("ratios", "rest_over_grpc_p50"), "REST :predict p50 / gRPC", "<=", 1.3),
    ("segment", ("grpc_over_model",), "client.segment over gRPC / model", "<=", 1.5),
    ("segment", ("rest_over_model",), "client.segment over REST / model", "<=", 1.6),
    ("client", ("pre_post_over_model",), "client pre + post CPU / model", "<=", 0.5),
    ("client", ("mask_dice_vs_float_path",), "full-size mask Dice vs float path", ">=", 0.999),
    (
        "serving",
        ("ratios", "batched_over_in_process_batched"),
        "8 clients, --enable_batching / in-process",
        ">=",
        0.95,
    ),
)
_COMPARE = {"<=": operator.le, ">=": operator.ge}


def table(folder: Path) -> tuple[str, bool]:
    """The printed table, and whether every goal was met."""
    lines = [f"{'measure':44}{'figure':>9}  goal"]
    all_met = True
    for name, keys, text, sign, goal in ROWS:
        value = json.loads((folder / f"{name}.json").read_text())
        for key in keys:
            value = value[key]
        met = _COMPARE[sign](value, goal)
        all_met = all_met and met
        lines.append(f"{text:44}{value:9.4f}  {sign} {goal}  {'met' if met else 'NOT met'}")
    return "\n".join(lines), all_met


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    try:
        text, _ = table(args.folder)
    except FileNotFoundError as error:
        print(f"benchmarks.summary: {error.filename} missing; run `make bench`", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
