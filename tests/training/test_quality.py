"""The `slim` presets reach their quality goals (minutes each; run with `make test-all`)."""

import pytest

from training.runner import train
from training.tasks import get_task

pytestmark = pytest.mark.slow


def _slim_run(model, tmp_path, **changes):
    task = get_task(model)
    config = task.presets["slim"]
    if changes:
        from training.config import replace

        config = replace(config, **changes)
    return train(task, config, out=tmp_path / model, seed=0, preset="slim").metrics


def test_slim_unet_segments_synthetic_cars(tmp_path):
    metrics = _slim_run("unet", tmp_path)
    assert metrics["dice"] >= 0.985
    best_classical = max(metrics["baseline_otsu_dice"], metrics["baseline_kmeans_dice"])
    assert metrics["dice"] >= best_classical + 0.2


def test_slim_localizer_classifies_and_boxes(tmp_path):
    metrics = _slim_run("localizer", tmp_path)
    assert metrics["accuracy"] >= 0.95
    assert metrics["mean_iou"] >= 0.75


def test_slim_generator_beats_an_untrained_one(tmp_path):
    metrics = _slim_run("generator", tmp_path)
    assert metrics["cfid"] < 0.5 * metrics["cfid_untrained"]
    assert metrics["classifier_score"] > 2 * metrics["classifier_score_untrained"]
    # Real held-out digits remain the floor a generator cannot beat.
    assert metrics["cfid_real"] < metrics["cfid"]
