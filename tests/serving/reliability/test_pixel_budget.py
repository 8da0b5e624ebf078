"""The pixel budget: an image that declares too many pixels is refused before it is decoded.

Each image is checked in the exported `serve_bytes` graph (TF Serving running the same
SavedModel is protected too), a request's images together by the server before the request
joins a batch, both against the contract's `max_pixels`; the client refuses first.
Before, a 120 KB PNG declaring 6000x6000 grew the server by some 670 MB for good, and with
batching on, two valid requests of 12 Mpx each could fail each other (24 Mpx in one batch).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from client.api import ServingClient
from client.errors import ClientError
from client.images import preprocess as client_pre
from common.contract import DEFAULT_MAX_PIXELS, Preprocessing
from serving.tensors import from_numpy, to_numpy
from tests.serving.reliability.conftest import VISION_MODELS
from tests.support import ServerProcess

BUDGET_TEXT = (
    f"serve_bytes takes at most {DEFAULT_MAX_PIXELS} pixels per image "
    "(max_pixels of the model contract)"
)
REQUEST_TEXT = (
    f"serve_bytes takes at most {DEFAULT_MAX_PIXELS} pixels per request "
    "(max_pixels of the model contract)"
)
HUGE_TEXT = f"image 0 is 6000x6000 = 36000000 pixels; {BUDGET_TEXT}"
# Batches wait up to 2 s for batch-mates, so two requests sent together share one.
BATCHING = """max_batch_size { value: 16 }
batch_timeout_micros { value: 2000000 }
num_batch_threads { value: 1 }
"""


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 20, 200)).save(buffer, "PNG")
    return buffer.getvalue()


HUGE = png(6000, 6000)


def server_rss(server) -> int:
    """VmRSS of the server process, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def exported(vision_models):
    """The tiny unet and localizer (see the suite's conftest), with a batching config."""
    (vision_models / "batching.config").write_text(BATCHING)
    return vision_models


@pytest.fixture(scope="module")
def served(vision_server):
    return vision_server


@pytest.fixture(scope="module")
def batched(exported):
    server = ServerProcess(
        f"--model_config_file={exported / 'models.config'}",
        "--enable_batching",
        f"--batching_parameters_file={exported / 'batching.config'}",
        log_path=exported / "batched.log",
    )
    with server:
        yield server


def predict_bytes(server, model: str, *images: bytes, outputs: tuple[str, ...] = ()):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model, signature_name="serve_bytes"),
        output_filter=outputs,
    )
    req.inputs["image_bytes"].CopyFrom(from_numpy(np.array(images, dtype=object)))
    return stub.Predict(req, timeout=60)


def refusal(server, model: str, *images: bytes) -> tuple[grpc.StatusCode, str]:
    """The code and the assertion's own line of a refused serve_bytes request."""
    with pytest.raises(grpc.RpcError) as caught:
        predict_bytes(server, model, *images)
    details = caught.value.details()
    return caught.value.code(), _assertion(details)


def _assertion(details: str) -> str:
    # The graph's refusals are TF assertions, with the failing node after the message
    # ("\n\t [[{{node ...}}]]") as TF Serving gives them; the server's are the message alone.
    if "assertion failed: [" not in details:
        return details
    start = details.index("assertion failed: [") + len("assertion failed: [")
    return details[start : details.index("]\n", start)]


def still_serves(server, model: str = "unet") -> None:
    outputs = predict_bytes(server, model, png(53, 37)).outputs
    assert to_numpy(outputs["image_size"], "image_size").tolist() == [[37, 53]]


@pytest.mark.integration
@pytest.mark.parametrize("model", VISION_MODELS)
def test_a_huge_declared_png_is_refused_before_decoding(served, model):
    # Prepare: a PNG of a few hundred KB that declares 36 million pixels.
    assert len(HUGE) < 200_000
    still_serves(served, model)
    before = server_rss(served)
    # Send.
    start = time.perf_counter()
    code, text = refusal(served, model, HUGE)
    elapsed = time.perf_counter() - start
    # Verify: INVALID_ARGUMENT naming the size and the budget, at once, with no decoding.
    assert (code, text) == (grpc.StatusCode.INVALID_ARGUMENT, HUGE_TEXT)
    assert elapsed < 5.0  # under 0.1 s on an idle machine
    assert server_rss(served) - before < 16 * 2**20
    still_serves(served, model)


@pytest.mark.integration
def test_rest_answers_400_with_the_same_text(served):
    def post(*images: bytes):
        body = {
            "signature_name": "serve_bytes",
            "instances": [{"b64": base64.b64encode(image).decode()} for image in images],
        }
        conn = http.client.HTTPConnection("127.0.0.1", served.rest_port, timeout=60)
        conn.request("POST", "/v1/models/unet:predict", body=json.dumps(body))
        response = conn.getresponse()
        status, payload = response.status, json.loads(response.read())
        conn.close()
        return status, payload

    status, body = post(HUGE)
    assert status == 400 and _assertion(body["error"]) == HUGE_TEXT
    status, body = post(png(3000, 3000), png(3000, 3000))
    assert status == 400
    assert body["error"] == f"the 2 images are 18000000 pixels together; {REQUEST_TEXT}"
    status, body = post(png(53, 37))
    assert status == 200 and body["predictions"][0]["image_size"] == [37, 53]


