"""Faults around the server: a version copied in half, and kill -9 then a restart.

(A corrupt version, bad config reloads, a failing warmup, SIGTERM with requests in flight and
during a load are covered by tests marked `reliability` in tests/serving/model_servers/ and by
test_shutdown.py here.)
"""

from __future__ import annotations

import shutil
import signal
import threading

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess, wait_for

State = get_model_status_pb2.ModelVersionStatus.State


def _predict(channel, x: float = 1.0) -> tuple[int, float]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    request.inputs["x"].CopyFrom(from_numpy(np.array([x], np.float32)))
    answer = stub.Predict(request, timeout=30)
    return answer.model_spec.version.value, float(to_numpy(answer.outputs["y"], "y")[0])


def _states(channel) -> dict[int, int]:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="half")
    )
    return {
        s.version: s.state for s in stub.GetModelStatus(request, timeout=30).model_version_status
    }


def test_a_version_copied_in_half_loads_once_the_copy_completes(tmp_path):
    """`cp -r` into the base path is not atomic: the server first sees a version without its
    variables. The load fails and is retried; v1 serves meanwhile; once the copy is whole, v2
    loads and takes over, and no request fails."""
    base = tmp_path / "half"
    write_known_model(base, 1, a=0.5, b=2.0)
    complete = write_known_model(tmp_path / "staging", 2, a=0.5, b=3.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=20",
        "--load_retry_interval_micros=300000",
        log_path=tmp_path / "server.log",
        rest=False,
    )
    with server:
        failures, seen, stop = [], set(), threading.Event()

        def traffic():
            while not stop.is_set():
                try:
                    seen.add(_predict(server.channel))
                except grpc.RpcError as error:
                    failures.append(error.details())

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            partial = base / "2"
            partial.mkdir()
            shutil.copy(complete / "saved_model.pb", partial / "saved_model.pb")
            wait_for(
                lambda: "Retrying of Loading servable: {name: half version: 2}" in server.log(),
                timeout=60,
                message="the half-copied version to fail and be retried",
            )
            assert _predict(server.channel) == (1, 2.5)
            for item in complete.iterdir():  # the rest of the copy arrives
                if item.is_dir():
                    shutil.copytree(item, partial / item.name)
            wait_for(
                lambda: _states(server.channel).get(2) == State.AVAILABLE,
                timeout=60,
                message="v2 to load once whole",
            )
            wait_for(lambda: (2, 3.5) in seen, timeout=30, message="v2 to answer")
        finally:
            stop.set()
            thread.join()
        assert failures == []
        assert seen <= {(1, 2.5), (2, 3.5)}


def test_kill_9_then_restart_serves_the_same_answers(tmp_path):
    write_known_model(tmp_path / "half", 1, a=0.5, b=2.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={tmp_path / 'half'}",
        log_path=tmp_path / "server.log",
    )
    server.start()
    try:
        assert _predict(server.channel, 4.0) == (1, 4.0)
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(30) == -signal.SIGKILL
        server.channel.close()
        # The same command on the same ports: nothing was left behind that blocks it.
        server.start()
        assert _predict(server.channel, 4.0) == (1, 4.0)
    finally:
        assert server.stop() == 0, server.log()
