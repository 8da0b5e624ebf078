"""Export: versioned, atomic, self-checked SavedModels of each tiny model."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from client.images import preprocess as client_pre
from common.contract import Contract
from export import publish
from export.check import ExportCheckError, png_bytes, sample_image
from export.cli import main
from export.warmup import read_warmup
from training.data.preprocess import prepare_image
from training.runner import load_run

MODELS = ["unet", "localizer", "generator"]


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """A finished tiny run per model (shared with the serving tests)."""
    return tiny_runs


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Each tiny run exported once into a shared base path."""
    base = tmp_path_factory.mktemp("models")
    return base, {m: publish.export_run(m, runs[m], base) for m in MODELS}


def _numeric(model_dir):
    return [p.name for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.exists() else []


@pytest.mark.parametrize("model", MODELS)
def test_signatures_match_the_contract(exported, model):
    _, versions = exported
    path = versions[model]
    assert path.name == "1"
    manifest = json.loads((path / "assets.extra" / "manifest.json").read_text())
    contract = Contract.from_dict(manifest["contract"])
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {s.name for s in contract.signatures}
    for sig in contract.signatures:
        fn = loaded.signatures[sig.name]
        inputs = fn.structured_input_signature[1]
        assert {n: (s.dtype.name, tuple(s.shape.as_list())) for n, s in inputs.items()} == {
            t.name: (t.dtype, t.shape) for t in sig.inputs
        }
        outputs = fn.structured_outputs
        want = {t.name: t.dtype for t in sig.outputs}
        assert {n: s.dtype.name for n, s in outputs.items()} == want
        # The batch dimension is dynamic everywhere.
        assert all(s.shape[0] is None for s in [*inputs.values(), *outputs.values()])


@pytest.mark.parametrize("model", MODELS)
def test_warmup_file_is_prediction_logs_for_every_signature(exported, model):
    _, versions = exported
    logs = read_warmup(versions[model] / "assets.extra" / "tf_serving_warmup_requests")
    loaded = tf.saved_model.load(str(versions[model]))
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == set(
        loaded.signatures
    )
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == model
        fn = loaded.signatures[request.model_spec.signature_name]
        # The recorded request runs as is.
        fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})


@pytest.mark.parametrize("model", MODELS)
def test_manifest_describes_the_version(exported, runs, model):
    _, versions = exported
    manifest = json.loads((versions[model] / "assets.extra" / "manifest.json").read_text())
    run_config = json.loads((runs[model] / "config.json").read_text())
    assert manifest["model"] == model and manifest["version"] == 1
    assert manifest["training"]["config"] == run_config["config"]
    assert manifest["metrics"] == json.loads((runs[model] / "metrics.json").read_text())
    assert manifest["tensorflow"] == tf.__version__
    assert manifest["created"].endswith("+00:00")
    assert "source_commit" in manifest


@pytest.mark.parametrize("model", ["unet", "localizer"])
def test_train_serve_skew(exported, runs, model):
    """Bytes signature, client pre-processing and the training pipeline agree."""
    _, versions = exported
    task, config, keras_model = load_run(runs[model])
    pre = task.contract(config).preprocessing
    image = sample_image(model, config)
    trained = prepare_image(tf.constant(image), pre).numpy()
    client = client_pre.prepare_image(image, pre)
    np.testing.assert_allclose(client, trained, atol=1e-5)

    loaded = tf.saved_model.load(str(versions[model]))
    from_bytes = loaded.signatures["serve_bytes"](image_bytes=tf.constant([png_bytes(image)]))
    from_client = loaded.signatures["serving_default"](image=tf.constant(client[None]))
    from_train = keras_model(trained[None], training=False)
    height, width = image.shape[:2]
    assert from_bytes["image_size"].numpy().tolist() == [[height, width]]
    if model == "unet":
        probs = tf.sigmoid(from_train)
        np.testing.assert_allclose(from_client["mask"], probs, atol=1e-4)
        full = tf.image.resize(probs, (height, width))
        assert from_bytes["mask"].shape == (1, height, width, 1)
        np.testing.assert_allclose(from_bytes["mask"], full, atol=1e-4)
    else:
        for key in ("class_probs", "box"):
            np.testing.assert_allclose(from_client[key], from_train[key], atol=1e-4)
        np.testing.assert_allclose(from_bytes["class_probs"], from_train["class_probs"], atol=1e-4)
        scale = np.array([width, height, height, width])
        np.testing.assert_allclose(from_bytes["box"] / scale, from_train["box"], atol=1e-4)


def test_unet_bytes_answer_at_each_original_size(exported):
    _, versions = exported
    serve = tf.saved_model.load(str(versions["unet"])).signatures["serve_bytes"]
    rng = np.random.default_rng(0)
    encoded = []
    for h, w in [(37, 53), (20, 90)]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buffer, "JPEG")
        encoded.append(buffer.getvalue())
    out = serve(image_bytes=tf.constant(encoded))
    assert out["image_size"].numpy().tolist() == [[37, 53], [20, 90]]
    assert out["mask"].shape == (2, 37, 90, 1)  # padded to the largest height and width
    assert np.all(out["mask"].numpy()[1, 20:] == 0)


