"""Server lifecycle over real processes: start-up, rollouts, failed versions, reloads, SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

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
from tests.support import ROOT, ServerProcess, corrupt_version, port_open, wait_for

pytestmark = pytest.mark.integration

State = get_model_status_pb2.ModelVersionStatus


def config_text(root, *models, labels=None) -> str:
    entries = []
    for name in models:
        label_text = "".join(
            f'version_labels {{ key: "{k}" value: {v} }} ' for k, v in (labels or {}).items()
        )
        entries.append(
            f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" '
            f"{label_text}}}"
        )
    return "model_config_list { " + " ".join(entries) + " }\n"


def predict_y(channel, name="half", value=1.0, **spec):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, **spec))
    req.inputs["x"].CopyFrom(from_numpy(np.array([value], np.float32)))
    response = stub.Predict(req, timeout=30)
    return response.model_spec.version.value, float(to_numpy(response.outputs["y"], "y")[0])


def statuses(channel, name="half"):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
    try:
        found = stub.GetModelStatus(req, timeout=10).model_version_status
    except grpc.RpcError:
        return {}
    return {s.version: (s.state, s.status.error_message) for s in found}


def run_cli(*flags, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "serving", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.reliability
def test_rollout_keeps_serving_and_a_bad_version_never_replaces_a_good_one(tmp_path):
    """Prepare v1; Send traffic while v2 arrives, then a corrupt v3; Verify no request failed."""
    base = tmp_path / "models"
    write_known_model(base / "half", 1, a=0.5, b=2.0)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={base / 'half'}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=200000",
        log_path=tmp_path / "server.log",
        rest=False,
    )
    with server:
        failures, seen, stop = [], set(), threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    seen.add(predict_y(server.channel))
                except grpc.RpcError as error:
                    failures.append(error.details())

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            (base / "half" / "not-a-version").mkdir()
            write_known_model(base / "half", 2, a=0.5, b=3.0, warmup="good")
            wait_for(
                lambda: statuses(server.channel).get(1, (0,))[0] == State.END,
                message="v1 to be unloaded after v2 is available",
            )
            assert statuses(server.channel)[2][0] == State.AVAILABLE
            corrupt_version(base / "half", 3)
            wait_for(
                lambda: statuses(server.channel).get(3, (0,))[0] == State.END,
                message="v3 to fail for good",
            )
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join()
        assert failures == []
        assert seen == {(1, 2.5), (2, 3.5)}
        assert predict_y(server.channel) == (2, 3.5)
        state, message = statuses(server.channel)[3]
        assert state == State.END and message
        assert "Retrying of Loading servable: {name: half version: 3}" in server.log()


@pytest.mark.reliability
def test_startup_failure_exits_with_tf_servings_message(tmp_path):
    corrupt_version(tmp_path / "broken", 1)
    result = run_cli(
        "--model_name=broken",
        f"--model_base_path={tmp_path / 'broken'}",
        "--max_num_load_retries=0",
    )
    assert result.returncode == 255
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 1} due to error:" in result.stderr
    )


@pytest.mark.reliability
def test_bad_warmup_fails_the_load(tmp_path):
    write_known_model(tmp_path / "warm", 1, warmup="bad")
    result = run_cli(
        "--model_name=warm", f"--model_base_path={tmp_path / 'warm'}", "--max_num_load_retries=0"
    )
    assert result.returncode == 255
    assert "Expects arg[0] to be float but double is provided" in result.stderr


def test_ports_open_only_after_models_load(tmp_path):
    """With no version folder yet the server waits, with TF Serving's warning, and listens later."""
    server = ServerProcess(
        "--model_name=late",
        f"--model_base_path={tmp_path / 'late'}",
        "--file_system_poll_wait_seconds=1",
        log_path=tmp_path / "server.log",
    )
    server.start(wait=False)
    try:
        wait_for(
            lambda: (
                "No versions of servable late found under base path" in server.log()
                or "Could not find base path" in server.log()
            ),
            timeout=60,
            message="warning",
        )
        assert not port_open(server.port) and not port_open(server.rest_port)
        write_known_model(tmp_path / "late", 1)
        server.wait_ready(timeout=60)
        assert port_open(server.rest_port)
        assert predict_y(server.channel, "late") == (1, 2.5)
    finally:
        assert server.stop() == 0


