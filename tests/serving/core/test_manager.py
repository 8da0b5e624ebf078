"""Tests for the version manager (serving/core/manager.py) on real known-answer SavedModels."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.core import config_checks, versions
from serving.errors import ServingError
from serving.servables.saved_model import load_servable
from serving.servables.warmup import read_warmup_requests
from tests.known_models import tf
from tests.serving.core.conftest import POLL_S
from tests.support import corrupt_version

integration = pytest.mark.integration
State = get_model_status_pb2.ModelVersionStatus.State


def publish(templates, base: Path, version: int | str, kind: str = "half") -> Path:
    """Copies a template in as `<base>/<version>`, atomically like write_known_model does."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{version}"
    shutil.copytree(templates[kind], tmp)
    os.rename(tmp, base / str(version))
    return base / str(version)


def config(*models, **labels_by_model) -> model_server_config_pb2.ModelServerConfig:
    """models: (name, base_path[, policy dict]) tuples; labels_by_model: name -> {label: v}."""
    result = model_server_config_pb2.ModelServerConfig()
    for name, base_path, *policy in models:
        entry = result.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
        if policy:
            kind, value = next(iter(policy[0].items()))
            choice = getattr(entry.model_version_policy, kind)
            if kind == "latest":
                choice.num_versions = value
            elif kind == "specific":
                choice.versions.extend(value)
            else:
                choice.SetInParent()
        for label, version in labels_by_model.get(name, {}).items():
            entry.version_labels[label] = version
    return result


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def states(manager, name) -> dict[int, int]:
    return {s.version: s.state for s in manager.status(name)}


def replay_warmup(servable) -> None:
    """A minimal warmup replay: every predict log goes through Servable.run."""
    for log in read_warmup_requests(servable.path):
        request = log.predict_log.request
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        servable.run(request.model_spec.signature_name or "serving_default", inputs)


def predict(manager, name, x=1.0, **spec) -> tuple[int, float]:
    with manager.handle(name, **spec) as servable:
        y = servable.run("serving_default", {"x": np.array([x], np.float32)})["y"]
        return servable.version, float(y[0])


@integration
def test_load_and_run_known_answers(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "m", 1)
    manager = make_manager()
    manager.reload_config(config(("m", tmp_path / "m")))
    assert manager.model_names() == ["m"]
    assert manager.available_versions("m") == [1]
    assert predict(manager, "m", 4.0) == (1, 4.0)
    assert predict(manager, "m", 4.0, version=1) == (1, 4.0)
    assert states(manager, "m") == {1: State.AVAILABLE}


@integration
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, [3]),
        ({"latest": 2}, [2, 3]),
        ({"latest": 0}, [3]),  # num_versions is clamped to at least 1
        ({"all": True}, [1, 2, 3]),
        ({"specific": [1, 3, 9]}, [1, 3]),
    ],
)
def test_policies(templates, tmp_path, make_manager, policy, expected):
    for version in (1, 2, 3):
        publish(templates, tmp_path / "m", version)
    manager = make_manager(file_system_poll_wait_seconds=0)
    manager.reload_config(config(("m", tmp_path / "m", *([policy] if policy else []))))
    wait_until(lambda: manager.available_versions("m") == expected)
    assert predict(manager, "m")[0] == expected[-1]


