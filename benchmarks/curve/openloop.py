"""Open-loop load: arrivals scheduled from the clock, each sent at its time, answered or not.

The sender never waits for an answer before sending the next request: every arrival becomes
its own task at its scheduled time, so a server that falls behind shows as growing latency
and an achieved rate below the offered one, not as a slower sender. How late each request
left (its lag, scheduled to sent) is recorded, so a sender that cannot keep up shows too.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from tqdm import tqdm

from benchmarks.curve.steps import NOT_SENT, Request, summarise

ARRIVALS = ("poisson", "constant")
# A step stops the curve when it achieves less than this share of its offered rate: higher
# rates would only pile up more requests on a server already far behind (--keep-going runs on).
STOP_BELOW = 0.5
# Lead time before a step's first arrival, so that the first is not late by construction.
_LEAD_S = 0.02


class Sender(Protocol):
    async def send(self, timeout: float) -> str: ...

    async def close(self) -> None: ...


def arrival_offsets(rate: float, seconds: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Send times (seconds from the step's start, in [0, seconds)) of `rate` requests a second.

    `poisson` draws exponential gaps of mean 1/rate (independent arrivals, as many clients
    make); `constant` spaces them exactly 1/rate apart.

    Raises:
        ValueError: For a rate or duration not above 0, or an unknown kind (listing both).
    """
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be above 0, not {rate} and {seconds}")
    if kind == "constant":
        offsets = np.arange(int(np.ceil(rate * seconds))) / rate
        return offsets[offsets < seconds]
    if kind != "poisson":
        raise ValueError(f"unknown arrivals {kind!r}; valid: {', '.join(ARRIVALS)}")
    expected = rate * seconds
    gaps = rng.exponential(1 / rate, int(expected + 6 * np.sqrt(expected) + 10))
    offsets = np.cumsum(gaps)
    while offsets[-1] < seconds:  # far in the tail of the draw; extend it
        offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(rng.exponential(1 / rate, 64))])
    return offsets[offsets < seconds]


async def run_step(
    sender: Sender,
    offsets: np.ndarray,
    seconds: float,
    *,
    timeout: float,
    max_in_flight: int,
) -> tuple[float, list[Request]]:
    """Sends one request at each offset from now, then waits for the window's end and for
    every answer.

    An arrival that finds `max_in_flight` requests waiting is not sent and counts as
    NOT_SENT: the sender's own limit, reported rather than turned into a delay.

    Returns:
        The window's start (loop clock) and every arrival's record, in order.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + _LEAD_S
    scheduled = start + np.asarray(offsets, dtype=float)
    records: list[Request | None] = [None] * len(scheduled)
    tasks: set[asyncio.Task] = set()

    async def one(i: int, at: float) -> None:
        sent = loop.time()
        code = await sender.send(timeout)
        records[i] = Request(at, sent, loop.time(), code)

    i = 0
    while i < len(scheduled):
        now = loop.time()
        if scheduled[i] > now:
            await asyncio.sleep(scheduled[i] - now)
            continue
        # Everything due by now leaves now: late arrivals are sent at once, not dropped.
        while i < len(scheduled) and scheduled[i] <= now:
            at = float(scheduled[i])
            if len(tasks) >= max_in_flight:
                records[i] = Request(at, None, None, NOT_SENT)
            else:
                task = asyncio.create_task(one(i, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            i += 1
    await asyncio.sleep(max(0.0, start + seconds - loop.time()))
    if tasks:
        await asyncio.gather(*tasks)
    return start, [r for r in records if r is not None]


async def _ticker(bar: tqdm, seconds: float) -> None:
    """Moves the progress bar with the clock through one step (answers may take longer)."""
    loop = asyncio.get_running_loop()
    start, shown = loop.time(), 0.0
    while shown < seconds:
        await asyncio.sleep(0.5)
        now = min(loop.time() - start, seconds)
        bar.update(now - shown)
        shown = now


async def run_curve(
    sender: Sender,
    rates: Sequence[float],
    seconds: float,
    *,
    warmup: float = 0.0,
    arrivals: str = "poisson",
    seed: int = 0,
    timeout: float = 10.0,
    max_in_flight: int = 512,
    keep_going: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Runs one step per rate, in the order given, after `warmup` seconds at the first rate.

    Returns:
        One `steps.summarise` dict per step run, with the 1-minute load average at its end.
    """
    rng = np.random.default_rng(seed)
    total = warmup + seconds * len(rates)
    steps: list[dict] = []
    with tqdm(total=total, unit="s", disable=not progress, bar_format=_BAR) as bar:
        if warmup > 0:
            bar.set_description(f"warm-up at {rates[0]:g} rps")
            offsets = arrival_offsets(rates[0], warmup, arrivals, rng)
            await _timed(
                bar,
                warmup,
                run_step(sender, offsets, warmup, timeout=timeout, max_in_flight=max_in_flight),
            )
        for n, rate in enumerate(rates, 1):
            bar.set_description(f"step {n}/{len(rates)} at {rate:g} rps")
            offsets = arrival_offsets(rate, seconds, arrivals, rng)
            start, records = await _timed(
                bar,
                seconds,
                run_step(sender, offsets, seconds, timeout=timeout, max_in_flight=max_in_flight),
            )
            step = summarise(rate, start, seconds, records) | {"load_1m": os.getloadavg()[0]}
            steps.append(step)
            bar.set_postfix_str(
                f"achieved {step['achieved_rps']:.1f} rps, p99 "
                + ("-" if step["p99_ms"] is None else f"{step['p99_ms']:.1f} ms")
            )
            stalled = step["achieved_rps"] < STOP_BELOW * step["offered_rps"]
            if stalled and not keep_going and n < len(rates):
                tqdm.write(
                    f"stopping: {step['achieved_rps']:.1f} of {step['offered_rps']:.1f} rps "
                    f"offered achieved, under "
                    f"{STOP_BELOW:.0%} (--keep-going runs the remaining rates)",
                    file=sys.stderr,
                )
                break
    return steps


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}"


async def _timed(bar: tqdm, seconds: float, step):
    """Runs a step with the bar ticking beside it."""
    before = bar.n
    ticker = asyncio.create_task(_ticker(bar, seconds))
    try:
        return await step
    finally:
        ticker.cancel()
        bar.n = before + seconds
        bar.refresh()
