"""The curve as a picture: latency and achieved rate against the step's rate, the knee marked."""

from __future__ import annotations

import os
from collections.abc import Sequence


def plot_curve(steps: Sequence[dict], knee: int | None, title: str, path: str | os.PathLike):
    """Writes a PNG of two panels sharing each step's nominal rate as x.

    Top: p50, p90 and p99 latency (log scale, so the low steps stay readable beside an
    overloaded one). Bottom: the offered rate (the arrivals scheduled) and the achieved rate
    (OK answers in the window), with the line where they equal the nominal rate. A dashed line
    marks the knee.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    rate = [s["rate_rps"] for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^-")):
        points = [(x, s[key]) for x, s in zip(rate, steps, strict=True) if s[key] is not None]
        if points:
            top.plot(*zip(*points, strict=True), style, label=key.split("_")[0])
    top.set_yscale("log")
    # Labels at 1, 2 and 5 of each decade: every minor tick labelled would overlap.
    top.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    top.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    top.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    top.set_ylabel("latency (ms)")
    top.grid(True, which="both", alpha=0.3)
    if top.lines:  # none when no request was answered
        top.legend(loc="upper left")
    achieved = [s["achieved_rps"] for s in steps]
    bottom.plot(rate, [s["offered_rps"] for s in steps], "s:", label="offered", alpha=0.7)
    bottom.plot(rate, achieved, "o-", label="achieved")
    high = max([*rate, *achieved, 1.0])
    bottom.plot([0, high], [0, high], "-", color="grey", linewidth=0.8, label="= nominal rate")
    bottom.set_xlabel("nominal rate of the step (requests/s)")
    bottom.set_ylabel("requests/s")
    bottom.grid(True, alpha=0.3)
    if knee is not None:
        for axis in (top, bottom):
            axis.axvline(rate[knee], color="tab:red", linestyle="--", linewidth=1)
        bottom.annotate(
            f"knee: {rate[knee]:g} rps",
            (rate[knee], achieved[knee]),
            textcoords="offset points",
            xytext=(6, -14),
            color="tab:red",
        )
    bottom.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