def test_generator_seeds_are_deterministic(exported, runs):
    _, versions = exported
    loaded = tf.saved_model.load(str(versions["generator"]))
    serve = loaded.signatures["serve_seeds"]
    a = serve(seeds=tf.constant([5, 6], tf.int64))["images"].numpy()
    b = serve(seeds=tf.constant([6, 5], tf.int64))["images"].numpy()
    assert a.dtype == np.uint8 and a.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(a[0], b[1])
    assert not np.array_equal(a[0], a[1])
    z = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    served = loaded.signatures["serving_default"](z=tf.constant(z))["images"].numpy()
    generator = load_run(runs["generator"])[2]
    want = np.round((np.clip(generator(z).numpy(), -1, 1) + 1) * 127.5)
    assert np.max(np.abs(served.astype(int) - want)) <= 1


def test_versions_count_up_and_are_never_overwritten(runs, tmp_path, capsys):
    base = tmp_path / "models"
    assert main(["unet", "--run", str(runs["unet"]), "--base-path", str(base)]) == 0
    assert (
        main(["unet", "--run", str(runs["unet"]), "--base-path", str(base), "--version", "7"]) == 0
    )
    assert main(["unet", "--run", str(runs["unet"]), "--base-path", str(base)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(base / "unet" / v) for v in ("1", "7", "8")]
    before = (base / "unet" / "7" / "saved_model.pb").stat().st_mtime_ns
    assert (
        main(["unet", "--run", str(runs["unet"]), "--base-path", str(base), "--version", "7"]) == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert (base / "unet" / "7" / "saved_model.pb").stat().st_mtime_ns == before


def _fails(argv, capsys, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err


def test_missing_run_folder(tmp_path, capsys):
    _fails(
        ["unet", "--run", str(tmp_path / "nope"), "--base-path", str(tmp_path / "m")],
        capsys,
        "nope",
        "does not exist",
    )
    assert not (tmp_path / "m").exists()


def test_incomplete_run_folder(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["unet"], run)
    (run / "model.weights.h5").unlink()
    _fails(
        ["unet", "--run", str(run), "--base-path", str(tmp_path / "m")],
        capsys,
        "model.weights.h5",
        "did not finish",
    )
    assert _numeric(tmp_path / "m" / "unet") == []


def test_run_of_another_model(runs, tmp_path, capsys):
    _fails(
        ["localizer", "--run", str(runs["unet"]), "--base-path", str(tmp_path / "m")],
        capsys,
        "holds a 'unet' run",
        "python -m export unet",
    )


def test_weights_of_another_model(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["unet"], run)
    shutil.copy(runs["localizer"] / "model.weights.h5", run / "model.weights.h5")
    _fails(
        ["unet", "--run", str(run), "--base-path", str(tmp_path / "m")],
        capsys,
        "do not fit the unet model",
    )
    assert _numeric(tmp_path / "m" / "unet") == []


def test_unwritable_base_path(runs, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _fails(
        ["unet", "--run", str(runs["unet"]), "--base-path", str(blocker)],
        capsys,
        "cannot write to base path",
        str(blocker),
    )


def test_failed_self_check_publishes_nothing(runs, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ExportCheckError("mask: max difference 0.3 exceeds 1e-05")

    monkeypatch.setattr(publish, "check_export", broken)
    _fails(
        ["unet", "--run", str(runs["unet"]), "--base-path", str(tmp_path)], capsys, "max difference"
    )
    assert list((tmp_path / "unet").iterdir()) == []  # no version, no temporary folder


@pytest.mark.integration
def test_killed_export_leaves_nothing_servable(runs, tmp_path):
    model_dir = tmp_path / "unet"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "export",
            "unet",
            "--run",
            str(runs["unet"]),
            "--base-path",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if model_dir.exists() and any(p.name.startswith(".tmp-") for p in model_dir.iterdir()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _numeric(model_dir) == []
    assert publish.existing_versions(model_dir) == []


def test_self_check_refuses_what_tf_serving_cannot_run(runs, tmp_path):
    # The way versions were written before: a tf.Module tracking only the Keras 3 model. TF2's
    # object-graph loader runs it; TF Serving's session loader finds no variable to read.
    from export.check import check_export, sample_requests
    from export.models import export_module

    task, config, model = load_run(runs["localizer"])
    contract = task.contract(config)
    module = tf.Module()
    module.model = model
    signatures = export_module("localizer").signatures(module, contract)
    tf.saved_model.save(module, str(tmp_path / "v"), signatures=signatures)
    requests = sample_requests("localizer", config, contract)
    with pytest.raises(ExportCheckError) as caught:
        check_export(tmp_path / "v", "localizer", model, contract, requests)
    assert re.fullmatch(
        r"signature 'serving_default' fails under TF Serving's session loader: variable "
        r"\S+ is not restored by the MetaGraph's restore op",
        str(caught.value),
    )
