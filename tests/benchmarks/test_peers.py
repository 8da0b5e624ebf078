"""The peer benchmark's logic that needs no KServe: goals, table, answer check, interleaving."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers.driver import check_answers, interleaved
from benchmarks.peers.table import goals, report


def _paths() -> dict[str, dict[str, float]]:
    return {
        "in_process": {"p50_ms": 15.0, "p99_ms": 20.0},
        "ours_grpc": {"p50_ms": 18.0, "p99_ms": 40.0},
        "kserve_grpc": {"p50_ms": 18.0, "p99_ms": 20.0},
        "ours_rest": {"p50_ms": 30.0, "p99_ms": 50.0},
        "kserve_rest": {"p50_ms": 40.0, "p99_ms": 40.0},
    }


def test_goals_are_ours_over_kserve_and_met_at_one():
    # Catches an inverted ratio (KServe / ours), a goal reading the wrong percentile or pairing
    # the wrong paths, and a tie counted as not met.
    by_name = {g["goal"]: g for g in goals(_paths())}
    assert by_name["REST p50"]["ratio"] == pytest.approx(0.75)
    assert by_name["REST p50"]["met"]
    assert by_name["REST p99"]["ratio"] == pytest.approx(1.25)
    assert not by_name["REST p99"]["met"]
    assert by_name["gRPC p50"]["ratio"] == pytest.approx(1.0)
    assert by_name["gRPC p50"]["met"]
    assert by_name["gRPC p99"]["ratio"] == pytest.approx(2.0)
    assert not by_name["gRPC p99"]["met"]


def test_report_prints_each_row_against_the_in_process_p50_and_each_verdict():
    # Catches a p50 / in-process column divided by the wrong baseline (a p99, or the row's own
    # gRPC) and a verdict line that disagrees with its ratio.
    text = report({"paths": _paths()})
    assert '| this server, REST (`{"instances": ...}`) | 30.0 | 50.0 | 2.00 |' in text
    assert "| KServe, gRPC (Open Inference Protocol) | 18.0 | 20.0 | 1.20 |" in text
    assert "ours / KServe, REST p99: 1.250  (goal ≤ 1.00: NOT met)" in text
    assert "ours / KServe, REST p50: 0.750  (goal ≤ 1.00: met)" in text


def test_check_answers_accepts_exact_answers_and_names_the_path_that_differs():
    # Catches a check that compares nothing (a wrong answer would then be timed as if right),
    # or that ignores a missing output.
    reference = {"mask": np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 4, 4, 1)}
    same = {"mask": reference["mask"].copy()}
    assert check_answers(reference, {"ours_grpc": same}) == {"ours_grpc": 0.0}
    off = {"mask": reference["mask"] + np.float32(1e-3)}
    with pytest.raises(AssertionError, match="kserve_rest, output mask"):
        check_answers(reference, {"ours_grpc": same, "kserve_rest": off})
    with pytest.raises(AssertionError, match="kserve_grpc answered outputs"):
        check_answers(reference, {"kserve_grpc": {}})


def test_interleaved_times_every_path_each_round_and_rotates_the_start():
    # Catches a fixed order (one path always right after the same neighbour) and a round that
    # skips a path.
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = interleaved(calls, n=3, warmup=1)
    assert {name: len(samples) for name, samples in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert order == list("abcabcbcacab")
