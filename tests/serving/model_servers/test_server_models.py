"""The real path: tiny trained models, exported, served with `make serve`'s flags and config."""

from __future__ import annotations

import base64
import http.client
import json

import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.images import preprocess as client_pre
from common.quiet import import_tensorflow
from export.check import png_bytes, sample_image
from serving.tensors import from_numpy, to_numpy
from tests.support import TINY_SERVER
from training.runner import load_run

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group(TINY_SERVER)]
tf = import_tensorflow()

MODELS = ("unet", "localizer", "generator")


@pytest.fixture(scope="module")
def served(tiny_server):
    """(server, {model: version folder}): the three tiny runs exported under MODELS/<model>/1
    and served with `make serve`'s flags and config files (`tests/conftest.py`)."""
    return tiny_server


def _predict(server, model, signature, **inputs):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model, signature_name=signature)
    )
    for alias, value in inputs.items():
        req.inputs[alias].CopyFrom(from_numpy(value))
    response = stub.Predict(req, timeout=60)
    return response, {k: to_numpy(v, k) for k, v in response.outputs.items()}


def test_all_models_loaded_and_warmed_up(served):
    server, versions = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    for model in MODELS:
        req = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name=model), metadata_field=["signature_def"]
        )
        response = stub.GetModelMetadata(req, timeout=30)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        loaded = tf.saved_model.load(str(versions[model]))
        assert set(loaded.signatures) <= set(signatures.signature_def)
        assert response.model_spec.version.value == int(versions[model].name)
        assert f"Finished reading warmup data for model at {versions[model]}" in server.log()


@pytest.mark.parametrize("model", ["unet", "localizer"])
def test_served_answers_equal_in_process_answers(served, tiny_runs, model):
    server, versions = served
    task, config, _ = load_run(tiny_runs[model])
    image = sample_image(model, config)
    batch = client_pre.prepare_image(image, task.contract(config).preprocessing)[None]
    loaded = tf.saved_model.load(str(versions[model]))
    want = loaded.signatures["serving_default"](image=tf.constant(batch))
    response, got = _predict(server, model, "", image=batch)
    assert response.model_spec.signature_name == "serving_default"
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-6)

    # Encoded bytes through the in-graph pre-processing give the in-process answer too.
    encoded = np.array([png_bytes(image)], dtype=object)
    want = loaded.signatures["serve_bytes"](image_bytes=tf.constant(encoded.astype(bytes)))
    _, got = _predict(server, model, "serve_bytes", image_bytes=encoded)
    assert got["image_size"].tolist() == [list(image.shape[:2])]
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-6)


def test_generator_seeds_over_grpc_and_rest(served):
    server, versions = served
    loaded = tf.saved_model.load(str(versions["generator"]))
    want = loaded.signatures["serve_seeds"](seeds=tf.constant([7, 8], tf.int64))["images"]
    _, got = _predict(server, "generator", "serve_seeds", seeds=np.array([7, 8], np.int64))
    np.testing.assert_array_equal(got["images"], want.numpy())

    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    body = {"signature_name": "serve_seeds", "instances": [7, 8]}
    conn.request("POST", "/v1/models/generator:predict", json.dumps(body))
    response = conn.getresponse()
    assert response.status == 200
    images = np.array(json.loads(response.read())["predictions"], dtype=np.uint8)
    np.testing.assert_array_equal(images, want.numpy())


def test_unet_bytes_over_rest(served, tiny_runs):
    server, _ = served
    _, config, _ = load_run(tiny_runs["unet"])
    image = sample_image("unet", config)
    body = {
        "signature_name": "serve_bytes",
        "instances": [{"b64": base64.b64encode(png_bytes(image)).decode()}],
    }
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    conn.request("POST", "/v1/models/unet:predict", json.dumps(body))
    response = conn.getresponse()
    assert response.status == 200
    prediction = json.loads(response.read())["predictions"][0]
    mask = np.array(prediction["mask"])
    assert mask.shape == (*image.shape[:2], 1)
    assert prediction["image_size"] == list(image.shape[:2])
    assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_shipped_config_serves_the_stable_label(served):
    server, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    req = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="unet", version_label="stable"),
        metadata_field=["signature_def"],
    )
    assert stub.GetModelMetadata(req, timeout=30).model_spec.version.value == 1
