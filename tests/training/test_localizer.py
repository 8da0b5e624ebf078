"""Tests for the localizer: box geometry, metrics, the loss formula, the model and a short fit."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.contract import BOX_FORMAT
from training import boxes
from training.config import apply_overrides, replace
from training.data.shapes import load_data, synthetic_objects
from training.errors import ConfigError
from training.localizer import (
    PRESETS,
    EdgeBox,
    LocalizerConfig,
    box_iou_loss,
    box_sse,
    build_localizer,
    build_trainable,
    contract,
    draw_predictions,
    evaluate,
)

TINY = PRESETS["tiny"]


# --- box geometry -------------------------------------------------------------------------------


def test_box_format_is_the_contracts():
    assert BOX_FORMAT == ("x", "y", "h", "w")


def test_to_normalized_known_answer():
    # Columns 8..23 and rows 16..47 of a 64 x 32 (width x height) image.
    got = boxes.to_normalized(np.array([8.0, 16.0, 24.0, 48.0]), width=64, height=64)
    np.testing.assert_allclose(got, [16 / 64, 32 / 64, 32 / 64, 16 / 64])
    got = boxes.to_normalized(np.array([0.0, 0.0, 32.0, 10.0]), width=64, height=20)
    np.testing.assert_allclose(got, [0.25, 0.25, 0.5, 0.5])


def test_corner_conversions_round_trip():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 50, (20, 2))
    corners = np.concatenate([lo, lo + rng.uniform(1, 40, (20, 2))], axis=1)
    back = boxes.to_corners(boxes.to_normalized(corners, 96, 72), 96, 72)
    np.testing.assert_allclose(back, corners, atol=1e-9)
    norm = rng.uniform(0.1, 0.5, (5, 4))
    np.testing.assert_allclose(
        boxes.to_normalized(boxes.to_corners(norm, 10, 30), 10, 30), norm, atol=1e-12
    )


def test_clipping():
    np.testing.assert_allclose(
        boxes.clip_corners(np.array([-3.0, 2.0, 70.0, 80.0]), 64, 48), [0, 2, 64, 48]
    )
    # A box hanging over the left edge keeps only its inside part: x in [0, 0.3].
    np.testing.assert_allclose(
        boxes.clip_normalized(np.array([0.1, 0.5, 0.2, 0.4])), [0.15, 0.5, 0.2, 0.3]
    )


def test_iou_known_answers():
    a = np.array([0.25, 0.25, 0.5, 0.5])  # unit corners (0, 0) - (0.5, 0.5)
    b = np.array([0.5, 0.5, 0.5, 0.5])  # (0.25, 0.25) - (0.75, 0.75)
    far = np.array([0.9, 0.9, 0.1, 0.1])
    assert boxes.box_iou(a, a) == pytest.approx(1.0)
    assert boxes.box_iou(a, far) == 0.0
    # Overlap 0.25^2 over union 0.25 + 0.25 - 0.0625.
    assert boxes.box_iou(a, b) == pytest.approx(1 / 7)
    got = boxes.box_iou(np.stack([a, a, a]), np.stack([a, b, far]))
    np.testing.assert_allclose(got, [1.0, 1 / 7, 0.0])
    assert boxes.box_iou(np.zeros(4), np.zeros(4)) == 0.0


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 200)
    pred = np.where(rng.uniform(size=200) < 0.7, truth, rng.integers(0, 3, 200))
    want = f1_score(truth, pred, average="macro", labels=range(4), zero_division=0)
    assert boxes.macro_f1(truth, pred, 4) == pytest.approx(want)
    # Class 4 never appears and is never predicted: it scores 0, as in scikit-learn.
    want = f1_score(truth, pred, average="macro", labels=range(5), zero_division=0)
    assert boxes.macro_f1(truth, pred, 5) == pytest.approx(want)


# --- config ---------------------------------------------------------------------------------------


def test_presets_are_valid_and_seed_is_the_sources_design():
    assert set(PRESETS) == {"seed", "slim", "tiny"}
    seed = PRESETS["seed"]
    assert (seed.image_size, seed.alpha, seed.beta, seed.box_head) == (128, 1.0, 1.0, "dense")
    assert contract(PRESETS["slim"]).class_names == PRESETS["slim"].class_names


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"image_size": 30}, "multiple of 8"),
        ({"box_head": "gap"}, "dense, edges"),
        ({"edge_block": 4}, "1..3"),
        ({"class_names": ("a", "a")}, "distinct"),
        ({"filters": (8, 0, 16)}, "positive count"),
        ({"beta": 0.0}, "positive"),
        ({"ema_momentum": 1.0}, "[0, 1)"),
    ],
)
def test_bad_config_values_raise_config_error(change, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(")", r"\)")):
        replace(TINY, **change)


def test_overrides_reach_tuple_fields():
    cfg = apply_overrides(TINY, ["filters=4,8", "class_names=ellipse,diamond", "alpha=2"])
    assert cfg.filters == (4, 8) and cfg.class_names == ("ellipse", "diamond")
    assert cfg.alpha == 2.0


# --- model and loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["edges", "dense"])
def test_model_names_shapes_and_ranges(head):
    cfg = replace(TINY, box_head=head)
    model = build_localizer(cfg)
    assert model.input.name == "image"
    assert sorted(model.output) == ["box", "class_probs"]
    # The named outputs come from the layers of those names: a softmax over the classes on top
    # of the shared dense features, and a box head of four numbers per image.
    probs = model.get_layer("class_probs")
    assert isinstance(probs, keras.layers.Dense) and probs.activation is keras.activations.softmax
    assert probs.count_params() == (cfg.dense_units + 1) * len(cfg.class_names)
    assert tuple(probs.output.shape) == (None, len(cfg.class_names))
    box = model.get_layer("box")
    if head == "dense":
        assert isinstance(box, keras.layers.Dense) and box.activation is keras.activations.sigmoid
        assert box.count_params() == (cfg.dense_units + 1) * 4
    else:
        assert isinstance(box, EdgeBox)
    assert tuple(box.output.shape) == (None, 4)
    x = np.random.default_rng(0).uniform(size=(5, 32, 32, 3)).astype(np.float32)
    out = model.predict(x, verbose=0)
    assert out["class_probs"].shape == (5, 3) and out["box"].shape == (5, 4)
    np.testing.assert_allclose(out["class_probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert out["box"].min() >= 0.0 and out["box"].max() <= 1.0


def test_loss_equals_the_numpy_formula():
    cfg = replace(TINY, alpha=0.7, beta=3.0)
    model = build_trainable(cfg)
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(6, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(0, 3, 6)
    target_boxes = rng.uniform(0.2, 0.8, (6, 4)).astype(np.float32)
    out = model.predict(x, verbose=0)
    ce = -np.log(np.clip(out["class_probs"][np.arange(6), ids], 1e-7, 1.0))
    sse = np.sum((out["box"] - target_boxes) ** 2, axis=1)  # a sum over x, y, h, w, not a mean
    want = np.mean(0.7 * ce + 3.0 * sse)
    got = model.evaluate(
        x, {"class_probs": ids, "box": target_boxes}, batch_size=6, verbose=0, return_dict=True
    )
    assert got["loss"] == pytest.approx(want, rel=1e-4)


def test_fit_overfits_a_fixed_batch():
    cfg = replace(TINY, learning_rate=3e-3)
    keras.utils.set_random_seed(0)
    images, ids, target_boxes = synthetic_objects(16, 32, seed=5)
    x = images.astype(np.float32) / 255.0
    y = {"class_probs": ids, "box": target_boxes}
    model = build_trainable(cfg)
    before = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=16, epochs=40, verbose=0)
    after = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert after < 0.5 * before


def test_tiny_runs_end_to_end(tmp_path):
    cfg = TINY
    data = load_data(cfg, None, seed=0)
    model = build_trainable(cfg)
    model.fit(
        data.train, validation_data=data.val, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0
    )
    metrics = evaluate(model, data, cfg)
    assert set(metrics) == {"accuracy", "f1", "mean_iou", "iou50", "num_val"}
    assert metrics["num_val"] == cfg.num_val
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("accuracy", "f1", "mean_iou", "iou50"))
    path = tmp_path / "pics" / "predictions.png"
    draw_predictions(model, data, cfg, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_file_reloads_with_the_custom_layers(tmp_path):
    model = build_localizer(TINY)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    a, b = model.predict(x, verbose=0), again.predict(x, verbose=0)
    np.testing.assert_allclose(a["box"], b["box"], atol=1e-6)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.epochs = 3  # type: ignore[misc]
    assert isinstance(TINY, LocalizerConfig)


def test_iou_loss_matches_box_iou_and_joins_the_box_loss():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 0.7, (40, 4)).astype(np.float32)
    truth[:, 2:] = rng.uniform(0.1, 0.4, (40, 2))
    pred = truth + rng.normal(0, 0.03, truth.shape).astype(np.float32)
    iou = 1.0 - np.asarray(box_iou_loss(truth, pred))
    np.testing.assert_allclose(iou, boxes.box_iou(pred, truth), atol=1e-5)
    model = build_trainable(replace(TINY, iou_weight=2.0))
    box_loss = model.loss["box"](truth, pred)
    expected = box_sse(truth, pred) + 2.0 / TINY.beta * (1.0 - iou)
    np.testing.assert_allclose(np.asarray(box_loss), np.asarray(expected), rtol=1e-5)
