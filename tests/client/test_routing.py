"""The client's canary split and shadow mode, without a server (the real one: tests/serving/
rollout/test_gates_e2e.py)."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import pytest

from client.canary.routing import Router, canary_missing, key_share, route
from client.canary.shadow import ShadowRecorder, read_records, summarize, version_of
from client.errors import ClientError
from client.results import Localization, Segmentation


def test_key_share_is_a_stable_hash_in_the_unit_interval():
    # Pinned: a change here would move users between versions across a client upgrade.
    assert key_share("user-42") == pytest.approx(key_share(b"user-42"))
    assert key_share(42) == key_share("42")
    shares = [key_share(f"user-{i}") for i in range(20_000)]
    assert min(shares) >= 0.0 and max(shares) < 1.0
    assert abs(np.mean(np.array(shares) < 0.1) - 0.1) < 0.01


def test_the_split_is_sticky_and_only_grows_the_canary():
    keys = [f"session-{i}" for i in range(5000)]
    at5 = {k for k in keys if Router(0.05).label_for(k) == "canary"}
    at10 = {k for k in keys if Router(0.10).label_for(k) == "canary"}
    assert at5 < at10  # raising the share keeps everyone already on the canary there
    assert abs(len(at10) / len(keys) - 0.10) < 0.015
    router = Router(0.5, sticky_key="me")
    assert len({router.label_for() for _ in range(50)}) == 1  # the default key
    assert Router(0.0).label_for("x") == "stable" and Router(1.0).label_for("x") == "canary"
    keyless = Router(0.25, rng=random.Random(0))
    share = np.mean([keyless.label_for() == "canary" for _ in range(4000)])
    assert abs(share - 0.25) < 0.03
    with pytest.raises(ValueError, match=r"canary_fraction must be in \[0, 1\], not 1.5"):
        Router(1.5)


def test_only_a_missing_canary_falls_back():
    assert canary_missing(ClientError("NOT_FOUND", "Servable not found for request: ..."))
    unknown = "Unrecognized servable version label: canary"
    assert canary_missing(ClientError("INVALID_ARGUMENT", unknown))
    assert not canary_missing(ClientError("INVALID_ARGUMENT", "Expects arg[0] to be float"))
    assert not canary_missing(ClientError("UNAVAILABLE", "connection refused"))


def answer(version: int, label) -> list[Localization]:
    return [Localization("ellipse", 0.9, (1, 2, 3, 4), f"model:localizer/{version}")]


def test_route_names_the_label_and_falls_back_to_stable():
    calls = []

    def ask(label):
        calls.append(label)
        if label == "canary":
            raise ClientError("INVALID_ARGUMENT", "Unrecognized servable version label: canary")
        return answer(1, label)

    everyone = Router(1.0)
    result = route(everyone, None, "localizer", "localizer", (None, None), "k", ask)
    assert calls == ["canary", "stable"]
    assert result[0].source == "model:localizer/1 (stable; canary not loaded)"
    # A pinned call is not routed: its label (or none) goes as it is, source unchanged.
    assert route(everyone, None, "localizer", "m", (None, "stable"), "k", ask)[0].source == (
        "model:localizer/1"
    )
    assert route(None, None, "localizer", "m", (None, None), None, ask)[0].source == (
        "model:localizer/1"
    )

    def broken(label):
        raise ClientError("INVALID_ARGUMENT", "Expects arg[0] to be float but uint8 is provided")

    with pytest.raises(ClientError, match="Expects arg"):
        route(everyone, None, "localizer", "m", (None, None), "k", broken)


def seg(version: int, mask) -> Segmentation:
    return Segmentation(mask, mask.astype(np.float32), f"model:unet/{version}")


def test_shadow_mirrors_in_the_background_and_records_agreement(tmp_path):
    log = tmp_path / "shadow.jsonl"
    shadow = ShadowRecorder(1.0, log, rng=random.Random(0))
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    release = threading.Event()

    def slow_canary():
        release.wait(10)  # the caller must not wait for this
        return [seg(2, np.ones((4, 4), bool))]

    stable = [seg(1, mask)]
    start = time.monotonic()

    def ask(label):
        return slow_canary() if label == "canary" else stable

    result = route(Router(0.0), shadow, "unet", "unet", (None, None), "k", ask)
    assert time.monotonic() - start < 1.0
    assert result[0].source == "model:unet/1 (stable)" and result[0].mask is mask
    release.set()
    assert shadow.wait(10)

    def missing():
        raise ClientError("NOT_FOUND", "Servable not found")

    def failing():
        raise ClientError("DEADLINE_EXCEEDED", "Deadline Exceeded")

    shadow.submit("unet", "unet", stable, missing)  # no canary: nothing recorded
    shadow.submit("unet", "unet", stable, failing)
    shadow.close()
    records = read_records(log)
    assert [r.get("error") for r in records] == [None, "DEADLINE_EXCEEDED: Deadline Exceeded"]
    assert records[0]["measures"] == {"dice": pytest.approx(2 * 8 / 24)}
    assert records[0]["stable"] == "model:unet/1" and records[0]["canary"] == "model:unet/2"
    assert shadow.skipped == 1
    summary = summarize(records, "unet", canary_version=2)
    assert summary["calls"] == 1 and summary["errors"] == 1
    assert summary["mean"]["dice"] == pytest.approx(2 / 3)
    assert summarize(records, "unet", canary_version=3)["calls"] == 0
    assert json.loads(log.read_text().splitlines()[0])["kind"] == "unet"


def test_shadow_drops_rather_than_queues_when_the_canary_is_slow(tmp_path):
    shadow = ShadowRecorder(1.0, tmp_path / "s.jsonl", max_pending=2)
    gate = threading.Event()
    stable = [seg(1, np.ones((2, 2), bool))]
    mirrored = [
        shadow.submit("unet", "unet", stable, lambda: gate.wait(10) and stable) for _ in range(5)
    ]
    assert mirrored == [True, True, False, False, False] and shadow.dropped == 3
    gate.set()
    shadow.close()
    assert shadow.recorded == 2
    assert ShadowRecorder(0.0, tmp_path / "x.jsonl").submit("unet", "unet", stable, None) is False
    with pytest.raises(ValueError, match="shadow_fraction must be in"):
        ShadowRecorder(2.0, tmp_path / "x.jsonl")


def test_version_of_reads_sources():
    assert version_of("model:unet/12 (canary)") == 12
    assert version_of("fallback:otsu") is None


def test_serving_client_options_are_checked():
    from client.api import ServingClient

    class Nothing:
        def close(self):
            pass

    with pytest.raises(ValueError, match="shadow_fraction needs shadow_log"):
        ServingClient(Nothing(), shadow_fraction=0.1)
    with pytest.raises(ValueError, match="canary_fraction must be in"):
        ServingClient(Nothing(), canary_fraction=-0.1)
    assert ServingClient(Nothing()).router is None  # off by default
