"""What a verification measured, aggregated per version: the input of the gates.

Example:
    scores, per_item = score(compare, golden, answers, seconds, errors, requests)
    scores.agreement["dice"], scores.latency_ms["canary"]["p99"]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from client.canary.comparisons import Comparison

LABELS = ("stable", "canary")


@dataclass
class Scores:
    """What a verification measured, aggregated: the input of `evaluate`."""

    agreement: dict[str, float | None]  # measure -> mean over items (None: no item answered)
    truth: dict[str, dict[str, float]]  # label -> measure -> mean over items with truth
    quality: dict[str, dict[str, float]]  # label -> measure
    latency_ms: dict[str, dict[str, float]]  # label -> {"p50", "p99", "n"}
    requests: dict[str, int]  # label -> golden requests sent
    failures: dict[str, int]  # label -> golden requests failed
    server: dict | None  # {"errors", "requests"} over the window, or None
    server_note: str = ""
    server_failed: bool = False  # monitoring was asked for but could not be read
    shadow: dict | None = None  # client.canary.shadow.summarize(), or None
    latency_first: dict | None = None  # the first pass's latency_ms, when a second one ran
    # Where latency_ms came from: "tool" (the timed round trips) or "prometheus" (--prometheus).
    latency_source: str = "tool"
    truth_items: int = 0
    extra: dict = field(default_factory=dict)


def _mean(dicts: list[dict]) -> dict[str, float]:
    if not dicts:
        return {}
    return {name: float(np.mean([d[name] for d in dicts])) for name in dicts[0]}


def score(compare: Comparison, golden, answers: dict, seconds: dict, errors: dict, requests: dict):
    """Aggregates a verification's answers and timings.

    Args:
        compare: the model's measures (`client.canary.comparisons.COMPARISONS`).
        golden: the GoldenSet that was sent.
        answers: label -> one answer per golden item (None where it failed).
        seconds: label -> the timed Predicts' durations.
        errors: label -> the failed requests' messages.
        requests: label -> requests sent.

    Returns:
        The Scores, and per item the agreement measures (None where one label failed).
    """
    stable, canary = answers["stable"], answers["canary"]
    per_item = [
        None if a is None or b is None else compare.agreement(a, b)
        for a, b in zip(stable, canary, strict=True)
    ]
    agreement = _mean([d for d in per_item if d is not None])
    names = compare.measures.get("agreement", ())
    truth, quality = {}, {}
    truth_items = [i for i, item in enumerate(golden.items) if item.truth is not None]
    for label in LABELS:
        got = answers[label]
        if compare.against_truth is not None and truth_items:
            truth[label] = _mean(
                [
                    compare.against_truth(got[i], golden.items[i].truth)
                    for i in truth_items
                    if got[i] is not None
                ]
            )
        answered = [a for a in got if a is not None]
        if compare.quality is not None and answered:
            quality[label] = compare.quality(answered)
    result = Scores(
        agreement={name: agreement.get(name) for name in names},
        truth=truth,
        quality=quality,
        latency_ms=latency(seconds),
        requests=requests,
        failures={label: len(errors[label]) for label in LABELS},
        server=None,
        truth_items=len(truth_items),
    )
    return result, per_item


def latency(seconds: dict) -> dict[str, dict[str, float]]:
    """Label -> {"p50", "p99" (ms), "n"} of the timed Predicts."""
    out = {}
    for label in LABELS:
        ms = np.asarray(seconds.get(label, []), np.float64) * 1000.0
        if len(ms):
            out[label] = {
                "p50": float(np.percentile(ms, 50)),
                "p99": float(np.percentile(ms, 99)),
                "n": len(ms),
            }
    return out
