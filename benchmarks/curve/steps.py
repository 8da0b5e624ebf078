"""One step of a curve: its requests summarised, the knee found, the table printed (pure code)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

# The knee's rule, by default: a step is healthy when its achieved rate is within 5 % of the
# offered rate and its p99 is at most three times the lowest p99 of the curve's steps.
RATE_TOLERANCE = 0.05
P99_FACTOR = 3.0
# Above this p99 of the sender's lag (ms), the table warns that the sender may be what lags.
LAG_WARN_MS = 10.0
# The code of an arrival that was never sent because --max-in-flight requests were waiting.
NOT_SENT = "NOT_SENT"


@dataclasses.dataclass(frozen=True)
class Request:
    """One arrival, times in seconds on the loop's monotonic clock.

    Attributes:
        scheduled: When the arrival process said to send it.
        sent: When the sender sent it (None if it was never sent).
        done: When its answer (or error) came back (None if never sent).
        code: "OK", or the gRPC status name of the error (REST statuses are mapped to them).
    """

    scheduled: float
    sent: float | None
    done: float | None
    code: str


def _ms(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q) * 1e3) if len(values) else None


def summarise(rate: float, start: float, seconds: float, requests: Sequence[Request]) -> dict:
    """The figures of one step from its requests.

    The offered rate is the arrivals the step scheduled a second (with Poisson arrivals it
    strays from the nominal `rate` by chance), sent or not. The achieved rate counts the OK
    answers that came back inside the step's window [start, start + seconds], so a server that
    falls behind shows as a rate below the offered one; the latencies (sent to done) are of
    every OK answer, those that came back after the window too, so its queue shows as latency.

    Args:
        rate: The step's nominal rate (requests per second).
        start: When the step's window opened.
        seconds: The window's length.
        requests: Every arrival scheduled in the window.

    Returns:
        rate_rps, offered_rps, sent_rps, achieved_rps, requests, ok, errors ({code: count}),
        p50_ms/p90_ms/p99_ms, lag_p50_ms/lag_p99_ms/lag_max_ms (scheduled to sent).
    """
    if seconds <= 0:
        raise ValueError(f"a step lasts more than 0 s, not {seconds}")
    end = start + seconds
    ok = [r for r in requests if r.code == "OK"]
    sent = [r for r in requests if r.sent is not None]
    latency = np.array([r.done - r.sent for r in ok])
    lag = np.array([r.sent - r.scheduled for r in sent])
    return {
        "rate_rps": float(rate),
        "offered_rps": len(requests) / seconds,
        "sent_rps": len(sent) / seconds,
        "achieved_rps": sum(1 for r in ok if r.done <= end) / seconds,
        "requests": len(requests),
        "ok": len(ok),
        "errors": dict(sorted(Counter(r.code for r in requests if r.code != "OK").items())),
        "p50_ms": _ms(latency, 50),
        "p90_ms": _ms(latency, 90),
        "p99_ms": _ms(latency, 99),
        "lag_p50_ms": _ms(lag, 50),
        "lag_p99_ms": _ms(lag, 99),
        "lag_max_ms": float(lag.max() * 1e3) if len(lag) else None,
    }


def healthy(step: dict, base_p99_ms: float, rate_tolerance: float, p99_factor: float) -> bool:
    """Whether a step keeps up: achieved within `rate_tolerance` of offered, and p99 at most
    `p99_factor` times `base_p99_ms`."""
    return (
        step["p99_ms"] is not None
        and step["achieved_rps"] >= (1 - rate_tolerance) * step["offered_rps"]
        and step["p99_ms"] <= p99_factor * base_p99_ms
    )


def find_knee(
    steps: Sequence[dict], rate_tolerance: float = RATE_TOLERANCE, p99_factor: float = P99_FACTOR
) -> int | None:
    """The index of the knee: the last step of the run of healthy steps the curve starts with.

    Steps are taken in order of rising nominal rate. The reference p99 is the lowest p99 of any
    step (usually the lowest rate's; taking the least keeps one noisy step, on a shared machine,
    from loosening the rule for all). The first unhealthy step ends the run, even if a later one
    looks healthy again: the knee is the highest rate that every lower rate also sustained.

    Returns:
        The knee's index in `steps`, or None when even the lowest step does not keep up (or
        there are no steps).
    """
    ordered = sorted(range(len(steps)), key=lambda i: steps[i]["rate_rps"])
    answered = [s["p99_ms"] for s in steps if s["p99_ms"] is not None]
    if not ordered or not answered:
        return None
    base = min(answered)
    knee = None
    for i in ordered:
        if not healthy(steps[i], base, rate_tolerance, p99_factor):
            break
        knee = i
    return knee


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(steps: Sequence[dict], knee: int | None) -> str:
    """The steps as a fixed-width table, the knee's row marked."""
    head = (
        f"{'rate':>7} {'offered':>8} {'sent':>8} {'achieved':>9} {'p50 ms':>8} {'p90 ms':>8}"
        f" {'p99 ms':>8} {'lag p99':>8}  errors"
    )
    lines = [head, f"{'rps':>7} {'rps':>8} {'rps':>8} {'rps':>9} {'':>35} {'ms':>8}"]
    for i, s in enumerate(steps):
        errors = ", ".join(f"{code} {n}" for code, n in s["errors"].items()) or "0"
        lines.append(
            f"{s['rate_rps']:7g} {s['offered_rps']:8.1f} {s['sent_rps']:8.1f}"
            f" {s['achieved_rps']:9.1f} {_cell(s['p50_ms']):>8} {_cell(s['p90_ms']):>8}"
            f" {_cell(s['p99_ms']):>8}"
            f" {_cell(s['lag_p99_ms']):>8}  {errors}" + ("  <- knee" if i == knee else "")
        )
    return "\n".join(lines)


def lag_warnings(steps: Sequence[dict], limit_ms: float = LAG_WARN_MS) -> list[str]:
    """One line per step whose sender lagged (p99 of scheduled to sent) over `limit_ms`."""
    return [
        f"sender lag p99 {s['lag_p99_ms']:.1f} ms at {s['rate_rps']:g} rps (over "
        f"{limit_ms:g} ms): the sender, not only the server, limits this step"
        for s in steps
        if s["lag_p99_ms"] is not None and s["lag_p99_ms"] > limit_ms
    ]
