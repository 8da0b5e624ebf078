"""The version manager's load and unload pools, and reloads that stop waiting at their timeout."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest

from serving.core import versions
from serving.errors import ServingError
from tests.serving.core.conftest import POLL_S
from tests.serving.core.test_manager import State, config, predict, publish, states, wait_until

integration = pytest.mark.integration


def seen(manager, name: str) -> dict[int, int]:
    """The model's version states, {} before the manager has seen it."""
    try:
        return states(manager, name)
    except ServingError:
        return {}


def most_at_once(events, name: str, start: int, ends: tuple[int, ...]) -> int:
    """The most versions of `name` between a `start` event and one of `ends` at the same time."""
    running = most = 0
    for model, _, state in events:
        if model != name:
            continue
        if state == start:
            running += 1
            most = max(most, running)
        elif state in ends and running:
            running -= 1
    return most


@integration
@pytest.mark.parametrize(("load_threads", "unload_threads"), [(0, 0), (2, 0), (3, 2)])
def test_pool_bounds_loads_and_unloads(
    templates, tmp_path, make_manager, caplog, load_threads, unload_threads
):
    """Before the pools, each load and unload had its own thread: all 6 versions at once."""
    publish(templates, tmp_path / "first", 1)
    for number in range(1, 7):
        publish(templates, tmp_path / "many", number)
    events = []
    manager = make_manager(
        num_load_threads=load_threads,
        num_unload_threads=unload_threads,
        listeners=[lambda *event: events.append(event)],
    )
    manager.reload_config(config(("first", tmp_path / "first")))
    manager.reload_config(
        config(("first", tmp_path / "first"), ("many", tmp_path / "many", {"all": True}))
    )
    assert manager.available_versions("many") == [1, 2, 3, 4, 5, 6]
    loads = most_at_once(events, "many", State.LOADING, (State.AVAILABLE, State.END))
    assert 1 <= loads <= max(load_threads, 1)
    if load_threads == 0:  # one at a time, highest first, as TF Serving's manager thread
        order = [v for m, v, s in events if m == "many" and s == State.LOADING]
        assert order == [6, 5, 4, 3, 2, 1]
    # A version queued for unloading is UNLOADING (no longer served) at once, so the unloads
    # themselves are seen in the log.
    with caplog.at_level(logging.INFO, logger="serving"):
        manager.reload_config(config(("first", tmp_path / "first")))
        wait_until(lambda: states(manager, "many") == dict.fromkeys(range(1, 7), State.END))
    lines = [(r.getMessage(), r.args[0]) for r in caplog.records if "many" in str(r.args)]
    running = unloads = 0
    for message, _ in lines:
        if message.startswith("Unloading servable version"):
            running += 1
            unloads = max(unloads, running)
        elif message.startswith("Done unloading servable version"):
            running -= 1
    assert 1 <= unloads <= max(unload_threads, 1)


@integration
def test_queued_versions_stay_start_until_a_thread_takes_them(templates, tmp_path, make_manager):
    """With one load thread busy, the next version is START (queued), not LOADING."""
    publish(templates, tmp_path / "first", 1)
    for number in (1, 2):
        publish(templates, tmp_path / "m", number)
    release = threading.Event()

    def loader(name, version, path):
        if name == "m" and version == 2:
            release.wait(10)
        from serving.servables.saved_model import load_servable

        return load_servable(name, version, path)

    manager = make_manager(loader=loader, num_load_threads=1)
    manager.reload_config(config(("first", tmp_path / "first")))
    thread = threading.Thread(
        target=manager.reload_config,
        args=(config(("first", tmp_path / "first"), ("m", tmp_path / "m", {"all": True})),),
    )
    thread.start()
    try:
        wait_until(lambda: seen(manager, "m") == {2: State.LOADING, 1: State.START})
        time.sleep(3 * POLL_S)
        assert states(manager, "m") == {2: State.LOADING, 1: State.START}
    finally:
        release.set()
        thread.join(10)
    assert manager.available_versions("m") == [1, 2]


@integration
def test_reload_timeout_names_what_is_not_available(templates, tmp_path, make_manager):
    """Before: the reload waited for `ghost` for ever, holding the reload lock."""
    publish(templates, tmp_path / "a", 1)
    (tmp_path / "empty").mkdir()
    manager = make_manager()
    manager.reload_config(config(("a", tmp_path / "a")))
    ghost = tmp_path / "ghost"
    bad = config(("a", tmp_path / "a"), ("ghost", ghost), ("empty", tmp_path / "empty"))
    started = time.monotonic()
    with pytest.raises(ServingError) as caught:
        manager.reload_config(bad, timeout=0.5)
    assert time.monotonic() - started < 5
    assert caught.value.code == grpc.StatusCode.UNKNOWN
    assert caught.value.message == (
        "2 model(s) did not become available: {"
        f"{{Latest(ghost) due to error: INVALID_ARGUMENT: Could not find base path {ghost} for "
        f"servable ghost with error NOT_FOUND: {ghost}; No such file or directory}}, "
        "{Latest(empty) due to error: NOT_FOUND: Unable to find a numerical version path for "
        f"servable empty at: {tmp_path / 'empty'}}}, }}"
    )
    # Nothing is held: the next reload applies at once, and ghost loads once it appears.
    manager.reload_config(bad, timeout=0.5)
    publish(templates, ghost, 3)
    wait_until(lambda: manager.available_versions("ghost") == [3])
    assert predict(manager, "a") == (1, 2.5)


@integration
def test_reload_timeout_names_a_version_still_loading(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "a", 1)
    publish(templates, tmp_path / "slow", 4)
    release = threading.Event()

    def loader(name, version, path):
        if name == "slow":
            release.wait(10)
        from serving.servables.saved_model import load_servable

        return load_servable(name, version, path)

    manager = make_manager(loader=loader)
    manager.reload_config(config(("a", tmp_path / "a")))
    try:
        with pytest.raises(ServingError) as caught:
            manager.reload_config(
                config(("a", tmp_path / "a"), ("slow", tmp_path / "slow")), timeout=0.3
            )
        assert caught.value.message == (
            "1 model(s) did not become available: {{{name: slow version: 4}}, }"
        )
    finally:
        release.set()
    wait_until(lambda: manager.available_versions("slow") == [4])


@integration
def test_stop_waits_for_a_held_version_before_unloading_it(templates, tmp_path, make_manager):
    publish(templates, tmp_path / "m", 1)
    manager = make_manager()
    manager.reload_config(config(("m", tmp_path / "m")))
    stopped = threading.Event()
    with manager.handle("m") as servable:
        thread = threading.Thread(target=lambda: (manager.stop(), stopped.set()))
        thread.start()
        time.sleep(5 * POLL_S)
        assert not stopped.is_set()
        assert servable.version == 1
    thread.join(10)
    assert stopped.is_set()
    assert states(manager, "m") == {1: State.END}


def test_not_available_message_without_error():
    failures = [(versions.latest_request("g"), None), (versions.servable_id("s", 2), None)]
    assert versions.not_available_message(failures, first=False) == (
        "2 model(s) did not become available: {{Latest(g)}, {{name: s version: 2}}, }"
    )


def test_next_action_drops_a_queued_load():
    snaps = [
        versions.VersionSnapshot(2, versions.QUEUED, False),
        versions.VersionSnapshot(1, versions.READY, True),
    ]
    assert versions.next_action(snaps) == versions.Action(versions.DROP, 2)
    assert not versions.is_settled([versions.VersionSnapshot(1, versions.QUEUED, True)])