@pytest.mark.reliability
def test_reload_config_rpc_and_config_file_polling(tmp_path):
    base = tmp_path / "models"
    write_known_model(base / "half", 1)
    write_known_model(base / "other", 1, a=2.0, b=0.0)
    write_known_model(base / "third", 1, a=1.0, b=1.0)
    config_file = tmp_path / "models.config"
    config_file.write_text(config_text(base, "half"))
    server = ServerProcess(
        f"--model_config_file={config_file}",
        "--model_config_file_poll_wait_seconds=1",
        log_path=tmp_path / "server.log",
        rest=False,
    )
    with server:
        stub = model_service_pb2_grpc.ModelServiceStub(server.channel)

        def reload(text):
            from google.protobuf import text_format

            req = model_management_pb2.ReloadConfigRequest(
                config=text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
            )
            return stub.HandleReloadConfigRequest(req, timeout=60)

        # Adding a model blocks until it is available; the status mirrors the gRPC status.
        response = reload(config_text(base, "half", "other"))
        assert response.status.error_code == 0
        assert predict_y(server.channel, "other", 2.0) == (1, 4.0)
        # A label on a version that is not loaded is refused without the allow flag.
        with pytest.raises(grpc.RpcError) as caught:
            reload(config_text(base, "half", labels={"stable": 2}))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == (
            "Request to assign label to version 2 of model half, which is not currently "
            "available for inference"
        )
        with pytest.raises(grpc.RpcError) as caught:
            reload(
                'model_config_list { config { name: "rel" base_path: "relative/path" '
                'model_platform: "tensorflow" } }'
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Dropping a model from the config unloads it.
        reload(config_text(base, "half"))
        with pytest.raises(grpc.RpcError) as caught:
            predict_y(server.channel, "other")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # The config file is polled: a model added there is served without any RPC.
        config_file.write_text(config_text(base, "half", "third"))
        wait_for(
            lambda: statuses(server.channel, "third").get(1, (0,))[0] == State.AVAILABLE,
            message="the polled config to load `third`",
        )
        assert predict_y(server.channel, "third", 1.0) == (1, 2.0)
        # A config file that no longer parses is logged and ignored; serving goes on.
        config_file.write_text("model_config_list { config { name: ")
        time.sleep(2.5)
        assert "Failed to read ModelServerConfig file" in server.log()
        assert predict_y(server.channel, "third", 1.0) == (1, 2.0)


@pytest.mark.reliability
def test_sigterm_drains_requests_in_flight(tmp_path):
    write_known_model(tmp_path / "half", 1)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={tmp_path / 'half'}",
        log_path=tmp_path / "server.log",
        rest=False,
    )
    server.start()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="half", signature_name="spin")
    )
    req.inputs["x"].CopyFrom(from_numpy(np.array([4.0], np.float32)))
    req.inputs["rounds"].CopyFrom(from_numpy(np.array([20000], np.int32)))
    started = time.perf_counter()
    future = stub.Predict.future(req, timeout=120)
    time.sleep(0.3)
    assert not future.done()
    server.process.send_signal(15)
    response = future.result()
    assert to_numpy(response.outputs["y"], "y").tolist() == [4.0]
    assert server.process.wait(60) == 0
    assert time.perf_counter() - started > 0.3
    server.channel = None
    server.stop()


def test_flag_errors_are_one_clear_line(tmp_path):
    result = run_cli("--model_name=x", "--model_base_path=/x", "--no_such_flag=1", timeout=60)
    assert result.returncode == 255
    assert "unknown flag --no_such_flag" in result.stderr
    result = run_cli("--model_base_path=/x", "--batching_parameters_file=/b.config", timeout=60)
    assert result.returncode == 255
    assert (
        "server_options.batching_parameters_file is set without setting "
        "server_options.enable_batching to true." in result.stderr
    )
    result = run_cli("--model_base_path=/x", "--port=abc", timeout=60)
    assert result.returncode == 255 and "--port expects int, got 'abc'" in result.stderr
    bad = tmp_path / "bad.config"
    bad_text = "model_config_list { nonsense: 1 }"
    bad.write_text(bad_text)
    result = run_cli(f"--model_config_file={bad}", timeout=60)
    assert result.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr
    # The server only reads config files; it never rewrites a bad one.
    assert bad.read_text() == bad_text
