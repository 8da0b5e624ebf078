"""Config reloads that can't wedge the server, and loads on a bounded pool.

A reload answers by its deadline (the RPC's, or --model_config_reload_timeout_seconds for the
config-file poller) with the models that are not available yet; loads still running go on in the
background and later reloads proceed. --num_load_threads and --num_unload_threads bound how many
versions load or unload at once.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess, wait_for

State = get_model_status_pb2.ModelVersionStatus.State


def _config(*models: tuple) -> model_server_config_pb2.ModelServerConfig:
    """models: (name, base_path[, "all"]) tuples."""
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path, *policy in models:
        entry = config.model_config_list.config.add(
            name=name, base_path=str(base_path), model_platform="tensorflow"
        )
        if policy == ["all"]:
            entry.model_version_policy.all.SetInParent()
    return config


def _reload(channel, config, timeout: float) -> tuple[float, grpc.StatusCode, str]:
    """Sends HandleReloadConfigRequest; returns (seconds, code, details)."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    started = time.monotonic()
    try:
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=timeout
        )
        assert response.status.error_code == 0
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    return time.monotonic() - started, code, details


def _predict(channel, name: str, x: float = 2.0) -> tuple[int, float]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name))
    request.inputs["x"].CopyFrom(from_numpy(np.array([x], np.float32)))
    answer = stub.Predict(request, timeout=30)
    return answer.model_spec.version.value, float(to_numpy(answer.outputs["y"], "y")[0])


def _states(channel, name: str) -> dict[int, int]:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
    try:
        answer = stub.GetModelStatus(request, timeout=30)
    except grpc.RpcError:
        return {}
    return {s.version: s.state for s in answer.model_version_status}


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def _most_at_once(log: str, start: str, ends: tuple[str, ...], model: str) -> int:
    """The most `model` versions between a `start` line and one of its `ends` lines at once."""
    running = most = 0
    for line in log.splitlines():
        if f"{{name: {model} version:" not in line:
            continue
        if start in line:
            running += 1
            most = max(most, running)
        elif any(end in line for end in ends):
            running -= 1
    return most


@pytest.fixture(scope="module")
def half(tmp_path_factory) -> Path:
    """One known version (y = 0.5 x + 2), copied into each test's base paths."""
    return write_known_model(tmp_path_factory.mktemp("template") / "half", 1)


def _publish(template: Path, base: Path, *numbers: int) -> Path:
    for number in numbers:
        shutil.copytree(template, base / str(number))
    return base


def _server(tmp_path: Path, config, *flags: str) -> ServerProcess:
    config_file = tmp_path / "models.config"
    config_file.write_text(str(config))
    return ServerProcess(
        f"--model_config_file={config_file}",
        *flags,
        log_path=tmp_path / "server.log",
        rest=False,
    )


