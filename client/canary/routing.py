"""Weighted canary routing in the client: TF Serving routes by label, never by weight.

A `Router` sends `canary_fraction` of the calls to the `canary` label and the rest to `stable`.
With a sticky key (a user or session id) the choice is a stable hash of the key, so one key
always sees one version, and raising the fraction only moves more keys onto the canary (a key
on the canary at 5 % stays there at 10 %). When no canary is loaded the call goes to `stable`
and its `source` says so.

Example:
    >>> router = Router(0.1)
    >>> router.label_for("user-42")          # the same answer for this key every time
    'stable'
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from client.errors import ClientError
from client.results import with_source

STABLE, CANARY = "stable", "canary"
# How TF Serving answers a label that points nowhere: INVALID_ARGUMENT with this text when the
# model has no such label, NOT_FOUND when the label's version is not (or no longer) available.
UNKNOWN_LABEL = "Unrecognized servable version label"


def key_share(key: str | bytes | int) -> float:
    """Where `key` falls in [0, 1): blake2b of its bytes, the same in every process and run.

    Python's `hash` of a str is salted per process, so it could not keep a key on one version.
    """
    data = key if isinstance(key, bytes) else str(key).encode("utf-8")
    digest = hashlib.blake2b(data, digest_size=8, person=b"tfs-canary").digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Router:
    """Chooses `canary` or `stable` for each call.

    Args:
        canary_fraction: the share of calls (or of keys) sent to the canary, in [0, 1].
        sticky_key: the default key; calls may pass their own. Without any key the choice is
            random per call.
        rng: a `random.Random` for keyless calls (tests pass a seeded one).

    Raises:
        ValueError: for a fraction outside [0, 1].
    """

    def __init__(
        self,
        canary_fraction: float,
        sticky_key: str | bytes | int | None = None,
        rng: random.Random | None = None,
    ):
        if not 0.0 <= canary_fraction <= 1.0:
            raise ValueError(f"canary_fraction must be in [0, 1], not {canary_fraction!r}")
        self.canary_fraction = float(canary_fraction)
        self.sticky_key = sticky_key
        self._rng = rng or random.Random()

    def label_for(self, sticky_key: str | bytes | int | None = None) -> str:
        """`canary` or `stable` for a call with `sticky_key` (or the router's default key)."""
        key = self.sticky_key if sticky_key is None else sticky_key
        share = self._rng.random() if key is None else key_share(key)
        return CANARY if share < self.canary_fraction else STABLE


def canary_missing(error: ClientError) -> bool:
    """Whether the server refused a `canary` call because no canary is loaded.

    Only these two answers fall back to `stable`; a bad request fails as it is.
    """
    if error.code == "NOT_FOUND":
        return True
    return error.code == "INVALID_ARGUMENT" and UNKNOWN_LABEL in error.message


def routed_source(source: str, label: str, fell_back: bool = False) -> str:
    """`model:unet/2 (canary)`, `model:unet/1 (stable)`, or `model:unet/1 (stable; canary not
    loaded)` when a canary call fell back."""
    return f"{source} ({label}; canary not loaded)" if fell_back else f"{source} ({label})"


def route(
    router: Router | None,
    shadow,
    kind: str,
    model: str,
    pin: tuple[int | None, str | None],
    sticky_key: str | bytes | int | None,
    ask: Callable[[str | None], Any],
):
    """Runs `ask(label)` on the label the split picks; a missing canary falls back to stable.

    Args:
        router: the client's Router, or None when neither split nor shadow is on.
        shadow: the client's `client.canary.shadow.ShadowRecorder`, or None.
        kind: the model kind (a `client.canary.comparisons.COMPARISONS` key), for shadow records.
        model: the served model name.
        pin: the call's (version, label); a call that pins either is not routed.
        sticky_key: the call's key, or None for the router's default.
        ask: sends the call's inputs to a label (None: no label); returns a result or a list.

    Returns:
        `ask`'s answer; routed results name their label in `source`. Answers from `stable`
        are offered to `shadow` for mirroring once they are in hand.
    """
    version, label = pin
    if version is not None or label is not None or router is None:
        answer = ask(label)
        if label == STABLE and version is None and shadow is not None:
            shadow.submit(kind, model, answer, lambda: ask(CANARY))
        return answer
    chosen, fell_back = router.label_for(sticky_key), False
    try:
        answer = ask(chosen)
    except ClientError as error:
        if chosen != CANARY or not canary_missing(error):
            raise
        chosen, fell_back = STABLE, True
        answer = ask(STABLE)
    if chosen == STABLE and shadow is not None:
        shadow.submit(kind, model, answer, lambda: ask(CANARY))

    def tag(result):
        return with_source(result, routed_source(result.source, chosen, fell_back))

    return [tag(r) for r in answer] if isinstance(answer, list) else tag(answer)
