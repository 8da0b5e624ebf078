"""The client library against the real server with tiny exported models, over gRPC and REST."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
from PIL import Image

from client.api import ServingClient
from client.errors import ClientError
from client.transports.served_contract import contract_from_metadata
from export.check import png_bytes, sample_image
from tests.support import TINY_SERVER, free_port
from training.runner import load_run

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group(TINY_SERVER)]

MODELS = ("unet", "localizer", "generator")


@pytest.fixture(scope="module")
def server(tiny_server):
    """The tiny runs of the three models served as `make serve` does (`tests/conftest.py`)."""
    return tiny_server[0]


@pytest.fixture(params=["grpc", "rest"])
def client(server, request):
    if request.param == "grpc":
        made = ServingClient.grpc(f"127.0.0.1:{server.port}", timeout=30)
    else:
        made = ServingClient.rest(f"http://127.0.0.1:{server.rest_port}", timeout=30)
    with made:
        yield made


@pytest.fixture(scope="module")
def car(tiny_runs):
    _, config, _ = load_run(tiny_runs["unet"])
    return sample_image("unet", config)


def test_segment_answers_at_the_original_size_for_every_input_kind(client, car):
    gray = car.mean(axis=-1).astype(np.uint8)
    rgba = np.dstack([car, np.full(car.shape[:2], 255, np.uint8)])
    inputs = [car, png_bytes(car), Image.fromarray(car), gray, rgba, car.astype(np.float32) / 255]
    results = client.segment(inputs)
    assert len(results) == len(inputs)
    for result in results:
        assert result.mask.shape == car.shape[:2] and result.mask.dtype == bool
        assert result.source == "model:unet/1"
        assert result.probabilities.min() >= 0.0 and result.probabilities.max() <= 1.0
    np.testing.assert_allclose(results[0].probabilities, results[1].probabilities, atol=1e-6)


def test_client_preprocessing_matches_the_in_graph_bytes_signature(server, car):
    """The client's NumPy/Pillow path and the SavedModel's bytes path give the same mask."""
    with ServingClient.grpc(f"127.0.0.1:{server.port}") as client:
        ours = client.segment(car)[0].probabilities
        answer, _ = client.transport.predict(
            "unet",
            {"image_bytes": np.array([png_bytes(car)], dtype=object)},
            signature="serve_bytes",
        )
    in_graph = answer["mask"][0, ..., 0]
    assert in_graph.shape == ours.shape
    np.testing.assert_allclose(ours, in_graph, atol=2e-3)


def _signatures_called(client) -> list[str]:
    """Records the signature of every Predict the client's transport makes (calls go through)."""
    called, predict = [], client.transport.predict

    def recording(model, inputs, **kwargs):
        called.append(kwargs.get("signature", "serving_default"))
        return predict(model, inputs, **kwargs)

    client.transport.predict = recording
    return called


def test_rest_sends_encoded_images_and_answers_like_grpc(server, car, tiny_runs):
    """Over REST an encoded photo goes to the bytes signature as it is, and the answer is
    the gRPC path's (which pre-processes in the client); arrays are pre-processed on both."""
    big = np.array(Image.fromarray(car).resize((car.shape[1] * 5, car.shape[0] * 4)))
    jpeg = io.BytesIO()
    Image.fromarray(big).save(jpeg, "JPEG", quality=95)
    _, config, _ = load_run(tiny_runs["localizer"])
    shapes = sample_image("localizer", config)
    inputs = [jpeg.getvalue(), png_bytes(car)]
    with (
        ServingClient.grpc(f"127.0.0.1:{server.port}") as grpc_client,
        ServingClient.rest(f"http://127.0.0.1:{server.rest_port}") as rest_client,
    ):
        called = _signatures_called(rest_client)
        by_rest = rest_client.segment(inputs)
        assert called == ["serve_bytes_mask_png"]
        by_grpc = grpc_client.segment(inputs)
        for rest_result, grpc_result in zip(by_rest, by_grpc, strict=True):
            assert rest_result.mask.shape == grpc_result.mask.shape
            # 8-bit levels and the in-graph decoder move probabilities by well under 0.01: a
            # tiny model's, crowded around 0.5, may flip only there.
            differ = rest_result.mask != grpc_result.mask
            assert np.all(np.abs(grpc_result.probabilities[differ] - 0.5) < 0.01)
            np.testing.assert_allclose(
                rest_result.probabilities, grpc_result.probabilities, atol=0.02
            )
        located = rest_client.localize(png_bytes(shapes))[0]
        assert called[-1] == "serve_bytes"
        expected = grpc_client.localize(png_bytes(shapes))[0]
        assert located.class_name == expected.class_name
        np.testing.assert_allclose(located.box, expected.box, atol=1.0)
        # A decoded array has no bytes to send: REST pre-processes it like gRPC.
        rest_client.segment(car)
        assert called[-1] == "serving_default"


def test_a_version_without_the_bytes_signature_is_sent_tensors(client):
    """A version exported before a signature existed is offered only what it serves."""
    metadata = client.metadata("unet")
    assert "serve_bytes_mask_png" in metadata["signatures"]
    names = {s.name for s in contract_from_metadata("unet", metadata).signatures}
    assert "serve_bytes_mask_png" in names
    del metadata["signatures"]["serve_bytes_mask_png"]
    names = {s.name for s in contract_from_metadata("unet", metadata).signatures}
    assert "serve_bytes_mask_png" not in names and "serving_default" in names


