"""Admission of DT_STRING inputs: every element counts, and `tensor_content` is parsed bounded.

Before, a broadcast `string_val` counted its bytes once although TensorFlow copies them for every
element (shape [4000] with one 1 MB value took the server from 884 MB to 9.7 GB and killed it),
and 20 MB of zero bytes as `tensor_content` of 20 million strings cost 8 s of CPU and 180 MB
before the session refused it.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import to_numpy
from tests.known_models import write_known_model
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

SMALL_LIMIT = 4096
MB = 2**20


def server_rss(server) -> int:
    with open(f"/proc/{server.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def strings(shape, **values) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    shape_proto = tensor_shape_pb2.TensorShapeProto(dim=dims)
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape_proto, **values)


def echo(text: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="half", signature_name="echo_bytes")
    )
    request.inputs["text"].CopyFrom(text)
    return request


def refused(stub, request) -> tuple[grpc.StatusCode, str, float]:
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=60)
    return caught.value.code(), caught.value.details(), time.perf_counter() - start


def still_echoes(stub) -> None:
    response = stub.Predict(echo(strings([2], string_val=[b"ab", b"c"])), timeout=30)
    assert to_numpy(response.outputs["length"], "length").tolist() == [2, 1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The default limits, and one whose --max_request_tensor_bytes is 4 KiB."""
    root = tmp_path_factory.mktemp("strings")
    write_known_model(root / "half", 1)
    common = ("--model_name=half", f"--model_base_path={root / 'half'}")
    default = ServerProcess(*common, log_path=root / "default.log", rest=False)
    small = ServerProcess(
        *common,
        f"--max_request_tensor_bytes={SMALL_LIMIT}",
        log_path=root / "small.log",
        rest=False,
    )
    with default, small:
        yield {
            name: (server, prediction_service_pb2_grpc.PredictionServiceStub(server.channel))
            for name, server in (("default", default), ("small", small))
        }


def test_a_broadcast_string_counts_its_bytes_for_every_element(servers):
    _, stub = servers["small"]
    # 8 elements of one 400-byte value: 3,200 bytes once TF copies each (and the pointers and
    # headers), where 464 were counted before and the request was served.
    request = echo(strings([8], string_val=[b"v" * 400]))
    code, details, _ = refused(stub, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith('Input "text" declares ')
    assert "(shape [8] string)" in details
    assert f"at most {SMALL_LIMIT} bytes" in details and "--max_request_tensor_bytes" in details
    # The same value once is served.
    response = stub.Predict(echo(strings([1], string_val=[b"v" * 400])), timeout=30)
    assert to_numpy(response.outputs["length"], "length").tolist() == [400]


def test_the_issues_broadcast_is_refused_without_growing_the_server(servers):
    server, stub = servers["default"]
    still_echoes(stub)
    before = server_rss(server)
    # One 1 MB value for 4000 elements: 4 GB once copied.
    request = echo(strings([1, 4000], string_val=[b"\x89PNG" + bytes(MB - 4)]))
    code, details, elapsed = refused(stub, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith('Input "text" declares ')
    assert "(shape [1,4000] string)" in details
    assert elapsed < 10.0  # well under a second on an idle machine
    assert server_rss(server) - before < 64 * MB
    still_echoes(stub)


def test_twenty_million_strings_in_twenty_megabytes_are_refused_undecoded(servers):
    server, stub = servers["default"]
    before = server_rss(server)
    # Rank 2 with one item, so only the byte count can stop it: 20 million elements.
    request = echo(strings([1, 20_000_000], tensor_content=bytes(20_000_000)))
    code, details, elapsed = refused(stub, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith('Input "text" declares ')
    assert "(shape [1,20000000] string)" in details
    assert elapsed < 10.0  # 8 s of CPU before the session refused it; now no decoding at all
    assert server_rss(server) - before < 128 * MB
    still_echoes(stub)


def test_a_tensor_content_too_short_for_its_elements_is_a_parsing_error(servers):
    _, stub = servers["default"]
    code, details, _ = refused(stub, echo(strings([1, 5000], tensor_content=bytes(4999))))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: text")
    still_echoes(stub)


@pytest.mark.parametrize(
    "content",
    [b"\x01a\xff", b"\x80\x80\x80\x80\x80\x01a", b"\x01\x01abc"],
    ids=["ends-in-prefix", "six-byte-prefix", "extra-byte"],
)
def test_broken_prefixes_are_a_parsing_error(servers, content):
    _, stub = servers["default"]
    code, details, _ = refused(stub, echo(strings([2], tensor_content=content)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: text")
    still_echoes(stub)


def test_a_tensor_content_string_list_is_served(servers):
    _, stub = servers["default"]
    values = [b"", b"a" * 200, bytes(range(256)) * 70]
    content = b"\x00\xc8\x01\x80\x8c\x01" + b"".join(values)
    response = stub.Predict(echo(strings([3], tensor_content=content)), timeout=30)
    assert to_numpy(response.outputs["length"], "length").tolist() == [0, 200, 17920]
    np.testing.assert_array_equal(
        to_numpy(response.outputs["text_bytes"], "text_bytes"), np.array(values, dtype=object)
    )
