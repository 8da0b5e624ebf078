"""REST response writing: the vectorised writer against the per-element one it replaced.

For each case it checks that both write the same text, then times one `predict_response_json`
call of each, alternating old and new within one run (best of several rounds, each long enough
to be measured), and prints the two times and their ratio, in wall-clock time and in CPU time
of this process (steadier on a shared machine, where waiting for a core inflates wall time).
Absolute times vary with the machine and its load; the ratios are the figures to compare.

Example:
    python -m benchmarks.json_bench
    python -m benchmarks.json_bench --rounds 15 --out out/bench/json.json
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from pathlib import Path

import numpy as np

from benchmarks.json_reference import predict_response_json as reference_json
from serving.rest.json.response import predict_response_json
from serving.rest.json.tensor import COLUMNAR, ROW


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


def _per_call_ms(fn, number: int, timer=time.perf_counter) -> float:
    return timeit.Timer(fn, timer=timer).timeit(number=number) / number * 1e3


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

        row = {"case": name, "bytes": len(new_text)}
        for clock, timer in (("wall", time.perf_counter), ("cpu", time.process_time)):
            # Calls per measurement so that each lasts about 0.1 s or more.
            numbers = [max(1, round(100 / _per_call_ms(fn, 1, timer))) for fn in (old, new)]
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(rounds):
                for fn, number, spent in zip((old, new), numbers, times, strict=True):
                    spent.append(_per_call_ms(fn, number, timer))
            old_ms, new_ms = min(times[0]), min(times[1])
            row[f"old_{clock}_ms"] = round(old_ms, 3)
            row[f"new_{clock}_ms"] = round(new_ms, 3)
            row[f"{clock}_speedup"] = round(old_ms / new_ms, 1)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per writer and case")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    results = measure(args.rounds)
    header = ("case", "bytes", "old ms", "new ms", "ratio", "CPU old ms", "CPU new ms", "ratio")
    line = "{:36} {:>7} {:>7} {:>7} {:>6} {:>11} {:>11} {:>6}"
    print(line.format(*header))
    for row in results:
        print(
            line.format(
                row["case"],
                row["bytes"],
                f"{row['old_wall_ms']:.2f}",
                f"{row['new_wall_ms']:.2f}",
                f"{row['wall_speedup']:.1f}x",
                f"{row['old_cpu_ms']:.2f}",
                f"{row['new_cpu_ms']:.2f}",
                f"{row['cpu_speedup']:.1f}x",
            )
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
