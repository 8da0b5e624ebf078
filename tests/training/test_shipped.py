"""The shipped slim models (`shipped-runs/`) match their manifests and still do what they claim.

Each model is also measured again, cheaply, on data it has never seen (another seed): a shipped
file that was swapped, retrained differently or broken by a code change fails here.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from common.contract import MODEL_NAMES
from training import config as cfg
from training import shipped
from training.runner import load_run, read_run_config
from training.tasks import get_task

# Fresh synthetic data, unlike any seed the shipped runs were trained or validated on.
FRESH_SEED = 20261128


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_shipped_files_match_their_manifest(model):
    assert shipped.check(model) == []


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_shipped_runs_are_the_current_slim_preset(model):
    # A changed slim preset needs `make models` (retraining) before it ships.
    task = get_task(model)
    saved = read_run_config(shipped.FOLDER / model)
    assert cfg.from_dict(task.config_cls, saved["config"]) == task.presets["slim"]


def test_check_finds_a_changed_file_and_changed_metrics(tmp_path):
    shutil.copytree(shipped.FOLDER / "localizer", tmp_path / "localizer")
    weights = tmp_path / "localizer" / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    metrics_file = tmp_path / "localizer" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "mean_iou": 0.999}))
    (tmp_path / "localizer" / "extra.bin").write_bytes(b"x")
    problems = shipped.check("localizer", tmp_path)
    assert any("model.weights.h5 does not match" in p for p in problems)
    assert any("metrics differ" in p for p in problems)
    assert any("extra.bin" in p for p in problems)


def _manifest_metrics(model: str) -> dict:
    return json.loads((shipped.FOLDER / model / shipped.MANIFEST_FILE).read_text())["metrics"]


def test_shipped_unet_segments_fresh_cars_as_well_as_recorded():
    task, config, model = load_run(shipped.FOLDER / "unet")
    # 20 validation images of 5 cars never drawn before.
    small = cfg.replace(config, num_cars=10, views_per_car=4, val_fraction=0.5)
    data = task.load_data(small, None, FRESH_SEED)
    measured = task.evaluate(model, data, small)
    assert measured["dice"] >= _manifest_metrics("unet")["dice"] - 0.005


def test_shipped_localizer_names_and_boxes_fresh_shapes_as_well_as_recorded():
    task, config, model = load_run(shipped.FOLDER / "localizer")
    small = cfg.replace(config, num_train=8, num_val=200)
    measured = task.evaluate(model, task.load_data(small, None, FRESH_SEED), small)
    recorded = _manifest_metrics("localizer")
    assert measured["accuracy"] >= recorded["accuracy"] - 0.02
    assert measured["mean_iou"] >= recorded["mean_iou"] - 0.02


def test_shipped_generator_draws_digits_the_judge_reads():
    from client.canary.judge import DigitJudge, judge_scores
    from training import gan_eval

    _, _, generator = load_run(shipped.FOLDER / "generator")
    images = gan_eval.sample_images(generator, 500, seed=FRESH_SEED)
    probs = DigitJudge.load().probabilities(images)
    # The shipped judge is the evaluation's classifier retrained the same way, in float16.
    assert judge_scores(probs)["recognizability"] >= (
        _manifest_metrics("generator")["recognizability"] - 0.05
    )
    # Every digit shows up: the class carried by z was learned.
    assert np.bincount(probs.argmax(axis=-1), minlength=10).min() >= 20


@pytest.mark.integration
def test_retrain_ships_a_run_with_its_command_commit_and_hashes(tmp_path):
    # The path `make models` takes, with the tiny preset: which `check` must then refuse.
    (path,) = shipped.retrain(["localizer"], tmp_path / "shipped", "tiny", tmp_path / "runs")
    manifest = json.loads((path / shipped.MANIFEST_FILE).read_text())
    assert manifest["command"].startswith("python -m training localizer --preset tiny --seed 0")
    assert manifest["metrics"] == json.loads((path / "metrics.json").read_text())
    assert manifest["train_cpu_seconds"] > 0
    assert shipped.check("localizer", tmp_path / "shipped") == [
        "localizer: not trained with the slim preset"
    ]
