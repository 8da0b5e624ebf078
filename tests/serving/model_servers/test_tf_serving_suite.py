"""TF Serving's own server tests (`model_servers/tensorflow_model_server_test.py`), ported.

One test per upstream test that can run here, named after it, with upstream's requests and
expected answers, against the real `python -m serving` process on free loopback ports and the
half_plus_two models of TF Serving's test data (written by `tests/serving/tf1_models.py`,
version 123). As upstream's `RunServer`, one server runs per distinct set of flags; the
monitoring config rides on the default server instead of a second one.

Not ported: testPredictOnTfLite and testPredictWithSignatureDefOnTfLite (no TensorFlow Lite
here: `--prefer_tflite_model` is refused), test_profiler_service_with_valid_trace_request (no
ProfilerService), test_tf_text (TF Text ops and upstream's binary model).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    regression_pb2,
)

from tests.serving.model_servers.tf_serving_base import (
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    HALF_PLUS_TWO_TF2,
    ONE_MODEL_CONFIG,
    RPC_TIMEOUT,
    VERSION,
    add_example,
    prediction,
    run_cli,
    verify_model_spec,
    verify_predict,
)
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_server(tfs_server, tfs_testdata):
    return tfs_server(
        "--model_name=default",
        f"--model_base_path={tfs_testdata / HALF_PLUS_TWO}",
        f"--monitoring_config_file={tfs_testdata / 'monitoring_config.txt'}",
    )


@pytest.fixture(scope="module", params=["tf1", "tf2"])
def half_plus_two_server(request, tfs_server, default_server, tfs_testdata):
    """The TF1 model, then the TF2 one (upstream's testX and testXTf2)."""
    if request.param == "tf1":
        return default_server
    return tfs_server(
        "--model_name=default", f"--model_base_path={tfs_testdata / HALF_PLUS_TWO_TF2}"
    )


# -- gRPC -------------------------------------------------------------------------------------


def test_get_model_status(default_server):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(default_server.channel)
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(default_server):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = prediction(default_server.channel).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert list(result.metadata) == ["signature_def"]


def test_classify(half_plus_two_server):
    """testClassify, testClassifyTf2."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    add_example(request.input, 2.0)
    result = prediction(half_plus_two_server.channel).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_regress(half_plus_two_server):
    """testRegress, testRegressTf2."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    add_example(request.input, 2.0)
    result = prediction(half_plus_two_server.channel).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


def test_multi_inference(half_plus_two_server):
    """testMultiInference, testMultiInferenceTf2."""
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
    ):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
    add_example(request.input, 2.0)
    result = prediction(half_plus_two_server.channel).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        spec = request.tasks[i].model_spec
        verify_model_spec(result.results[i].model_spec, "default", spec.signature_name, VERSION)


def test_predict_saved_model(default_server):
    """testPredictSavedModel (`_TestPredict`): with and without the output filter."""
    verify_predict(default_server.channel, expected_output=3.0)
    verify_predict(default_server.channel, expected_output=3.0, specify_output=False)


def test_bad_model(tmp_path):
    """_TestBadModel (disabled upstream): a SessionBundle-era export is no SavedModel.

    Upstream expected a running server answering FAILED_PRECONDITION; today's
    tensorflow_model_server fails start-up when an initial version cannot load, so that is what
    is checked (with no load retries, which would otherwise take five minutes).
    """
    version = tmp_path / "bad_half_plus_two" / str(VERSION)
    version.mkdir(parents=True)
    for name in ("export.meta", "export", "checkpoint"):
        (version / name).write_bytes(b"not a SavedModel")
    result = run_cli(
        "--model_name=default",
        f"--model_base_path={version.parent}",
        "--max_num_load_retries=0",
    )
    assert result.returncode == 255
    assert "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available" in (
        result.stderr
    )
    assert (
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {version}"
        in result.stderr
    )


def test_good_model_config(tfs_server, tfs_testdata):
    server = tfs_server(f"--model_config_file={tfs_testdata / 'good_model_config.conf'}")
    for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        verify_predict(server.channel, model_name=name, expected_output=expected)
        verify_predict(
            server.channel, model_name=name, expected_output=expected, specify_output=False
        )


def test_bad_model_config(tfs_testdata):
    result = run_cli(f"--model_config_file={tfs_testdata / 'bad_model_config.txt'}")
    assert result.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr


def _config_reload(tfs_server, tfs_testdata, tmp_path, poll_period: int) -> tuple:
    config = tmp_path / "model_config.txt"
    config.write_text(
        ONE_MODEL_CONFIG.format(name="half_plus_two", path=tfs_testdata / HALF_PLUS_TWO)
    )
    server = tfs_server(
        f"--model_config_file={config}", f"--model_config_file_poll_wait_seconds={poll_period}"
    )
    verify_predict(server.channel, model_name="half_plus_two", expected_output=3.0)
    config.write_text(
        ONE_MODEL_CONFIG.format(name="half_plus_three", path=tfs_testdata / HALF_PLUS_THREE)
    )
    return server, config


def test_model_config_reload(tfs_server, tfs_testdata, tmp_path):
    server, _ = _config_reload(tfs_server, tfs_testdata, tmp_path, poll_period=1)

    def half_plus_three_served():
        try:
            verify_predict(server.channel, model_name="half_plus_three", expected_output=4.0)
        except grpc.RpcError:
            return False
        return True

    # Upstream sleeps 10 s once; polling for up to 30 s asks no more and flakes less.
    wait_for(half_plus_three_served, timeout=30, message="the polled config to load")