def test_reload_with_missing_base_paths_answers_by_its_deadline(tmp_path, half):
    """Before: the reload waited for `ghost` forever (DEADLINE_EXCEEDED at the client) and held
    the reload lock, so the next reload timed out too. Now it answers UNKNOWN with TF Serving's
    'did not become available' text naming each model and why, before the deadline."""
    base = _publish(half, tmp_path / "half", 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    ghost = tmp_path / "no-such-dir"
    with _server(tmp_path, _config(("half", base))) as server:
        config = _config(("half", base), ("ghost", ghost), ("empty", empty))
        seconds, code, details = _reload(server.channel, config, timeout=6)
        assert code == grpc.StatusCode.UNKNOWN, details
        assert seconds < 6
        assert details == (
            "2 model(s) did not become available: {"
            f"{{Latest(ghost) due to error: INVALID_ARGUMENT: Could not find base path {ghost} "
            f"for servable ghost with error NOT_FOUND: {ghost}; No such file or directory}}, "
            "{Latest(empty) due to error: NOT_FOUND: Unable to find a numerical version path "
            f"for servable empty at: {empty}}}, }}"
        )
        assert _predict(server.channel, "half") == (1, 3.0)
        # The lock was released: the next reload runs at once, and a version published under
        # the waited-for path still loads in the background.
        seconds, code, details = _reload(server.channel, config, timeout=10)
        assert (code, details) == (grpc.StatusCode.OK, "")
        _publish(half, empty, 4)
        wait_for(lambda: _states(server.channel, "empty") == {4: State.AVAILABLE})
        seconds, code, details = _reload(server.channel, _config(("half", base)), timeout=10)
        assert (code, details) == (grpc.StatusCode.OK, "")
        assert _predict(server.channel, "half") == (1, 3.0)


def test_a_waiting_reload_does_not_hold_up_the_next(tmp_path, half):
    """While one reload waits for a model that never comes, another adds a model and returns."""
    base = _publish(half, tmp_path / "half", 1)
    other = _publish(half, tmp_path / "other", 2)
    ghost = tmp_path / "no-such-dir"
    with _server(tmp_path, _config(("half", base))) as server:
        first: list = []
        waiting = threading.Thread(
            target=lambda: first.append(
                _reload(server.channel, _config(("half", base), ("ghost", ghost)), timeout=8)
            )
        )
        waiting.start()
        wait_for(lambda: "(Re-)adding model: ghost" in server.log(), message="the first reload")
        config = _config(("half", base), ("ghost", ghost), ("other", other))
        _seconds, code, details = _reload(server.channel, config, timeout=15)
        assert (code, details) == (grpc.StatusCode.OK, "")
        assert waiting.is_alive()  # still waiting for ghost, yet it held nothing up
        assert _predict(server.channel, "other") == (2, 3.0)
        waiting.join(30)
        assert first[0][1] == grpc.StatusCode.UNKNOWN
        assert first[0][2].startswith("1 model(s) did not become available: {{Latest(ghost) ")


def test_config_file_poller_gives_up_after_its_timeout(tmp_path, half):
    """Before: the poller's reload of a config naming a missing path never returned, and every
    later reload (a rollout over gRPC) hung behind it."""
    base = _publish(half, tmp_path / "half", 1)
    other = _publish(half, tmp_path / "other", 1)
    ghost = tmp_path / "no-such-dir"
    server = _server(
        tmp_path,
        _config(("half", base)),
        "--model_config_file_poll_wait_seconds=1",
        "--model_config_reload_timeout_seconds=2",
    )
    with server:
        (tmp_path / "models.config").write_text(str(_config(("half", base), ("ghost", ghost))))
        wait_for(
            lambda: (
                "PollFilesystemAndReloadConfig failed to ReloadConfig: UNKNOWN: 1 model(s) "
                "did not become available: {{Latest(ghost) due to error: INVALID_ARGUMENT: Could "
                f"not find base path {ghost}" in server.log()
            ),
            message="the poller's reload to time out",
        )
        config = _config(("half", base), ("ghost", ghost), ("other", other))
        _seconds, code, details = _reload(server.channel, config, timeout=15)
        assert (code, details) == (grpc.StatusCode.OK, "")
        assert _predict(server.channel, "other") == (1, 3.0)
        assert _predict(server.channel, "half") == (1, 3.0)


@pytest.mark.parametrize(("load_threads", "unload_threads"), [(0, 0), (2, 3)])
def test_loads_and_unloads_run_on_bounded_pools(tmp_path, half, load_threads, unload_threads):
    """Policy `all` over 8 versions: before, all 8 loaded at once whatever --num_load_threads
    said. Now at most N load at once (0: one at a time, on the manager's thread), which the
    load log lines and GetModelStatus (at most N versions LOADING) both show; unloads likewise."""
    base = _publish(half, tmp_path / "many", *range(1, 9))
    first = _publish(half, tmp_path / "first", 1)
    server = _server(
        tmp_path,
        _config(("first", first)),
        f"--num_load_threads={load_threads}",
        f"--num_unload_threads={unload_threads}",
    )
    with server:
        loading_seen, done = [], threading.Event()

        def watch():
            while not done.is_set():
                states = _states(server.channel, "many")
                loading_seen.append(sum(s == State.LOADING for s in states.values()))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            config = _config(("first", first), ("many", base, "all"))
            _seconds, code, details = _reload(server.channel, config, timeout=120)
            assert (code, details) == (grpc.StatusCode.OK, "")
            wait_for(
                lambda: (
                    _states(server.channel, "many") == dict.fromkeys(range(1, 9), State.AVAILABLE)
                )
            )
        finally:
            done.set()
            watcher.join()
        assert _predict(server.channel, "many") == (8, 3.0)
        _seconds, code, details = _reload(server.channel, _config(("first", first)), timeout=60)
        assert code == grpc.StatusCode.OK
        wait_for(lambda: _states(server.channel, "many") == dict.fromkeys(range(1, 9), State.END))
        log = server.log()
    loads = _most_at_once(
        log,
        "Loading servable version",
        ("Successfully loaded servable version", "exhausted max_num_retries", "was cancelled"),
        "many",
    )
    unloads = _most_at_once(
        log, "Unloading servable version", ("Done unloading servable version",), "many"
    )
    assert 1 <= loads <= max(load_threads, 1)
    assert max(loading_seen) <= max(load_threads, 1)
    assert 1 <= unloads <= max(unload_threads, 1)
    if load_threads == 0:
        assert "Loading servable version {name: many version: 8}" in log
        # One at a time, highest version first.
        order = re.findall(r"Loading servable version \{name: many version: (\d+)\}", log)
        assert order == [str(v) for v in range(8, 0, -1)]


def test_reload_listing_2000_missing_models(tmp_path, half):
    """2,000 entries at missing paths: the reload answers within its deadline naming them, no
    thread is made per model, the other model serves throughout, and each missing base path is
    logged once rather than on every poll."""
    base = _publish(half, tmp_path / "half", 1)
    with _server(tmp_path, _config(("half", base))) as server:
        pid = server.process.pid
        threads_before = _threads(pid)
        config = _config(("half", base))
        for i in range(2000):
            config.model_config_list.config.add(
                name=f"ghost{i}",
                base_path=f"{tmp_path}/missing/ghost{i}",
                model_platform="tensorflow",
            )
        served: list = []
        done = threading.Event()

        def traffic():
            while not done.is_set():
                served.append(_predict(server.channel, "half"))

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            seconds, code, details = _reload(server.channel, config, timeout=8)
            time.sleep(3)  # a few file-system polls
            threads_after = _threads(pid)
        finally:
            done.set()
            thread.join()
        assert code == grpc.StatusCode.UNKNOWN
        assert seconds < 8
        assert details.startswith("2000 model(s) did not become available: {{Latest(ghost0) ")
        assert threads_after <= threads_before + 4
        assert served and set(served) == {(1, 3.0)}
        assert server.log().count(f"Could not find base path {tmp_path}/missing/ghost7 ") == 1
        seconds, code, details = _reload(server.channel, _config(("half", base)), timeout=15)
        assert (code, details) == (grpc.StatusCode.OK, "")
        assert _predict(server.channel, "half") == (1, 3.0)
