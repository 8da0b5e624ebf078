"""The peer table: latency per path, its ratio to the in-process call, the goals against KServe."""

from __future__ import annotations

import numpy as np

# (results key, label) in the order the table prints them.
ROWS = (
    ("in_process", "in-process signature call"),
    ("ours_grpc", "this server, gRPC"),
    ("kserve_grpc", "KServe, gRPC (Open Inference Protocol)"),
    ("ours_rest", 'this server, REST (`{"instances": ...}`)'),
    ("kserve_rest", "KServe, REST v1 (same request)"),
)

# (label, our path, KServe's path, percentile): each goal is ours / KServe ≤ 1.00.
GOALS = (
    ("REST p50", "ours_rest", "kserve_rest", "p50_ms"),
    ("REST p99", "ours_rest", "kserve_rest", "p99_ms"),
    ("gRPC p50", "ours_grpc", "kserve_grpc", "p50_ms"),
    ("gRPC p99", "ours_grpc", "kserve_grpc", "p99_ms"),
)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of latencies given in seconds."""
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def goals(paths: dict[str, dict[str, float]]) -> list[dict]:
    """Each goal's ratio ours / KServe, and whether it is met (the ratio at most 1.00)."""
    out = []
    for label, ours, theirs, key in GOALS:
        ratio = paths[ours][key] / paths[theirs][key]
        out.append({"goal": label, "ratio": ratio, "met": ratio <= 1.0})
    return out


def report(results: dict) -> str:
    """The Markdown table of `results["paths"]`, then one line per goal."""
    paths = results["paths"]
    base = paths["in_process"]["p50_ms"]
    lines = [
        "| path | p50 ms | p99 ms | p50 / in-process |",
        "|---|---|---|---|",
    ]
    for key, label in ROWS:
        p = paths[key]
        lines.append(
            f"| {label} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['p50_ms'] / base:.2f} |"
        )
    lines.append("")
    for goal in goals(paths):
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(
            f"ours / KServe, {goal['goal']}: {goal['ratio']:.3f}  (goal ≤ 1.00: {verdict})"
        )
    return "\n".join(lines)