def test_model_config_reload_with_zero_poll_period(tfs_server, tfs_testdata, tmp_path):
    server, _ = _config_reload(tfs_server, tfs_testdata, tmp_path, poll_period=0)
    time.sleep(1)
    verify_predict(server.channel, model_name="half_plus_two", expected_output=3.0)


def test_good_grpc_channel_args(tfs_server, tfs_testdata):
    server = tfs_server(
        "--model_name=default",
        f"--model_base_path={tfs_testdata / HALF_PLUS_TWO}",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,"
        "grpc.so_reuseaddr=1",
    )
    verify_predict(server.channel, expected_output=3.0, specify_output=False)


def test_predict_uds(tfs_server, tfs_testdata, tmp_path):
    socket_path = tmp_path / "tf-serving.sock"
    tfs_server(
        "--model_name=default",
        f"--model_base_path={tfs_testdata / HALF_PLUS_TWO}",
        f"--grpc_socket_path={socket_path}",
    )
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        verify_predict(channel, expected_output=3.0, specify_output=False)


# -- TF2 and Keras exports made by the test ---------------------------------------------------


def _export_in_subprocess(code: str, export_path: Path) -> None:
    """Runs an export in a fresh interpreter (virtual CPUs must be set before TF starts)."""
    script = "from common.quiet import import_tensorflow\ntf = import_tensorflow()\n"
    script += textwrap.dedent(code).replace("EXPORT", repr(str(export_path)))
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=300)


def test_tf_saved_model_save(tfs_server, tmp_path):
    base = tmp_path / "tf_saved_model_save"
    _export_in_subprocess(
        """
        root = tf.train.Checkpoint(v1=tf.Variable(3.0), v2=tf.Variable(2.0))
        root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
        tf.saved_model.save(root, EXPORT, root.f.get_concrete_function(tf.TensorSpec(None)))
        """,
        base / "00000123",
    )
    server = tfs_server("--model_name=default", f"--model_base_path={base}")
    verify_predict(server.channel, expected_output=12.0, specify_output=False)


def test_tf_saved_model_save_multiple_signatures(tfs_server, tmp_path):
    base = tmp_path / "tf_saved_model_save_multiple_signatures"
    _export_in_subprocess(
        """
        spec = [tf.TensorSpec(None, tf.float32)]
        root = tf.train.Checkpoint()
        root.f = tf.function(lambda x: {"y": 1.0}, input_signature=spec)
        root.g = tf.function(lambda x: {"y": 2.0}, input_signature=spec)
        signatures = {"serving_default": root.f, "custom_signature_key": root.g}
        tf.saved_model.save(root, EXPORT, signatures=signatures)
        """,
        base / "00000123",
    )
    server = tfs_server("--model_name=default", f"--model_base_path={base}")
    verify_predict(server.channel, expected_output=2.0, signature_name="custom_signature_key")
    verify_predict(server.channel, expected_output=1.0)


KERAS_SEQUENTIAL = """
import keras
{setup}
with {scope}:
    model = keras.Sequential([keras.layers.Input(shape=(1,), dtype="float32", name="x")])
    {layers}
    model.add(keras.layers.Lambda(lambda t: t, name="y"))
tf.saved_model.save(model, EXPORT)
"""


def test_sequential_keras_saved_model_save(tfs_server, tmp_path):
    """Keras 3 names the signature's tensors `inputs` and `output_0` (Keras 2: x and y)."""
    base = tmp_path / "keras_sequential_saved_model_save"
    code = KERAS_SEQUENTIAL.format(
        setup="import contextlib", scope="contextlib.nullcontext()", layers="pass"
    )
    _export_in_subprocess(code, base / "00000123")
    server = tfs_server("--model_name=default", f"--model_base_path={base}")
    verify_predict(
        server.channel,
        expected_output=2.0,
        specify_output=False,
        batch_input=True,
        alias=("inputs", "output_0"),
    )


def test_distrat_sequential_keras_saved_model_save(tfs_server, tmp_path):
    """Upstream (Keras 2) answers 2.0; Keras 3 keeps the Dense weights where TF1's session
    loader, and so tensorflow_model_server, cannot find them: every Predict fails."""
    base = tmp_path / "keras_sequential_saved_model_save"
    setup = (
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "two = [tf.config.LogicalDeviceConfiguration()] * 2\n"
        "tf.config.set_logical_device_configuration(cpu, two)\n"
        "strategy = tf.distribute.MirroredStrategy(devices=('/cpu:0', '/cpu:1'))"
    )
    dense = "model.add(keras.layers.Dense(1, kernel_initializer='ones', bias_initializer='zeros'))"
    code = KERAS_SEQUENTIAL.format(setup=setup, scope="strategy.scope()", layers=dense)
    _export_in_subprocess(code, base / "00000123")
    server = tfs_server("--model_name=default", f"--model_base_path={base}")
    with pytest.raises(grpc.RpcError) as caught:
        verify_predict(
            server.channel,
            2.0,
            specify_output=False,
            batch_input=True,
            alias=("inputs", "output_0"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Kernel or bias, whichever read the runtime schedules first.
    assert caught.value.details().startswith("Could not find variable sequential/dense/")
