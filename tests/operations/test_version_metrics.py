"""The embedded server's per-version metrics: the version-state gauge and per-version latency.

TF Serving's metrics carry no version, so a canary and its stable version look the same on them.
These two families are the embedded server's own (docs/operations.md); TF Serving's stay as they
were, which `test_tf_serving_latency_still_counts_every_request` pins. TensorFlow's SavedModel
load metrics, which TF Serving exports under `:tensorflow:cc:saved_model:`, are checked here too.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from google.protobuf import text_format, wrappers_pb2
from tensorflow_serving.apis import (
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.core.manager import ModelManager
from serving.model_servers.metrics import VERSION_STATES, Metrics, VersionStateGauge
from serving.servables.saved_model import load_servable
from serving.tensors import from_numpy
from tests.known_models import write_known_model
from tests.operations.exposition import METRICS_PATH, page, samples, value
from tests.support import ServerProcess, corrupt_version

STATE = "serving_embedded_version_state"
LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
VERSION_LATENCY = "serving_embedded_version_request_latency_count"
TF_LATENCY = ":tensorflow:serving:request_latency_count"
CONFIG = """
model_config_list {{
  config {{
    name: "half" base_path: "{base}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ {versions} }} }}
    {labels}
  }}
}}
"""


def _config(base, versions: dict[int, str]) -> str:
    """A config serving `versions` (number -> its label, or "" for none) of model `half`."""
    listed = " ".join(f"versions: {v}" for v in versions)
    labels = " ".join(
        f'version_labels {{ key: "{label}" value: {v} }}' for v, label in versions.items() if label
    )
    return CONFIG.format(base=base, versions=listed, labels=labels)


def _states(text: str, version: int) -> dict[str, tuple[str, float]]:
    """State name -> (label, value) of one version of `half` on a metrics page."""
    found = {}
    for labels, number in samples(text, STATE).items():
        entry = dict(labels)
        if entry["model_name"] == "half" and entry["version"] == str(version):
            found[entry["state"]] = (entry["label"], number)
    return found


def _current(text: str, version: int) -> tuple[str, str] | None:
    """(state, label) of the version's one series valued 1, or None if the page has none."""
    states = _states(text, version)
    if not states:
        return None
    assert set(states) == set(VERSION_STATES), states
    current = [(state, label) for state, (label, number) in states.items() if number == 1]
    assert len(current) == 1, f"version {version} must be in exactly one state: {states}"
    return current[0]


def _wait_for(rest_port: int, version: int, expected: tuple[str, str], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (current := _current(page(rest_port), version)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"version {version} is {current}, expected {expected}")
        time.sleep(0.1)


def _predict(stub, **spec) -> None:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half", **spec))
    request.inputs["x"].CopyFrom(from_numpy(np.array([2.0], np.float32)))
    stub.Predict(request, timeout=30)


def _reload(channel, text: str) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
        request, timeout=60
    )
    assert answer.status.error_code == 0, answer.status.error_message