@integration
def test_non_numeric_dirs_ignored(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    for name in ("tmp", ".1.partial", "0007", "v8"):
        publish(templates, base, name)
    manager = make_manager()
    manager.reload_config(config(("m", base)))
    assert manager.available_versions("m") == [7]
    assert [s.version for s in manager.status("m")] == [7]


@integration
def test_rollout_keeps_serving(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    publish(templates, base, 1, "half")
    events = []
    slow = threading.Event()

    def warmup(servable):
        if slow.is_set():
            time.sleep(0.3)  # widen the window in which v2 is LOADING

    manager = make_manager(warmup=warmup, listeners=[lambda *event: events.append(event)])
    manager.reload_config(config(("m", base)))
    failures, seen, done = [], set(), threading.Event()

    def hammer():
        while not done.is_set():
            try:
                seen.add(predict(manager, "m", 2.0))
            except ServingError as error:
                failures.append(error)

    slow.set()
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        publish(templates, base, 2, "one")
        wait_until(lambda: states(manager, "m") == {2: State.AVAILABLE, 1: State.END})
        time.sleep(0.05)
    finally:
        done.set()
        thread.join()
    assert not failures
    assert seen == {(1, 3.0), (2, 2.0)}
    order = [event for event in events if event[0] == "m"]
    assert order.index(("m", 2, State.AVAILABLE)) < order.index(("m", 1, State.UNLOADING))
    assert order[-1] == ("m", 1, State.END)


@integration
def test_corrupt_version_retries_then_ends(templates, tmp_path, make_manager, caplog):
    base = tmp_path / "m"
    publish(templates, base, 1)
    calls = []

    def loader(name, version, path):
        calls.append(version)
        return load_servable(name, version, path)

    manager = make_manager(loader=loader, max_num_load_retries=2)
    manager.reload_config(config(("m", base)))
    with caplog.at_level(logging.INFO, logger="serving"):
        corrupt_version(base, 2)
        wait_until(lambda: states(manager, "m").get(2) == State.END)
        time.sleep(3 * POLL_S)  # not retried while it stays aspired
    assert calls.count(2) == 3
    status = manager.status("m", 2)[0]
    assert status.status.error_code == grpc.StatusCode.DATA_LOSS.value[0]
    assert "saved_model.pb" in status.status.error_message
    assert manager.available_versions("m") == [1]
    assert predict(manager, "m") == (1, 2.5)
    assert "Loading servable: {name: m version: 2} failed: DATA_LOSS" in caplog.text
    assert "Retrying of Loading servable: {name: m version: 2} retry: 2" in caplog.text
    # A good v3 still replaces v1; the failed v2 is forgotten once un-aspired.
    publish(templates, base, 3)
    wait_until(lambda: states(manager, "m") == {3: State.AVAILABLE, 2: State.END, 1: State.END})


@integration
def test_startup_failure_text(templates, tmp_path, make_manager):
    corrupt_version(tmp_path / "m", 1)
    manager = make_manager(max_num_load_retries=0)
    with pytest.raises(ServingError) as caught:
        manager.reload_config(config(("m", tmp_path / "m")))
    assert caught.value.code == grpc.StatusCode.UNKNOWN
    assert caught.value.message.startswith(
        "1 servable(s) did not become available: {{{name: m version: 1} due to error: DATA_LOSS: "
    )
    assert caught.value.message.endswith("}, }")


@integration
def test_bad_warmup_fails_the_load(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "m", 1, "bad_warmup")
    manager = make_manager(warmup=replay_warmup, max_num_load_retries=0)
    with pytest.raises(ServingError) as caught:
        manager.reload_config(config(("m", tmp_path / "m")))
    assert caught.value.message == (
        "1 servable(s) did not become available: {{{name: m version: 1} due to error: "
        "INVALID_ARGUMENT: Expects arg[0] to be float but double is provided}, }"
    )
    assert states(manager, "m") == {1: State.END}
    with pytest.raises(ServingError, match=r"Latest\(m\)"):
        manager.handle("m").__enter__()


@integration
def test_warmup_replayed_before_available(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "m", 1, "good_warmup")
    seen = []

    def warmup(servable):
        seen.append((servable.version, len(read_warmup_requests(servable.path))))
        seen.append(manager.status("m", servable.version)[0].state)
        replay_warmup(servable)

    manager = make_manager(warmup=warmup)
    manager.reload_config(config(("m", tmp_path / "m")))
    assert seen == [(1, 1), State.LOADING]
    assert manager.available_versions("m") == [1]


@integration
def test_reload_adds_and_removes_models(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "a", 1)
    publish(templates, tmp_path / "b", 1, "one")
    corrupt_version(tmp_path / "c", 1)
    manager = make_manager(max_num_load_retries=0)
    manager.reload_config(config(("a", tmp_path / "a")))
    manager.reload_config(config(("a", tmp_path / "a"), ("b", tmp_path / "b")))
    assert manager.available_versions("b") == [1]  # the reload blocked until b was loaded
    manager.reload_config(config(("b", tmp_path / "b")))
    assert manager.model_names() == ["b"]
    with pytest.raises(ServingError) as caught:
        predict(manager, "a")
    assert caught.value.message == "Servable not found for request: Latest(a)"
    wait_until(lambda: states(manager, "a") == {1: State.END})
    with pytest.raises(ServingError) as caught:
        manager.reload_config(config(("b", tmp_path / "b"), ("c", tmp_path / "c")))
    assert caught.value.message.startswith(
        "1 model(s) did not become available: {{{name: c version: 1} due to error: DATA_LOSS: "
    )
    assert predict(manager, "b") == (1, 1.0)


@integration
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c.ClearField("model_config_list"),
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        ),
        (
            lambda c: c.model_config_list.config.add().CopyFrom(c.model_config_list.config[0]),
            "Illegal to list model m multiple times in config list",
        ),
        (
            lambda c: setattr(c.model_config_list.config[0], "base_path", "rel/m"),
            "Expected model m to have an absolute path or URI; got base_path()=rel/m",
        ),
        (
            lambda c: c.model_config_list.config[0].ClearField("model_platform"),
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            lambda c: setattr(c.model_config_list.config[0], "model_platform", "onnx"),
            "Illegal to change a model's platform. For model m platform was tensorflow and new "
            "platform requested is onnx",
        ),
    ],
)
def test_invalid_reload_changes_nothing(templates, tmp_path, make_manager, mutate, message):
    publish(templates, tmp_path / "m", 1)
    manager = make_manager()
    good = config(("m", tmp_path / "m"))
    manager.reload_config(good)
    bad = model_server_config_pb2.ModelServerConfig()
    bad.CopyFrom(good)
    mutate(bad)
    with pytest.raises(ServingError) as caught:
        manager.reload_config(bad)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == message
    assert manager.model_names() == ["m"] and predict(manager, "m") == (1, 2.5)


