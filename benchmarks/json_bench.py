"""REST response writing: the vectorised writer against the per-element one it replaced, and
the compact layout (`--rest_api_json_layout=compact`, the default) against both.

For each case it checks that the two TF Serving writers write the same text and that the
compact answer parses to the same float32 values, then times one call of each writer,
alternating them within one run (best of several rounds, each long enough to be measured), and
prints the times and ratios, in wall-clock time and in CPU time of this process (steadier on a
shared machine, where waiting for a core inflates wall time). Absolute times vary with the
machine and its load; the ratios are the figures to compare.

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
from serving.rest.json.response import COMPACT, predict_response, predict_response_json
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
        compact_text = predict_response(outputs, request_format, COMPACT)
        if _float32_values(compact_text) != _float32_values(new_text.encode()):
            raise SystemExit(f"{name}: the compact answer has other values")

        def old(outputs=outputs, request_format=request_format):
            return reference_json(outputs, request_format)

        def new(outputs=outputs, request_format=request_format):
            return predict_response_json(outputs, request_format)

        def compact(outputs=outputs, request_format=request_format):
            return predict_response(outputs, request_format, COMPACT)

        row = {"case": name, "bytes": len(new_text), "compact_bytes": len(compact_text)}
        writers = (old, new, compact)
        for clock, timer in (("wall", time.perf_counter), ("cpu", time.process_time)):
            # Calls per measurement so that each lasts about 0.1 s or more.
            numbers = [max(1, round(100 / _per_call_ms(fn, 1, timer))) for fn in writers]
            times: tuple[list[float], ...] = ([], [], [])
            for _ in range(rounds):
                for fn, number, spent in zip(writers, numbers, times, strict=True):
                    spent.append(_per_call_ms(fn, number, timer))
            old_ms, new_ms, compact_ms = (min(spent) for spent in times)
            row[f"old_{clock}_ms"] = round(old_ms, 3)
            row[f"new_{clock}_ms"] = round(new_ms, 3)
            row[f"compact_{clock}_ms"] = round(compact_ms, 3)
            row[f"{clock}_speedup"] = round(old_ms / new_ms, 1)
            row[f"compact_{clock}_speedup"] = round(new_ms / compact_ms, 1)
        results.append(row)
    return results


def _float32_values(body: bytes) -> list:
    """Every number in the answer as its float32 bit pattern, in document order."""
    values: list[int] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                walk(value[key])
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            values.append(int(np.float32(value).view(np.uint32)))

    walk(json.loads(body))
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per writer and case")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    results = measure(args.rounds)
    header = (
        "case", "bytes", "old ms", "new ms", "ratio", "CPU old", "CPU new", "ratio",
        "compact bytes", "compact ms", "new/compact", "CPU compact", "ratio",
    )  # fmt: skip
    line = "{:36} {:>7} {:>7} {:>7} {:>6} {:>8} {:>8} {:>6} {:>13} {:>10} {:>11} {:>11} {:>6}"
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
                row["compact_bytes"],
                f"{row['compact_wall_ms']:.2f}",
                f"{row['compact_wall_speedup']:.1f}x",
                f"{row['compact_cpu_ms']:.2f}",
                f"{row['compact_cpu_speedup']:.1f}x",
            )
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