@pytest.mark.integration
@pytest.mark.parametrize(
    "data, text",
    [
        (png(40, 30)[:20], "image 0 is truncated before its size in the header"),
        (b"GIF89a\x01", "image 0 is truncated before its size in the header"),
        (
            b"not an image at all",
            "image 0 is not a JPEG, PNG, GIF or BMP image; serve_bytes "
            "reads their size before decoding and takes no other format",
        ),
    ],
    ids=["png", "gif", "unknown"],
)
def test_bad_headers_are_invalid_argument_not_a_crash(served, data, text):
    assert refusal(served, "unet", data) == (grpc.StatusCode.INVALID_ARGUMENT, text)
    still_serves(served)


@pytest.mark.integration
def test_the_client_refuses_first_naming_the_limit(served):
    with ServingClient.grpc(f"127.0.0.1:{served.port}", fallback="never") as client:
        with pytest.raises(ClientError) as caught:
            client.segment(HUGE)
        assert caught.value.code == "BAD_INPUT"
        assert caught.value.message == (
            "cannot read image '#0': image is 6000x6000 = 36000000 pixels; the client takes at "
            f"most {DEFAULT_MAX_PIXELS} pixels (max_pixels of the model contract)"
        )
        assert client.segment(png(53, 37))[0].mask.shape == (37, 53)


def test_the_client_reads_the_size_without_decoding():
    with pytest.raises(client_pre.ImageTooLargeError, match="image is 6000x6000"):
        client_pre.load_rgb(HUGE)
    pre = Preprocessing(size=(8, 8), max_pixels=100)
    with pytest.raises(client_pre.ImageTooLargeError, match="at most 100 pixels"):
        client_pre.prepare_image(png(11, 10), pre)
    assert client_pre.prepare_image(png(10, 10), pre).shape == (8, 8, 3)
    # Pillow's own, far larger limit becomes the same error, not an uncaught exception.
    bomb = bytearray(png(8, 8))
    bomb[16:24] = (20_000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # IHDR's checksum
    with pytest.raises(client_pre.ImageTooLargeError, match="could be decompression bomb"):
        client_pre.load_rgb(bytes(bomb))


def concurrently(server, *requests: tuple[bytes, ...]) -> list[str]:
    """Sends unet serve_bytes requests at once; "OK" or the code and text of each."""
    results = [""] * len(requests)

    def send(index: int) -> None:
        try:
            predict_bytes(server, "unet", *requests[index], outputs=("image_size",))
            results[index] = "OK"
        except grpc.RpcError as error:
            results[index] = f"{error.code().name}: {_assertion(error.details())}"

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.integration
def test_batch_mates_within_the_budget_both_succeed(batched):
    # Two requests of 3 x 2000x2000 (12 Mpx each) in one batch of 24 Mpx: the graph checks
    # each image, so neither fails the other (before: one of them got INVALID_ARGUMENT).
    valid = (png(2000, 2000),) * 3
    assert concurrently(batched, valid, valid) == ["OK", "OK"]


def many_scans(times: int) -> bytes:
    """A small progressive JPEG whose last scan is repeated (libjpeg reads every repeat)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 20, 200)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[data.rindex(b"\xff\xda") : end] * times + data[end:]


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad, text",
    [
        # 3 x 2400x2400 is 17.28 Mpx together, though each image is within the budget.
        (
            (png(2400, 2400),) * 3,
            f"the 3 images are 17280000 pixels together; {REQUEST_TEXT}",
        ),
        # Images the graph would refuse alone are refused before they join a batch too.
        ((png(53, 37), HUGE), f"image 1 is 6000x6000 = 36000000 pixels; {BUDGET_TEXT}"),
        (
            (many_scans(200),),
            "image 0 is a JPEG of 210 scans; serve_bytes takes at most 100 (libjpeg passes "
            "over the whole image once a scan)",
        ),
    ],
    ids=["total", "image", "scans"],
)
def test_a_request_over_the_budget_never_fails_its_batch_mate(batched, bad, text):
    # Prepare: a valid request of 12 Mpx.
    valid = (png(2000, 2000),) * 3
    # Send both at once, then Verify: the server refuses the bad one before it joins a batch.
    assert concurrently(batched, bad, valid) == [f"INVALID_ARGUMENT: {text}", "OK"]
    still_serves(batched)


@pytest.mark.integration
def test_the_server_counts_padded_outputs_and_gif_frames(served):
    # unet's masks are padded to the largest height and width: 2 x 4096 x 4096 pixels out.
    tall, wide = png(1, 4096), png(4096, 1)
    assert refusal(served, "unet", tall, wide) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the 2 outputs padded to 4096x4096 are 33554432 pixels; {REQUEST_TEXT}",
    )
    # The localizer pads nothing: the same images are a few thousand pixels.
    outputs = predict_bytes(served, "localizer", tall, wide).outputs
    assert to_numpy(outputs["image_size"], "image_size").tolist() == [[4096, 1], [1, 4096]]
    # Every frame of an animated GIF is decoded, so every frame counts.
    buffer = io.BytesIO()
    frames = [Image.new("P", (1000, 1000), color) for color in range(5)]
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    gif = buffer.getvalue()
    assert refusal(served, "localizer", gif, gif, gif, gif) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the 4 images are 20000000 pixels together; {REQUEST_TEXT}",
    )
    still_serves(served)
