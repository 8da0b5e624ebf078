"""The segmentation networks: the seed's exact architecture, the U-Net, losses and metrics."""

import keras
import numpy as np
import pytest

from training import metrics
from training.config import replace
from training.flops import forward_flops
from training.unet import PRESETS, build_trainable, build_unet


def _conv_params(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def _seed_param_count():
    """The source's Carvana network, counted layer by layer from its description."""
    total, c_in = 0, 3
    for filters in (64, 128, 256, 512, 1024):  # four down blocks, then the bottom block
        total += _conv_params(3, c_in, filters) + _conv_params(3, filters, filters)
        c_in = filters
    for filters in (1024, 512, 256, 128):  # 3x3 stride-2 transpose convs
        total += _conv_params(3, c_in, filters)
        c_in = filters
    return total + _conv_params(1, c_in, 1)


def test_seed_is_the_source_network():
    model = build_unet(PRESETS["seed"])
    assert model.count_params() == _seed_param_count() == 34_475_585
    assert model.input_shape == (None, 128, 128, 3)
    assert model.output_shape == (None, 128, 128, 1)

    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs[:-1])
    assert convs[-1].kernel_size == (1, 1)
    tconvs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [t.filters for t in tconvs] == [1024, 512, 256, 128]
    assert all(t.kernel_size == (3, 3) and t.strides == (2, 2) for t in tconvs)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 4 and all(p.pool_size == (2, 2) for p in pools)
    # No skip connections and no batch norm in the source's network.
    assert not any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    # Weights drawn from N(0, 0.02).
    kernel = model.get_layer("bottom_conv2").kernel.numpy()
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001


def test_seed_training_setup():
    seed = PRESETS["seed"]
    assert (seed.loss, seed.learning_rate, seed.batch_size) == ("bce", 1e-4, 32)
    assert seed.epochs * seed.steps_per_epoch == 500  # the source's 500 batches


def test_seed_flops_match_hand_count():
    macs, c_in = 0, 3
    for level, filters in enumerate((64, 128, 256, 512, 1024)):
        side = 128 >> level  # 3x3 convs at 128, 64, 32, 16 and (bottom) 8 pixels
        macs += side * side * 9 * (c_in * filters + filters * filters)
        c_in = filters
    for level, filters in enumerate((1024, 512, 256, 128)):
        side = 8 << level  # each transpose conv reads an 8, 16, 32, 64-pixel map
        macs += side * side * 9 * c_in * filters
        c_in = filters
    macs += 128 * 128 * c_in  # the 1x1 conv to one logit
    assert forward_flops(build_unet(PRESETS["seed"])) == 2 * macs


@pytest.mark.parametrize("size", [16, 48, 512])
def test_any_multiple_of_16(size):
    model = build_unet(replace(PRESETS["tiny"], image_size=size))
    assert model.output_shape == (None, size, size, 1)


def test_unet_has_named_io_and_skips():
    model = build_unet(PRESETS["slim"])
    assert model.input.name == "image"
    assert model.get_layer("mask_logits").output.shape[-1] == 1
    skips = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert len(skips) == 4


def test_dice_and_iou_known_answers():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert metrics.dice_score(a, b)[0] == 1.0  # empty vs empty
    assert metrics.iou_score(a, b)[0] == 1.0
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert metrics.dice_score(a, b)[0] == pytest.approx(0.5)
    assert metrics.iou_score(a, b)[0] == pytest.approx(4 / 12)
    assert metrics.dice_score(a, np.zeros_like(a))[0] == 0.0


def test_dice_is_two_iou_over_one_plus_iou():
    rng = np.random.default_rng(0)
    t, p = rng.random((10, 16, 16)) > 0.5, rng.random((10, 16, 16)) > 0.4
    iou = metrics.iou_score(t, p)
    np.testing.assert_allclose(metrics.dice_score(t, p), 2 * iou / (1 + iou))


def test_keras_metrics_match_numpy():
    rng = np.random.default_rng(1)
    truth = (rng.random((6, 8, 8, 1)) > 0.5).astype("float32")
    logits = rng.normal(size=(6, 8, 8, 1)).astype("float32")
    truth[0] = 0.0
    logits[0] = -1.0  # an empty mask predicted empty scores 1
    dice, iou = metrics.DiceMetric(), metrics.IoUMetric()
    dice.update_state(truth, logits)
    iou.update_state(truth, logits)
    t, p = truth[..., 0] > 0.5, logits[..., 0] >= 0
    assert float(dice.result()) == pytest.approx(metrics.dice_score(t, p).mean(), rel=1e-6)
    assert float(iou.result()) == pytest.approx(metrics.iou_score(t, p).mean(), rel=1e-6)


def test_losses_match_numpy():
    rng = np.random.default_rng(2)
    y = (rng.random((3, 5, 5, 1)) > 0.5).astype("float32")
    z = rng.normal(size=(3, 5, 5, 1)).astype("float32")
    p = 1 / (1 + np.exp(-z))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=(1, 2, 3))
    inter, total = (y * p).sum(axis=(1, 2, 3)), y.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (total + 1)
    np.testing.assert_allclose(metrics.bce_loss(y, z).numpy(), bce, rtol=1e-5)
    np.testing.assert_allclose(metrics.soft_dice_loss(y, z).numpy(), dice, rtol=1e-5)
    np.testing.assert_allclose(metrics.bce_dice_loss(y, z).numpy(), bce + dice, rtol=1e-5)


def test_tiny_unet_overfits_a_batch():
    keras.utils.set_random_seed(0)
    model = build_trainable(PRESETS["tiny"])
    rng = np.random.default_rng(3)
    # Bright squares on noise; the squares are the foreground.
    y = np.zeros((4, 32, 32, 1), "float32")
    for i, (r, c) in enumerate([(2, 5), (10, 12), (4, 16), (14, 3)]):
        y[i, r : r + 14, c : c + 12] = 1.0
    x = (0.4 * rng.random((4, 32, 32, 3)) + 0.5 * y).astype("float32")
    # Training-mode losses: batch-norm moving averages lag behind over so few steps.
    losses = model.fit(x, y, batch_size=4, epochs=40, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0]
