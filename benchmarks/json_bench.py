"""REST response writing: the vectorised writer against the per-element one it replaced.

For each case it checks that both write the same text, then times one `predict_response_json`
call of each, alternating old and new within one run (best of several rounds, each long enough
to be measured), and prints the two times and their ratio. Absolute times vary with the
machine and its load; the ratio is the figure to compare.

Example:
    python -m benchmarks.json_bench
    python -m benchmarks.json_bench --rounds 15 --out out/bench/json.json
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path

import numpy as np

from serving.rest.json.response import predict_response_json
from serving.rest.json.tensor import COLUMNAR, ROW
from tests.serving.rest.json_reference import predict_response_json as reference_json


def cases() -> dict[str, tuple[dict[str, np.ndarray], str]]:
    """Model-sized outputs: a U-Net mask (and its logits) and an RGB image, row and columnar."""
    rng = np.random.default_rng(0)
    mask = rng.random((1, 128, 128, 1), dtype=np.float32)
    logits = rng.normal(0, 4, (1, 128, 128, 1)).astype(np.float32)
    image = rng.random((1, 128, 128, 3), dtype=np.float32)
    return {
        "mask 1x128x128x1 float32, row": ({"mask": mask}, ROW),
        "mask + mask_logits, row": ({"mask": mask, "mask_logits": logits}, ROW),
        "image 1x128x128x3 float32, row": ({"image": image}, ROW),
        "mask 1x128x128x1 float32, columnar": ({"mask": mask}, COLUMNAR),
    }


def _per_call_ms(fn, number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e3


def measure(rounds: int) -> list[dict]:
    results = []
    for name, (outputs, request_format) in cases().items():
        new_text = predict_response_json(outputs, request_format)
        if new_text != reference_json(outputs, request_format):
            raise SystemExit(f"{name}: the two writers disagree")

        def old(outputs=outputs, request_format=request_format):
            return reference_json(outputs, request_format)

        def new(outputs=outputs, request_format=request_format):
            return predict_response_json(outputs, request_format)

        # Calls per measurement so that each lasts about 0.1 s or more.
        old_number = max(1, round(0.1 / (_per_call_ms(old, 1) / 1e3)))
        new_number = max(1, round(0.1 / (_per_call_ms(new, 1) / 1e3)))
        old_ms, new_ms = [], []
        for _ in range(rounds):
            old_ms.append(_per_call_ms(old, old_number))
            new_ms.append(_per_call_ms(new, new_number))
        best_old, best_new = min(old_ms), min(new_ms)
        results.append(
            {
                "case": name,
                "bytes": len(new_text),
                "old_ms": round(best_old, 3),
                "new_ms": round(best_new, 3),
                "speedup": round(best_old / best_new, 1),
                "median_speedup": round(float(np.median(old_ms) / np.median(new_ms)), 1),
            }
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per writer and case")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    results = measure(args.rounds)
    print(f"{'case':38} {'bytes':>8} {'old ms':>8} {'new ms':>8} {'speedup':>8} {'(median)':>9}")
    for row in results:
        print(
            f"{row['case']:38} {row['bytes']:8d} {row['old_ms']:8.2f} {row['new_ms']:8.3f}"
            f" {row['speedup']:7.1f}x {row['median_speedup']:8.1f}x"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
