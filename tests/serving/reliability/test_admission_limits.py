"""Admission limits: items per request, bytes in flight server-wide, and gRPC's message size.

Before, `float_val: [0.25]` with shape [N,128,128,3] (a 40-byte request) was served with +4 GB,
REST with 20,000 one-pixel PNGs aborted the process, every gRPC worker could hold its own
512 MiB, and gRPC read 2 GiB messages against a 512 MiB budget.
"""

from __future__ import annotations

import base64
import http.client
import json
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tensors import from_numpy, to_numpy
from tests.known_models import write_known_model
from tests.serving.tf1_models import write_half_plus_two
from tests.support import ServerProcess

pytestmark = pytest.mark.integration

ITEMS = 64  # --max_request_items's default
BUDGET = 1024


def declared(dtype, shape, **values) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    shape_proto = tensor_shape_pb2.TensorShapeProto(dim=dims)
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape_proto, **values)


def request(signature="serving_default", **inputs) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="half"))
    req.model_spec.signature_name = signature
    for alias, value in inputs.items():
        tensor = value if isinstance(value, tensor_pb2.TensorProto) else from_numpy(value)
        req.inputs[alias].CopyFrom(tensor)
    return req


def refused(stub, req, timeout=60) -> tuple[grpc.StatusCode, str, float]:
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(req, timeout=timeout)
    return caught.value.code(), caught.value.details(), time.perf_counter() - start


def still_serves(stub) -> None:
    response = stub.Predict(request(x=np.array([1.0, 2.0], np.float32)), timeout=30)
    np.testing.assert_array_equal(to_numpy(response.outputs["y"], "y"), [2.5, 3.0])


def items_text(alias, count, shape, dtype, limit=ITEMS) -> str:
    return (
        f'Input "{alias}" has {count} items (dimension 0 of shape [{shape}] {dtype}); this '
        f"server takes at most {limit} items per request (--max_request_items): split it into "
        "smaller requests"
    )


def post(server, path, body) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    conn.request("POST", path, body=json.dumps(body))
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    return status, payload


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    write_known_model(root / "half", 1)
    write_half_plus_two(root / "half_plus_two", 1)
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{root / name}" '
            'model_platform: "tensorflow" }\n'
            for name in ("half", "half_plus_two")
        )
        + "}\n"
    )
    return root, config


def _serve(models, name, *flags):
    root, config = models
    return ServerProcess(f"--model_config_file={config}", *flags, log_path=root / f"{name}.log")


@pytest.fixture(scope="module")
def default(models):
    """The shipped defaults, batching off (TF Serving's default and ours)."""
    with _serve(models, "default") as server:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


@pytest.fixture(scope="module")
def batching(models):
    """Batching on with max_batch_size 8, under the default 64 items."""
    root, _ = models
    params = root / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n")
    with _serve(
        models, "batching", "--enable_batching", f"--batching_parameters_file={params}"
    ) as server:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


@pytest.fixture(scope="module")
def small(models):
    """1 KiB per request and 1 KiB in flight; items are not limited."""
    with _serve(
        models,
        "small",
        f"--max_request_tensor_bytes={BUDGET}",
        f"--max_inflight_tensor_bytes={BUDGET}",
        "--max_request_items=100000",
    ) as server:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


# -- items per request ------------------------------------------------------------------------


def test_one_float_broadcast_to_many_images_is_refused_by_its_items(default):
    _, stub = default
    # The 40-byte request, on a [None, 3] input: 300 rows of one broadcast value.
    req = request("matrix", m=declared(types_pb2.DT_FLOAT, [300, 3], float_val=[0.25]))
    code, details, elapsed = refused(stub, req)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        items_text("m", 300, "300,3", "float"),
    )
    assert elapsed < 10.0
    still_serves(stub)


def test_the_default_takes_64_items_and_refuses_65(default):
    _, stub = default
    response = stub.Predict(request(x=np.zeros(ITEMS, np.float32)), timeout=30)
    assert len(response.outputs["y"].float_val) == ITEMS
    code, details, _ = refused(stub, request(x=np.zeros(ITEMS + 1, np.float32)))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        items_text("x", 65, "65", "float"),
    )


def test_rest_strings_by_the_thousand_are_a_400(default):
    server, stub = default
    # The 20,000 one-pixel PNGs, as b64 strings of a [None] string input.
    body = {
        "signature_name": "echo_bytes",
        "instances": [{"text": {"b64": base64.b64encode(b"\x89PNG").decode()}}] * 20_000,
    }
    status, payload = post(server, "/v1/models/half:predict", body)
    assert (status, payload) == (400, {"error": items_text("text", 20000, "20000", "string")})
    still_serves(stub)