def test_mask_at_full_size_is_the_thresholded_probabilities(client, car):
    """The mask is made without float probabilities at full size; they agree where asked."""
    big = np.array(Image.fromarray(car).resize((car.shape[1] * 6, car.shape[0] * 5)))
    result = client.segment(big)[0]
    differ = result.mask != (result.probabilities >= 0.5)
    assert result.mask.shape == result.probabilities.shape == big.shape[:2]
    # A tiny model's map crowds around 0.5 with edges everywhere, which is resized as 8-bit
    # levels: the two may differ only within a level of the threshold.
    assert np.all(np.abs(result.probabilities[differ] - 0.5) < 2.0 / 255.0)


def test_predict_images_serves_any_registered_image_model(client, car):
    """The generic path behind segment and localize: same answer, no fallback, clear errors."""
    generic = client.predict_images([car], kind="unet")[0]
    np.testing.assert_array_equal(generic.mask, client.segment(car)[0].mask)
    assert generic.source == "model:unet/1"
    assert client.predict_images(car, kind="localizer")[0].source == "model:localizer/1"
    with pytest.raises(ValueError, match="no image model 'generator'; valid: unet, localizer"):
        client.predict_images(car, kind="generator")


def test_exif_orientation_is_honoured(client, car):
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(car).save(buffer, "JPEG", exif=exif)
    result = client.segment(buffer.getvalue())[0]
    assert result.mask.shape == (car.shape[1], car.shape[0])


def test_localize_box_in_pixels_and_generate(client, tiny_runs):
    _, config, _ = load_run(tiny_runs["localizer"])
    image = sample_image("localizer", config)
    big = np.array(Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 2)))
    result = client.localize(big)[0]
    x_min, y_min, x_max, y_max = result.box
    assert 0 <= x_min <= x_max < big.shape[1] and 0 <= y_min <= y_max < big.shape[0]
    assert result.class_name in ("ellipse", "rectangle", "triangle")
    assert 0.0 <= result.score <= 1.0 and result.source == "model:localizer/1"
    assert math.isclose(sum(result.class_probs.values()), 1.0, rel_tol=1e-4)

    by_seed = client.generate(seeds=[3, 4])
    again = client.generate(seeds=[4])
    assert by_seed.images.dtype == np.uint8 and by_seed.images.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(by_seed.images[1], again.images[0])
    assert client.generate(3).images.shape == (3, 28, 28, 1)


def test_targeting_a_version(client, car):
    assert client.segment(car, model_version=1)[0].source == "model:unet/1"
    with pytest.raises(ClientError) as caught:
        ServingClient(client.transport, fallback="never").segment(car, model_version=9)
    assert caught.value.code == "NOT_FOUND"
    # In auto mode a missing version falls back, and says so.
    assert client.segment(car, model_version=9)[0].source == "fallback:otsu"


def test_bad_input_never_falls_back(client, car):
    with pytest.raises(ClientError) as caught:
        client.segment([car, b"not an image"])
    assert caught.value.code == "BAD_INPUT"
    with pytest.raises(ClientError) as caught:
        client.transport.predict("unet", {"picture": np.zeros((1, 8, 8, 3), np.float32)})
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "image" in str(caught.value)  # gRPC and REST each name the input that is wrong


def test_status_and_metadata(client):
    status = client.status("unet")
    assert status[0]["version"] == 1 and status[0]["state"] == "AVAILABLE"
    metadata = client.metadata("unet")
    assert metadata["signatures"]["serving_default"]["inputs"]["image"]["dtype"] == "DT_FLOAT"


def test_many_threads_share_one_client(server, car):
    errors = []
    with ServingClient.grpc(f"127.0.0.1:{server.port}") as client:

        def work():
            try:
                assert client.segment(car)[0].mask.shape == car.shape[:2]
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_server_down_falls_back_or_raises_per_policy(transport, car):
    port = free_port()
    make = (
        (lambda **kw: ServingClient.grpc(f"127.0.0.1:{port}", timeout=2, **kw))
        if transport == "grpc"
        else (lambda **kw: ServingClient.rest(f"http://127.0.0.1:{port}", timeout=2, **kw))
    )
    with make(method="watershed") as client:
        result = client.segment(car)[0]
        assert result.source == "fallback:watershed" and result.instances is not None
        located = client.localize(car)[0]
        assert located.source == "fallback:watershed" and located.class_name == "unknown"
        with pytest.raises(ClientError) as caught:
            client.generate(2)
        assert caught.value.code == "UNAVAILABLE" and "no fallback" in caught.value.message
    with make(fallback="never") as client, pytest.raises(ClientError) as caught:
        client.segment(car)
    assert caught.value.code == "UNAVAILABLE"


def test_fallback_only_skips_the_server(car):
    with ServingClient.grpc(f"127.0.0.1:{free_port()}", fallback="only", method="kmeans") as c:
        result = c.segment(car)[0]
    assert result.source == "fallback:kmeans" and result.mask.shape == car.shape[:2]


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="fallback must be one of auto, never, only"):
        ServingClient(None, fallback="sometimes")
    with pytest.raises(ValueError, match="method must be one of"):
        ServingClient(None, method="magic")