@integration
def test_unsupported_platform(make_manager, tmp_path):
    bad = config(("m", tmp_path / "m"))
    bad.model_config_list.config[0].model_platform = "onnx"
    with pytest.raises(ServingError, match=r"^Model m requests unsupported platform onnx$"):
        make_manager().reload_config(bad)


@integration
def test_labels(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    for version in (1, 2):
        publish(templates, base, version)
    manager = make_manager()
    with pytest.raises(ServingError) as caught:  # nothing is available at start-up yet
        manager.reload_config(config(("m", base, {"all": True}), m={"stable": 1}))
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == (
        "Request to assign label to version 1 of model m, which is not currently available "
        "for inference"
    )
    assert manager.model_names() == []
    manager.reload_config(config(("m", base, {"all": True})))
    wait_until(lambda: manager.available_versions("m") == [1, 2])
    manager.reload_config(config(("m", base, {"all": True}), m={"stable": 1, "canary": 2}))
    assert predict(manager, "m", label="stable")[0] == 1
    assert predict(manager, "m", label="canary")[0] == 2
    with pytest.raises(ServingError) as caught:
        predict(manager, "m", label="nope")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Unrecognized servable version label: nope"
    with pytest.raises(ServingError, match="version 3 of model m"):
        manager.reload_config(config(("m", base, {"all": True}), m={"stable": 3}))
    assert predict(manager, "m", label="stable")[0] == 1  # the failed reload changed nothing


@integration
def test_labels_for_unavailable_versions_when_allowed(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    publish(templates, base, 1)
    manager = make_manager(allow_version_labels_for_unavailable_models=True)
    manager.reload_config(config(("m", base, {"all": True}), m={"stable": 1, "canary": 2}))
    assert predict(manager, "m", label="stable")[0] == 1
    with pytest.raises(ServingError) as caught:  # canary -> 2 is allowed, but 2 is not loaded
        predict(manager, "m", label="canary")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message == "Servable not found for request: Specific(m, 2)"
    # Moving an existing label still needs its new target loaded.
    with pytest.raises(ServingError, match="version 2 of model m"):
        manager.reload_config(config(("m", base, {"all": True}), m={"stable": 2, "canary": 2}))
    publish(templates, base, 2)
    wait_until(lambda: manager.available_versions("m") == [1, 2])
    manager.reload_config(config(("m", base, {"all": True}), m={"stable": 2}))
    assert predict(manager, "m", label="stable")[0] == 2


@integration
def test_status_texts_and_order(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    for version in (1, 2, 3):
        publish(templates, base, version)
    manager = make_manager()
    manager.reload_config(config(("m", base, {"all": True})))
    wait_until(lambda: manager.available_versions("m") == [1, 2, 3])
    assert [s.version for s in manager.status("m")] == [3, 2, 1]
    assert manager.status("m", 2)[0].state == State.AVAILABLE
    assert manager.status("m", 2)[0].status.error_code == 0
    for args, text in [
        (("nope",), "Could not find any versions of model nope"),
        (("m", 9), "Could not find version 9 of model m"),
    ]:
        with pytest.raises(ServingError) as caught:
            manager.status(*args)
        assert (caught.value.code, caught.value.message) == (grpc.StatusCode.NOT_FOUND, text)
    with pytest.raises(ServingError, match=r"^Servable not found for request: Specific\(m, 9\)$"):
        predict(manager, "m", version=9)
    shutil.rmtree(base / "1")  # deleting a version dir un-aspires it
    wait_until(lambda: states(manager, "m") == {3: 30, 2: 30, 1: State.END})


@integration
def test_unload_waits_for_in_flight_handle(templates, tmp_path, make_manager):
    base = tmp_path / "m"
    publish(templates, base, 1)
    manager = make_manager()
    manager.reload_config(config(("m", base)))
    with manager.handle("m") as held:
        publish(templates, base, 2, "one")
        wait_until(lambda: states(manager, "m") == {2: State.AVAILABLE, 1: State.UNLOADING})
        time.sleep(3 * POLL_S)
        assert manager.status("m", 1)[0].state == State.UNLOADING
        with pytest.raises(ServingError, match=r"Specific\(m, 1\)"):
            predict(manager, "m", version=1)
        # The held version still computes (a long `spin` run, as an in-flight request would).
        feed = {"x": np.array([2.0], np.float32), "rounds": np.array([200], np.int32)}
        assert held.run("spin", feed)["y"].tolist() == [3.0]
    wait_until(lambda: manager.status("m", 1)[0].state == State.END)


@integration
def test_missing_base_path_waits_then_loads(templates, tmp_path, make_manager, caplog):
    base = tmp_path / "later"
    manager = make_manager()
    errors = []

    def start():
        try:
            manager.reload_config(config(("m", base)))
        except ServingError as error:
            errors.append(error)

    with caplog.at_level(logging.INFO, logger="serving"):
        thread = threading.Thread(target=start)
        thread.start()
        time.sleep(3 * POLL_S)
        assert thread.is_alive()
        base.mkdir()
        time.sleep(3 * POLL_S)
        assert thread.is_alive()
        publish(templates, base, 5)
        thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    assert manager.available_versions("m") == [5]
    assert f"Could not find base path {base} for servable m" in caplog.text
    assert f"No versions of servable m found under base path {base}. Did you forget" in caplog.text


@integration
def test_stop_unloads_everything(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "m", 1)
    events = []
    manager = make_manager(listeners=[lambda *event: events.append(event)])
    manager.reload_config(config(("m", tmp_path / "m")))
    manager.stop()
    manager.stop()  # idempotent
    assert events == [
        ("m", 1, State.START),
        ("m", 1, State.LOADING),
        ("m", 1, State.AVAILABLE),
        ("m", 1, State.UNLOADING),
        ("m", 1, State.END),
    ]
    assert manager.model_names() == [] and manager.available_versions("m") == []


@integration
def test_stop_cancels_a_waiting_reload(tmp_path, make_manager):
    manager = make_manager()
    errors = []

    def start():
        try:
            manager.reload_config(config(("m", tmp_path / "never")))
        except ServingError as error:
            errors.append(error)

    thread = threading.Thread(target=start)
    thread.start()
    time.sleep(2 * POLL_S)
    manager.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert [e.code for e in errors] == [grpc.StatusCode.CANCELLED]


@integration
def test_slow_model_does_not_block_others(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "slow", 1)
    publish(templates, tmp_path / "fast", 1)
    release = threading.Event()

    def loader(name, version, path):
        if name == "slow":
            release.wait(10)
        return load_servable(name, version, path)

    manager = make_manager(loader=loader)
    thread = threading.Thread(
        target=manager.reload_config,
        args=(config(("slow", tmp_path / "slow"), ("fast", tmp_path / "fast")),),
    )
    thread.start()
    try:
        wait_until(lambda: manager.available_versions("fast") == [1])
        assert thread.is_alive() and states(manager, "slow") == {1: State.LOADING}
    finally:
        release.set()
        thread.join(10)
    assert manager.available_versions("slow") == [1]


# ---- serving/versions.py: pure decisions, no threads ----


def snaps(*entries) -> list[versions.VersionSnapshot]:
    """entries: (version, state, aspired)."""
    return [versions.VersionSnapshot(*entry) for entry in entries]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", 1),
        ("0007", 7),
        (" 12 ", 12),
        ("+3", 3),
        ("-2", -2),
        ("9223372036854775807", 2**63 - 1),
    ],
)
def test_parse_version_numbers(name, expected):
    assert versions.parse_version(name) == expected


@pytest.mark.parametrize(
    "name", ["tmp", ".1.partial", "1.0", "1_000", "", "9223372036854775808", "v1", "٣"]
)
def test_parse_version_rejects(name):
    assert versions.parse_version(name) is None


def test_index_children_duplicates():
    by_version, warnings = versions.index_children(["001", "1", "x", "2"])
    assert by_version == {1: "1", 2: "2"}
    assert warnings == [
        "Duplicate version directories detected. Version 1 will be loaded from 1, 001 will be "
        "ignored."
    ]


def test_aspired_versions_by_policy():
    found = {1: "1", 2: "2", 5: "005"}
    latest = versions.VersionPolicy()
    assert versions.aspired_versions(found, latest) == {5: "005"}
    assert list(versions.aspired_versions(found, versions.VersionPolicy(num_versions=2))) == [5, 2]
    assert versions.aspired_versions(found, versions.VersionPolicy("all")) == found
    specific = versions.VersionPolicy("specific", versions=frozenset({1, 9}))
    assert versions.aspired_versions(found, specific) == {1: "1"}
    assert versions.aspired_versions({}, latest) == {}
    warnings = versions.policy_warnings("m", "/b", found, specific)
    assert warnings == [
        "Version 9 of servable m, which was requested to be served as a 'specific' version in "
        "the servable's version policy, was not found in the file system"
    ]
    assert versions.policy_warnings("m", "/b", {}, latest) == [
        "No versions of servable m found under base path /b. Did you forget to name your leaf "
        "directory as a number (eg. '/1/')?"
    ]


def test_policy_from_proto():
    model = model_server_config_pb2.ModelConfig()
    assert versions.policy_from_proto(model.model_version_policy) == versions.VersionPolicy()
    model.model_version_policy.latest.num_versions = 0
    assert versions.policy_from_proto(model.model_version_policy).num_versions == 1
    model.model_version_policy.specific.versions.extend([3, 4])
    assert versions.policy_from_proto(model.model_version_policy) == versions.VersionPolicy(
        "specific", versions=frozenset({3, 4})
    )
    model.model_version_policy.all.SetInParent()
    assert versions.policy_from_proto(model.model_version_policy).kind == "all"


def test_next_action_rollout_preserves_availability():
    load, unload = versions.LOAD, versions.UNLOAD
    ready, loading = versions.READY, versions.LOADING
    # v2 appears: load it, keep v1.
    assert versions.next_action(snaps((1, ready, False), (2, versions.NEW, True))) == (
        versions.Action(load, 2)
    )
    # v2 loading: v1 is the only one serving, so nothing to do.
    assert versions.next_action(snaps((1, ready, False), (2, loading, True))) is None
    # v2 ready: now unload v1.
    assert versions.next_action(snaps((1, ready, False), (2, ready, True))) == (
        versions.Action(unload, 1)
    )
    # v2 failed for good: v1 keeps serving.
    assert versions.next_action(snaps((1, ready, False), (2, versions.FAILED, True))) is None
    # No aspired version at all (model removed): unload the lowest first.
    assert versions.next_action(snaps((2, ready, False), (1, ready, False))) == (
        versions.Action(unload, 1)
    )
    # Two un-aspired serving versions: unload the lowest even while the new one loads.
    assert versions.next_action(
        snaps((1, ready, False), (2, ready, False), (3, loading, True))
    ) == (versions.Action(unload, 1))
    # Highest new version loads first.
    assert versions.next_action(snaps((1, versions.NEW, True), (3, versions.NEW, True))) == (
        versions.Action(load, 3)
    )


def test_next_action_drops_what_never_served():
    for state in (versions.NEW, versions.FAILED):
        assert versions.next_action(snaps((2, state, False), (1, versions.READY, True))) == (
            versions.Action(versions.DROP, 2)
        )
    assert versions.next_action(snaps((1, versions.UNLOADING, False))) is None


def test_is_settled():
    assert versions.is_settled(snaps((1, versions.READY, True), (2, versions.FAILED, True)))
    assert versions.is_settled(snaps((1, versions.LOADING, False), (2, versions.READY, True)))
    assert not versions.is_settled(snaps((1, versions.LOADING, True)))
    assert not versions.is_settled(snaps((1, versions.NEW, True)))


def test_not_available_message():
    error = ServingError(grpc.StatusCode.NOT_FOUND, "gone")
    failures = [(versions.servable_id("a", 1), error), (versions.servable_id("b", 2), error)]
    assert versions.not_available_message(failures, first=True) == (
        "2 servable(s) did not become available: {{{name: a version: 1} due to error: "
        "NOT_FOUND: gone}, {{name: b version: 2} due to error: NOT_FOUND: gone}, }"
    )
    assert versions.not_available_message(failures[:1], first=False).startswith(
        "1 model(s) did not become available: {{{name: a version: 1}"
    )


# ---- serving/config_checks.py: pure config checks ----


def test_validate_config_pure():
    good = config(("m", "/models/m"), ("g", "gs://bucket/g"))
    config_checks.validate_config(good)
    legacy = config(("m", "/models/m"))
    legacy.model_config_list.config[0].ClearField("model_platform")
    legacy.model_config_list.config[0].model_type = model_server_config_pb2.TENSORFLOW
    config_checks.validate_config(legacy, good)
    legacy.model_config_list.config[0].model_platform = "tensorflow"
    with pytest.raises(ServingError, match=r"^Illegal setting both ModelServerConfig::model_type"):
        config_checks.validate_config(legacy)
    relative = config(("m", ""))
    with pytest.raises(ServingError, match=r"got base_path\(\)=$"):
        config_checks.validate_config(relative)


def test_label_map_rules():
    cfg = config(("m", "/m"), m={"stable": 1, "canary": 2})
    with pytest.raises(ServingError) as caught:
        config_checks.label_map(cfg, {"m": {1}}, {})
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 2 of model m" in caught.value.message
    assert config_checks.label_map(cfg, {"m": {1, 2}}, {}) == {"m": {"stable": 1, "canary": 2}}
    assert config_checks.label_map(cfg, {"m": {1}}, {}, allow_unavailable=True) == {
        "m": {"stable": 1, "canary": 2}
    }
    # Moving an existing label to an unavailable version is refused even when allowed.
    with pytest.raises(ServingError, match="version 2 of model m"):
        config_checks.label_map(cfg, {"m": {1}}, {"m": {"canary": 1}}, allow_unavailable=True)
    # Re-stating the same mapping is fine.
    assert config_checks.label_map(
        cfg, {}, {"m": {"stable": 1, "canary": 2}}, allow_unavailable=True
    )
