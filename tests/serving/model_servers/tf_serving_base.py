"""The ported TF Serving tests' base (`tensorflow_model_server_test_base.py` in TF Serving).

Test data in TF Serving's layout (half_plus_two at version 123, half_plus_three, the TF2 twin,
the two-version model of the REST handler's tests), upstream's `RunServer` (one real
`python -m serving` per distinct set of flags, kept for the session) and its request helpers.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.tf1_models import write_half_plus_two, write_half_plus_two_tf2
from tests.support import ROOT, ServerProcess, free_port

RPC_TIMEOUT = 20.0
VERSION = 123
HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO_TF2 = "saved_model_half_plus_two_tf2_cpu"
HALF_PLUS_THREE = "saved_model_half_plus_three"
TWO_VERSIONS = "saved_model_half_plus_two_2_versions"
# One model in a ModelServerConfig, as upstream's config reload tests write it.
ONE_MODEL_CONFIG = """model_config_list {{
  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}
}}
"""


def write_testdata(root: Path) -> Path:
    """TF Serving's `servables/tensorflow/testdata`, as far as the ported tests use it."""
    write_half_plus_two(root / HALF_PLUS_TWO, VERSION, predict_examples=False)
    write_half_plus_two(root / HALF_PLUS_THREE, VERSION, b=3.0, predict_examples=False)
    write_half_plus_two_tf2(root / HALF_PLUS_TWO_TF2, VERSION)
    for version in (VERSION, VERSION + 1):
        # TensorFlow's cc/saved_model/testdata/half_plus_two, served under this name upstream.
        write_half_plus_two(root / TWO_VERSIONS, version, predict_examples=False, classify_x2=True)
    (root / "monitoring_config.txt").write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    (root / "good_model_config.conf").write_text(
        "model_config_list {\n"
        f'  config {{ name: "half_plus_two" base_path: "{root / HALF_PLUS_TWO}" '
        'model_platform: "tensorflow" }\n'
        f'  config {{ name: "half_plus_three" base_path: "{root / HALF_PLUS_THREE}" '
        'model_platform: "tensorflow" }\n'
        "}\n"
    )
    (root / "bad_model_config.txt").write_text("improperly formatted file\n")
    return root


class RunServer:
    """Upstream's `RunServer`: the same flags get the same running server.

    Args:
        log_dir: Where each server's log goes.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: dict[tuple[str, ...], ServerProcess] = {}

    def __call__(self, *flags: str) -> ServerProcess:
        if flags not in self.started:
            log = self.log_dir / f"server-{len(self.started)}.log"
            server = ServerProcess(*flags, "--rest_api_timeout_in_ms=5000", log_path=log)
            self.started[flags] = server.start()
        return self.started[flags]

    def stop_all(self) -> list[str]:
        """Stops every server; returns the logs of those that did not exit with 0."""
        return [s.log() for s in self.started.values() if s.stop() != 0]


def prediction(channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def verify_model_spec(spec, name: str, signature_name: str, version: int) -> None:
    """Upstream's `_VerifyModelSpec`."""
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


def verify_predict(
    channel,
    expected_output: float,
    expected_version: int = VERSION,
    model_name: str = "default",
    specify_output: bool = True,
    batch_input: bool = False,
    signature_name: str = "serving_default",
    alias: tuple[str, str] = ("x", "y"),
) -> None:
    """Upstream's `VerifyPredictRequest`: x = [2.0] as float_val, y read from float_val.

    Args:
        alias: The input and output aliases (upstream's models all say x and y).
    """
    x, y = alias
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs[x].dtype = types_pb2.DT_FLOAT
    request.inputs[x].float_val.append(2.0)
    request.inputs[x].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs[x].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append(y)
    result = prediction(channel).Predict(request, RPC_TIMEOUT)
    assert y in result.outputs
    assert result.outputs[y].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs[y].float_val) == [expected_output]
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def add_example(request_input, x: float) -> None:
    """One `tf.Example` with feature x = [x], as upstream's requests build them."""
    request_input.example_list.examples.add().features.feature["x"].float_list.value.append(x)


def run_cli(*flags: str) -> subprocess.CompletedProcess:
    """`python -m serving` on a free port, run to its end (for servers that must not start)."""
    return subprocess.run(
        [sys.executable, "-m", "serving", f"--port={free_port()}", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def call_rest(server: ServerProcess, path: str, body=None, raw: bool = False) -> tuple[int, object]:
    """Upstream's `CallREST`: GET when `body` is None, else POST it (a str as it is, else JSON).

    Returns:
        (HTTP status, the parsed JSON body, or the body's text when `raw`).
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=RPC_TIMEOUT)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=body if isinstance(body, str) else json.dumps(body))
        response = conn.getresponse()
        text = response.read().decode()
        return response.status, text if raw else json.loads(text)
    finally:
        conn.close()
