"""The slim client works with TensorFlow, SciPy and scikit-image made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT

# Installed first in the child: any import of TensorFlow (or the TF Serving API, which needs it),
# SciPy, scikit-image or scikit-learn fails as it would in a slim install without them (the
# classical fallbacks are the `classical` extra).
BLOCK_TENSORFLOW = """
import importlib.abc
import sys

BLOCKED = ("tensorflow", "tensorflow_serving", "keras", "tf_keras", "scipy", "skimage", "sklearn")


class BlockTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            message = f"{name} is blocked: the slim client must not need it"
            raise ModuleNotFoundError(message, name=name)
        return None


sys.meta_path.insert(0, BlockTensorFlow())
"""

CLIENT_SCRIPT = """
import numpy as np

from common.codec import decode, encode
from client.errors import ClientError
from client.transports.rest import RestTransport
from client.transports.grpc import GrpcTransport

grpc_port, rest_port = int(sys.argv[1]), int(sys.argv[2])
x = np.array([1.0, 2.0], np.float32)
assert decode(encode(x)).tolist() == [1.0, 2.0]
for made in (GrpcTransport(f"127.0.0.1:{grpc_port}"), RestTransport(f"http://127.0.0.1:{rest_port}")):
    with made as transport:
        outputs, version = transport.predict("half", {"x": x})
        assert outputs["y"].tolist() == [2.5, 3.0] and version == 1, (outputs, version)
        outputs, version = transport.predict("triple", {"x": x}, label="canary")
        assert outputs["y"].tolist() == [4.0, 7.0] and version == 2, (outputs, version)
        assert transport.status("half")[0]["state"] == "AVAILABLE"
        meta = transport.metadata("half")
        assert meta["signatures"]["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
        try:
            transport.predict("no_such_model", {"x": x})
            raise AssertionError("expected NOT_FOUND")
        except ClientError as error:
            assert error.code == "NOT_FOUND", error
# Pictures and the CLI need no extra; the classical fallbacks say which extra they need.
from client.api import ServingClient
from client.images.pictures import overlay_mask

mask = np.zeros((8, 8), bool)
mask[2:6, 2:6] = True
assert overlay_mask(np.zeros((8, 8, 3), np.uint8), mask).size == (8, 8)
import client.cli  # noqa: F401
with ServingClient.grpc(f"127.0.0.1:{grpc_port}", fallback="only") as client:
    try:
        client.segment(np.zeros((8, 8, 3), np.uint8))
        raise AssertionError("expected the fallback to name its extra")
    except ClientError as error:
        assert error.code == "FAILED_PRECONDITION", error
        assert "pip install 'tfserving-stack[classical]'" in error.message, error
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("slim client OK")
"""

IMPORT_SCRIPT = """
import sys

import common.codec
import common.contract
import client.api
import client.cli
import client.errors
import client.images.pictures
import client.images.preprocess
import client.transports.grpc
import common.wire.get_model_metadata_pb2
import common.wire.get_model_status_pb2
import common.wire.model_pb2
import common.wire.predict_pb2
import common.wire.tensor_pb2

loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "scipy", "skimage", "sklearn")
)
print(loaded)
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
def test_client_runs_with_tensorflow_blocked(known_server):
    ports = (str(known_server.port), str(known_server.rest_port))
    result = _run(BLOCK_TENSORFLOW + CLIENT_SCRIPT, *ports)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "slim client OK" in result.stdout


def test_blocker_really_blocks():
    result = _run(BLOCK_TENSORFLOW + "import tensorflow\n")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_client_modules_do_not_import_tensorflow():
    # A fresh interpreter: this test process has TensorFlow loaded already.
    result = _run(IMPORT_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
