"""The slim client works with TensorFlow, SciPy and scikit-image made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT

TENSORFLOW = ("tensorflow", "tensorflow_serving", "keras", "tf_keras")
# The classical fallbacks' libraries: the `classical` extra, not in a slim install.
CLASSICAL = ("scipy", "skimage", "sklearn")

# Installed first in a child: any import of a BLOCKED package fails as it would in an install
# without it.
BLOCKER = """
import importlib.abc
import sys

BLOCKED = BLOCKED_NAMES


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked", name=name)
        return None


sys.meta_path.insert(0, Block())
"""

# The slim client: no TensorFlow (nor the TF Serving API, which needs it), no classical extra.
BLOCK_TENSORFLOW = BLOCKER.replace("BLOCKED_NAMES", repr(TENSORFLOW + CLASSICAL))

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


# Client and common test modules that import TensorFlow themselves, and why; every other module
# there (and the shared conftest and support) must import without it, so client tests do not
# pay for it. The server they talk to runs in its own process; fixtures that write SavedModels
# import `tests.known_models` inside the fixture.
NEEDS_TENSORFLOW = {
    "tests.client.test_api": "publishes a trained run (export.publish, training.runner)",
    "tests.common.test_registry": "checks the training and export registries (Keras models)",
    "tests.common.test_wire": "compares the wire copies with TensorFlow's own messages",
}

IMPORT_EACH = """
import importlib
import json

failures = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as error:
        failures[name] = str(error)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"failures": failures, "loaded": loaded}))
"""


def test_client_and_common_tests_import_without_tensorflow():
    files = [ROOT / "tests" / "conftest.py", ROOT / "tests" / "support.py"]
    for folder in ("client", "common"):
        files += sorted((ROOT / "tests" / folder).glob("*.py"))
    names = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in files
    ]
    assert set(NEEDS_TENSORFLOW) <= set(names), "an exemption names a module that is gone"
    blocker = BLOCKER.replace("BLOCKED_NAMES", repr(TENSORFLOW))
    result = _run(blocker + IMPORT_EACH, *names)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    failures = report["failures"]
    # Every module but the exempt ones imported, and nothing of TensorFlow was loaded.
    assert {name: failures[name] for name in failures if name not in NEEDS_TENSORFLOW} == {}
    assert report["loaded"] == []
    # The exemptions are real: each one does fail without TensorFlow.
    assert sorted(failures) == sorted(NEEDS_TENSORFLOW), failures
    assert all("is blocked" in failures[name] for name in NEEDS_TENSORFLOW), failures