def _serve_canary(server) -> None:
    """Versions 1 (stable) and 2 (canary) both AVAILABLE, whatever an earlier test left."""
    # Both loaded first, unlabelled: TF Serving refuses to move a label to a version that is
    # not AVAILABLE, even with --allow_version_labels_for_unavailable_models.
    _reload(server.channel, _config(server.base, {1: "", 2: ""}))
    _wait_for(server.rest_port, 1, ("AVAILABLE", ""))
    _wait_for(server.rest_port, 2, ("AVAILABLE", ""))
    _reload(server.channel, _config(server.base, {1: "stable", 2: "canary"}))
    _wait_for(server.rest_port, 1, ("AVAILABLE", "stable"))
    _wait_for(server.rest_port, 2, ("AVAILABLE", "canary"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("version-metrics")
    base = root / "models" / "half"
    write_known_model(base, 1, a=0.5, b=2.0)
    write_known_model(base, 2, a=1.0, b=0.0)
    config = root / "models.config"
    config.write_text(_config(base, {1: "stable"}))
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
    process = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={monitoring}",
        # A canary's label is set in the same reload that loads it, as the rollout tool does.
        "--allow_version_labels_for_unavailable_models",
        log_path=root / "server.log",
    ).start()
    process.base = base
    yield process
    assert process.stop() == 0, process.log()


def test_state_gauge_follows_a_canary_load_a_promotion_and_an_unload(server):
    """Catches a gauge that misses a transition, keeps a stale label, or drops END versions."""
    # Prepare: version 1 is the only one configured, labelled stable.
    text = page(server.rest_port)
    assert _current(text, 1) == ("AVAILABLE", "stable")
    assert _current(text, 2) is None, "a version on disk but not configured has no series"

    # Send: version 2 joins as the canary.
    _reload(server.channel, _config(server.base, {1: "stable", 2: "canary"}))
    # Verify: a reload waits only for new models, so version 2 becomes AVAILABLE after it.
    _wait_for(server.rest_port, 2, ("AVAILABLE", "canary"))
    assert _current(page(server.rest_port), 1) == ("AVAILABLE", "stable")

    # Send: promote 2 and drop 1 from the policy, so version 1 unloads.
    _reload(server.channel, _config(server.base, {2: "stable"}))
    # Verify: version 1 ends (it stays on the page as END, as GetModelStatus keeps reporting it).
    _wait_for(server.rest_port, 1, ("END", ""))
    assert _current(page(server.rest_port), 2) == ("AVAILABLE", "stable")


def test_version_latency_counts_the_requests_each_version_answered(server):
    """Catches per-version latency recorded under the wrong version (e.g. the newest), or not
    recorded for requests naming a label."""
    _serve_canary(server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    before = page(server.rest_port)

    for _ in range(3):
        _predict(stub, version_label="stable")
    for _ in range(5):
        _predict(stub, version_label="canary")
    _predict(stub)  # no version: the highest AVAILABLE one, 2

    after = page(server.rest_port)
    for version, sent in (("1", 3), ("2", 6)):
        labels = {"model_name": "half", "version": version, "API": "Predict"}
        old = value(before, VERSION_LATENCY, **labels) or 0
        assert value(after, VERSION_LATENCY, **labels) - old == sent, version


def test_tf_serving_latency_still_counts_every_request(server):
    """Catches the per-version histogram replacing TF Serving's own, which has no version."""
    _serve_canary(server)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    labels = {"model_name": "half", "API": "Predict", "entrypoint": "GRPC"}
    before = value(page(server.rest_port), TF_LATENCY, **labels) or 0
    _predict(stub, version=wrappers_pb2.Int64Value(value=1))
    _predict(stub, version_label="canary")
    assert value(page(server.rest_port), TF_LATENCY, **labels) - before == 2
    assert "version" not in dict(next(iter(samples(page(server.rest_port), TF_LATENCY))))


def test_a_version_is_loading_while_its_load_runs(tmp_path):
    """Catches a gauge that only knows settled states (the stuck-load alert needs LOADING)."""
    # Prepare: a real manager and loader, with the load held at a gate.
    write_known_model(tmp_path / "half", 1)
    gate, entered = threading.Event(), threading.Event()

    def gated_loader(name, version, path):
        entered.set()
        gate.wait(60)
        return load_servable(name, version, path)

    manager = ModelManager(
        loader=gated_loader,
        file_system_poll_wait_seconds=0,
        allow_version_labels_for_unavailable_models=True,
    )
    metrics = Metrics()
    metrics.version_state.watch(manager.version_states)
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(_config(tmp_path / "half", {1: "stable"}), config)
    loading = threading.Thread(target=manager.reload_config, args=(config,))
    try:
        # Send: the config, whose load blocks at the gate.
        loading.start()
        assert entered.wait(60)
        # Verify: LOADING while the loader runs, AVAILABLE after.
        assert _current(metrics.render(), 1) == ("LOADING", "stable")
        gate.set()
        loading.join(60)
        assert _current(metrics.render(), 1) == ("AVAILABLE", "stable")
    finally:
        gate.set()
        loading.join(60)
        manager.stop()


def test_load_metrics_count_each_attempt_and_time_the_successful_ones(tmp_path):
    """Catches a failed load counted as a success, or timed: TensorFlow's loader metrics (which
    TF Serving exports) count every attempt and time successful loads only."""
    # Prepare: version 1 loads, version 3 is garbage; no retries, so one attempt each.
    good = write_known_model(tmp_path / "half", 1)
    bad = corrupt_version(tmp_path / "half", 3)
    metrics = Metrics()
    manager = ModelManager(
        loader=metrics.measure_loads(load_servable),
        file_system_poll_wait_seconds=0,
        max_num_load_retries=0,
    )
    metrics.version_state.watch(manager.version_states)
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(_config(tmp_path / "half", {1: "", 3: ""}), config)
    try:
        # Send: the config (it returns once both loads are done: one AVAILABLE, one failed).
        manager.reload_config(config, timeout=60)
        text = metrics.render()
    finally:
        manager.stop()
    # Verify.
    assert value(text, LOAD_ATTEMPTS, model_path=str(good), status="success") == 1
    assert value(text, LOAD_ATTEMPTS, model_path=str(bad), status="fail") == 1
    assert value(text, LOAD_ATTEMPTS, model_path=str(bad), status="success") is None
    assert value(text, LOAD_LATENCY, model_path=str(good)) > 0
    assert value(text, LOAD_LATENCY, model_path=str(bad)) is None
    assert _current(text, 1) == ("AVAILABLE", "")
    assert _current(text, 3) == ("END", "")


def test_an_unknown_state_is_an_error_naming_the_valid_ones():
    gauge = VersionStateGauge("g", "help")
    gauge.watch(lambda: [("half", 1, (), "READY")])
    with pytest.raises(ValueError, match=r"'READY'.*AVAILABLE"):
        gauge.samples()
