"""Admission before allocation: a Predict is refused on what it declares, before decoding.

A 33-byte PredictRequest can declare a 1.6 GB tensor (one `float_val` broadcast to the whole
shape); the server used to allocate and fill it before any check. Now every input's dtype and
declared size are checked first, over gRPC and REST alike.
"""

from __future__ import annotations

import http.client
import json
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

DEFAULT_LIMIT = 512 * 2**20
# A budget small enough to reach with ordinary JSON (300 floats are 1200 bytes).
SMALL_LIMIT = 1024


def server_rss(server) -> int:
    """VmRSS of the server process, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def declared(dtype, shape, **values) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values
    )


def request(signature="", **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    req.model_spec.signature_name = signature
    for alias, value in inputs.items():
        req.inputs[alias].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else from_numpy(value)
        )
    return req


def refused(stub, req) -> tuple[grpc.StatusCode, str, float]:
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(req, timeout=30)
    return caught.value.code(), caught.value.details(), time.perf_counter() - start


def still_serves(stub) -> None:
    response = stub.Predict(request(x=np.array([1.0, 2.0], np.float32)), timeout=30)
    np.testing.assert_array_equal(to_numpy(response.outputs["y"], "y"), [2.5, 3.0])


@pytest.fixture(scope="module")
def stub(known_server):
    return prediction_service_pb2_grpc.PredictionServiceStub(known_server.channel)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A server whose --max_request_tensor_bytes is 1 KiB (and items are not limited)."""
    root = tmp_path_factory.mktemp("admission")
    write_known_model(root / "half", 1)
    server = ServerProcess(
        "--model_name=half",
        f"--model_base_path={root / 'half'}",
        f"--max_request_tensor_bytes={SMALL_LIMIT}",
        "--max_request_items=100000",
        log_path=root / "server.log",
    )
    with server:
        yield server


def test_a_broadcast_declaration_is_refused_before_it_is_allocated(known_server, stub):
    # Prepare: 33 bytes on the wire that declare 400 million floats (1.6 GB), in one item.
    req = request(x=declared(types_pb2.DT_FLOAT, [1, 400_000_000], float_val=[1.0]))
    assert req.ByteSize() < 64
    still_serves(stub)
    before = server_rss(known_server)
    # Send.
    code, details, elapsed = refused(stub, req)
    # Verify: refused by name, size, limit and flag; fast, and without growing the server
    # (before, this took 34 s and left the server 3.2 GB larger).
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (
        'Input "x" declares 1600000000 bytes (shape [1,400000000] float); this server takes at '
        f"most {DEFAULT_LIMIT} bytes of input tensors per request (--max_request_tensor_bytes)"
    )
    assert elapsed < 5.0  # under 0.1 s on an idle machine
    assert server_rss(known_server) - before < 8 * 2**20
    still_serves(stub)


def test_the_dtype_is_checked_before_the_size_and_from_the_proto(known_server, stub):
    before = server_rss(known_server)
    req = request(x=declared(types_pb2.DT_DOUBLE, [1, 400_000_000], double_val=[1.0]))
    code, details, _ = refused(stub, req)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but double is provided",
    )
    assert server_rss(known_server) - before < 8 * 2**20
    still_serves(stub)


@pytest.mark.parametrize(
    "tensor, text",
    [
        (
            declared(types_pb2.DT_FLOAT, [-1, 400_000_000], float_val=[1.0]),
            "tensor parsing error: x",
        ),
        (
            declared(types_pb2.DT_FLOAT, [1, 400_000_000], tensor_content=b"\0" * 12),
            "tensor parsing error: x",
        ),
        (
            declared(types_pb2.DT_FLOAT, [1] * 65, float_val=[1.0]),
            'Input "x" has 65 dimensions; this server holds tensors of at most 64 (NumPy\'s limit)',
        ),
    ],
    ids=["negative-dim", "content-size", "65-dims"],
)
def test_invalid_shapes_are_invalid_argument_as_before(stub, tensor, text):
    code, details, _ = refused(stub, request(x=tensor))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, text)
    still_serves(stub)


def test_broadcast_strings_count_every_element(stub):
    text = declared(types_pb2.DT_STRING, [1, 10_000_000], string_val=[b"x"])
    code, details, elapsed = refused(stub, request("echo_bytes", text=text))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # 64 bytes an element (codec.STRING_ELEMENT_BYTES), the value's byte for each, and the
    # message's 18 bytes twice for the value present.
    assert details.startswith('Input "text" declares 650000035 bytes (shape [1,10000000] string);')
    assert elapsed < 5.0  # under 0.1 s on an idle machine
    still_serves(stub)


def test_the_inputs_of_a_request_count_together(stub):
    half = declared(types_pb2.DT_FLOAT, [1, 100_000_000], float_val=[1.0])
    code, details, _ = refused(stub, request("two_inputs", a=half, b=half))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (
        'Input "b" declares 400000000 bytes (shape [1,100000000] float), 800000000 bytes with '
        f"the inputs before it; this server takes at most {DEFAULT_LIMIT} bytes of input tensors "
        "per request (--max_request_tensor_bytes)"
    )
    still_serves(stub)


def test_the_flag_sets_the_limit_over_grpc(small):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(small.channel)
    # 256 floats are exactly 1 KiB: admitted.
    response = stub.Predict(request(x=np.zeros(256, np.float32)), timeout=30)
    assert len(response.outputs["y"].float_val) == 256
    code, details, _ = refused(stub, request(x=np.zeros(257, np.float32)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (
        'Input "x" declares 1028 bytes (shape [257] float); this server takes at most 1024 '
        "bytes of input tensors per request (--max_request_tensor_bytes)"
    )
    still_serves(stub)


def test_rest_answers_429_with_the_same_text(small):
    def post(body):
        conn = http.client.HTTPConnection("127.0.0.1", small.rest_port, timeout=30)
        conn.request("POST", "/v1/models/half:predict", body=json.dumps(body))
        response = conn.getresponse()
        status, payload = response.status, json.loads(response.read())
        conn.close()
        return status, payload

    assert post({"instances": [0.0] * 300}) == (
        429,
        {
            "error": 'Input "x" declares 1200 bytes (shape [300] float); this server takes at '
            "most 1024 bytes of input tensors per request (--max_request_tensor_bytes)"
        },
    )
    assert post({"instances": [1.0, 2.0]}) == (200, {"predictions": [2.5, 3.0]})
