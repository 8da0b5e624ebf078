"""Shadow mode: mirror a share of live calls to the canary in the background, record agreement.

The caller's answer comes from `stable` and is returned before the mirror runs; the canary's
answer is only compared (with the measure `client.canary.comparisons` names) and written
as one JSON line per mirrored call. `python -m serving.rollout verify --shadow FILE` reads them.

A record:
    {"time": 1767000000.0, "model": "unet", "kind": "unet", "stable": "model:unet/1",
     "canary": "model:unet/2", "items": 1, "measures": {"dice": 0.993}}
or, when the canary failed, the same with `"error": "INVALID_ARGUMENT: ..."` and no measures.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client.canary.comparisons import comparison
from client.canary.routing import canary_missing
from client.errors import ClientError

_VERSION = re.compile(r"^model:[^/\s]+/(-?\d+)")


class ShadowRecorder:
    """Runs mirrored calls on a small pool and appends their records to a JSON-lines file.

    Args:
        fraction: the share of eligible calls to mirror, in [0, 1].
        path: the JSON-lines file (appended to; its folder must exist).
        workers: background threads.
        max_pending: mirrors waiting or running at most; beyond it a call is not mirrored (and
            counted in `dropped`), so a slow canary never builds up memory or delays anyone.
        rng: a `random.Random` for the sampling (tests pass a seeded one).

    Raises:
        ValueError: for a fraction outside [0, 1] or non-positive sizes.
    """

    def __init__(
        self,
        fraction: float,
        path: str | os.PathLike,
        *,
        workers: int = 1,
        max_pending: int = 32,
        rng: random.Random | None = None,
    ):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"shadow_fraction must be in [0, 1], not {fraction!r}")
        if workers < 1 or max_pending < 1:
            raise ValueError("workers and max_pending must be at least 1")
        self.fraction, self.path, self.max_pending = float(fraction), Path(path), max_pending
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="shadow")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.pending = self.recorded = self.dropped = self.skipped = 0

    def submit(self, kind: str, model: str, answer, ask_canary: Callable[[], object]) -> bool:
        """Maybe mirrors one call answered by `stable`; never blocks on the canary.

        Args:
            kind: the model kind (a COMPARISONS key).
            model: the served model name.
            answer: the caller's results (a list, or one result).
            ask_canary: sends the same inputs to the `canary` label; returns the same shape.

        Returns:
            Whether the call was mirrored.
        """
        with self._lock:
            if self._rng.random() >= self.fraction:
                return False
            if self.pending >= self.max_pending:
                self.dropped += 1
                return False
            self.pending += 1
        self._pool.submit(self._mirror, kind, model, answer, ask_canary)
        return True

    def _mirror(self, kind, model, answer, ask_canary) -> None:
        try:
            stable = _as_list(answer)
            record = {"time": round(time.time(), 3), "model": model, "kind": kind}
            record["stable"] = stable[0].source if stable else ""
            try:
                canary = _as_list(ask_canary())
            except ClientError as error:
                if canary_missing(error):  # nothing to compare with: not a disagreement
                    with self._lock:
                        self.skipped += 1
                    return
                record["error"] = f"{error.code}: {error.message}"
            else:
                measure = comparison(kind).agreement
                pairs = [measure(a, b) for a, b in zip(stable, canary, strict=True)]
                record["canary"] = canary[0].source if canary else ""
                record["items"] = len(pairs)
                record["measures"] = {
                    name: round(sum(p[name] for p in pairs) / len(pairs), 6) for name in pairs[0]
                }
            line = json.dumps(record, sort_keys=True) + "\n"
            with self._lock:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
                self.recorded += 1
        except Exception as error:  # a mirror must never hurt the caller; say why it failed
            line = json.dumps({"time": round(time.time(), 3), "model": model, "error": repr(error)})
            with self._lock, self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        finally:
            with self._lock:
                self.pending -= 1
                self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until no mirror is pending; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self.pending == 0, timeout)

    def close(self) -> None:
        """Finishes the pending mirrors, then stops the pool."""
        self._pool.shutdown(wait=True)


def _as_list(answer) -> list:
    return list(answer) if isinstance(answer, (list, tuple)) else [answer]


def version_of(source: str) -> int | None:
    """The version in a `model:NAME/V ...` source, or None."""
    match = _VERSION.match(source or "")
    return int(match.group(1)) if match else None


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a shadow file; a line that is not a JSON object is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def summarize(
    records: Iterable[dict], model: str, canary_version: int | None = None
) -> dict[str, object]:
    """Mirrored calls of `model` (to `canary_version` only, if given), summarised.

    Returns:
        {"calls": mirrored calls with measures, "errors": mirrored calls the canary failed,
        "mean": {measure: mean over calls}, "min": {measure: worst call},
        "stable_versions": [...], "canary_versions": [...]}.
    """
    calls, errors, values = 0, 0, {}
    stable_versions, canary_versions = set(), set()
    for record in records:
        if record.get("model") != model:
            continue
        version = version_of(record.get("canary", ""))
        if canary_version is not None and version not in (canary_version, None):
            continue
        if "error" in record:
            errors += 1
            continue
        if canary_version is not None and version is None:
            continue
        calls += 1
        stable_versions.add(version_of(record.get("stable", "")))
        canary_versions.add(version)
        for name, value in record.get("measures", {}).items():
            values.setdefault(name, []).append(float(value))
    return {
        "calls": calls,
        "errors": errors,
        "mean": {name: sum(v) / len(v) for name, v in values.items()},
        "min": {name: min(v) for name, v in values.items()},
        "stable_versions": sorted(v for v in stable_versions if v is not None),
        "canary_versions": sorted(v for v in canary_versions if v is not None),
    }