def test_classify_counts_its_examples_as_items(default):
    _, stub = default
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "half_plus_two", "classify_x_to_y"
    for x in range(ITEMS + 1):
        req.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(req, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        f"The request has {ITEMS + 1} examples; this server takes at most {ITEMS} items per "
        "request (--max_request_items): split it into smaller requests"
    )
    del req.input.example_list.examples[ITEMS:]
    assert len(stub.Classify(req, timeout=30).result.classifications) == ITEMS


def test_with_batching_the_items_cap_comes_first_and_max_batch_size_stays(batching):
    _, stub = batching
    code, details, _ = refused(stub, request(x=np.zeros(ITEMS + 1, np.float32)))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        items_text("x", 65, "65", "float"),
    )
    # Under the items cap, batching's own rule refuses what its batches cannot hold.
    code, details, _ = refused(stub, request(x=np.zeros(10, np.float32)))
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Task size 10 is larger than maximum input batch size 8",
    )
    still_serves(stub)


# -- bytes in flight --------------------------------------------------------------------------


def spin_request(rounds: int) -> predict_pb2.PredictRequest:
    # 200 floats and one int32: 804 bytes held while the loop runs.
    return request("spin", x=np.ones(200, np.float32), rounds=np.array([rounds], np.int32))


def test_a_request_over_the_bytes_in_flight_is_refused_at_once_then_served(small):
    _, stub = small
    still_serves(stub)
    slow = stub.Predict.future(spin_request(40_000), timeout=300)
    time.sleep(1.0)
    assert not slow.done(), "the spin request ended too soon to hold its bytes"
    # 400 bytes would fit one request's 1 KiB, but not beside the 804 held.
    code, details, elapsed = refused(stub, request(x=np.ones(100, np.float32)))
    assert not slow.done(), "the spin request ended before the second one was refused"
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (
        "This request's input tensors take 400 bytes and the requests in flight hold 804; this "
        f"server holds at most {BUDGET} bytes of input tensors at once "
        "(--max_inflight_tensor_bytes): retry later"
    )
    assert elapsed < 5.0  # refused, not queued behind the spin
    assert slow.result(timeout=300).outputs["y"].float_val[0] == 2.5
    # Released on success: the same request is served now.
    response = stub.Predict(request(x=np.ones(100, np.float32)), timeout=30)
    assert len(response.outputs["y"].float_val) == 100


def test_a_failed_request_releases_its_bytes(small):
    _, stub = small
    # 600 bytes admitted, then refused by the session (shapes [100] and [50] do not add).
    bad = request("two_inputs", a=np.ones(100, np.float32), b=np.ones(50, np.float32))
    for _ in range(3):
        code, _, _ = refused(stub, bad)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    # 1000 bytes fit only if none of the 600s is still held.
    response = stub.Predict(request(x=np.ones(250, np.float32)), timeout=30)
    assert len(response.outputs["y"].float_val) == 250


# -- gRPC's message limit ---------------------------------------------------------------------


def test_a_message_over_the_budget_is_refused_by_grpc_and_the_server_serves(small):
    _, stub = small
    big = request(x=np.zeros(2**19, np.float32))  # 2 MiB
    code, details, _ = refused(stub, big)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # gRPC's own text: the limit is the budget plus 1 MiB for the envelope.
    assert "Received message larger than max" in details
    assert details.endswith(f" vs. {BUDGET + 2**20})")
    still_serves(stub)


def test_the_receive_limit_follows_the_budget_unless_the_user_sets_it():
    from serving.model_servers.grpc_services import (
        ENVELOPE_BYTES,
        MAX_MESSAGE_BYTES,
        receive_limit,
        server_options,
    )

    assert receive_limit(512 * 2**20) == 512 * 2**20 + ENVELOPE_BYTES
    # gRPC takes an int: never past 2 GiB - 1, whatever the budget.
    assert receive_limit(2**31) == MAX_MESSAGE_BYTES
    ours = dict(server_options("", receive_limit(BUDGET)))
    assert ours["grpc.max_receive_message_length"] == BUDGET + ENVELOPE_BYTES
    theirs = server_options("grpc.max_receive_message_length=4096", receive_limit(BUDGET))
    assert [value for key, value in theirs if key == "grpc.max_receive_message_length"] == [4096]
