"""The DCGAN: the tutorial's exact nets, a real fit, checkpoints, multi-replica steps, metrics."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training import dcgan, gan_eval
from training.config import replace
from training.data import digits
from training.errors import ConfigError

TINY = dcgan.PRESETS["tiny"]
ROOT = Path(__file__).resolve().parents[2]


def test_seed_is_the_tf_tutorial_network():
    seed = dcgan.PRESETS["seed"]
    assert (seed.latent_dim, seed.batch_size, seed.learning_rate) == (100, 256, 1e-4)
    generator, discriminator = dcgan.build_generator(seed), dcgan.build_discriminator(seed)
    # Parameter counts of the tutorial's make_generator_model / make_discriminator_model.
    assert generator.count_params() == 2_330_944
    assert discriminator.count_params() == 212_865
    tconvs = [lay for lay in generator.layers if isinstance(lay, keras.layers.Conv2DTranspose)]
    assert [(t.filters, t.kernel_size, t.strides) for t in tconvs] == [
        (128, (5, 5), (1, 1)),
        (64, (5, 5), (2, 2)),
        (1, (5, 5), (2, 2)),
    ]


def test_generator_and_discriminator_names_and_shapes():
    generator, discriminator = dcgan.build_generator(TINY), dcgan.build_discriminator(TINY)
    assert generator.input.name == "z" and generator.input_shape == (None, TINY.latent_dim)
    assert generator.output_names == ["images"]
    assert generator.output_shape == (None, 28, 28, 1)
    assert discriminator.input.name == "images" and discriminator.output_names == ["real_logit"]
    assert discriminator.output_shape == (None, 1)
    assert all(not layer.name.split("_")[-1].isdigit() for layer in generator.layers)
    images = generator(np.random.default_rng(0).standard_normal((4, TINY.latent_dim)))
    assert images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0


def test_contract_matches_the_generator():
    config = replace(TINY, latent_dim=12)
    contract = dcgan.contract(config)
    generator = dcgan.build_generator(config)
    sig = contract.signature()
    assert sig.inputs[0].name == "z" and sig.inputs[0].shape == generator.input_shape
    assert sig.outputs[0].name == "images" and sig.outputs[0].shape == generator.output_shape


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 30}, "multiple of 4"),
        ({"dataset": "cifar"}, "mnist, digits"),
        ({"g_filters": (8, 8)}, "3 positive widths"),
        ({"channels": 2}, "choose 1 or 3"),
        ({"steps_per_epoch": 0}, "at least 1"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(TINY, **changes)


@pytest.fixture(scope="module")
def tiny_data():
    return digits.load_data(TINY, None, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_data):
    keras.utils.set_random_seed(0)
    model = dcgan.build_trainable(TINY)
    before = [w.numpy().copy() for w in model.generator.trainable_weights]
    history = model.fit(
        tiny_data.train,
        epochs=TINY.epochs,
        steps_per_epoch=TINY.steps_per_epoch,
        shuffle=False,
        verbose=0,
    )
    return model, before, history.history


def test_fit_updates_both_nets_and_logs_finite_losses(trained):
    model, before, history = trained
    assert set(history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(values[-1]) for values in history.values())
    after = model.generator.trainable_weights
    assert all(not np.array_equal(a, b.numpy()) for a, b in zip(before, after, strict=True))
    assert int(model.g_optimizer.iterations) == int(model.d_optimizer.iterations) == 2
    assert dcgan.servable(model) is model.generator


def test_checkpoint_restores_both_nets_and_optimizers(trained, tmp_path):
    model, _, _ = trained
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = dcgan.build_trainable(TINY)
    tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
    z = np.random.default_rng(3).standard_normal((5, TINY.latent_dim)).astype(np.float32)
    np.testing.assert_array_equal(model.generator(z).numpy(), fresh.generator(z).numpy())
    for a, b in zip(
        model.discriminator.weights + model.d_optimizer.variables,
        fresh.discriminator.weights + fresh.d_optimizer.variables,
        strict=True,
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh.g_optimizer.iterations) == int(model.g_optimizer.iterations) == 2


def test_evaluate_and_samples_picture(trained, tiny_data, tmp_path):
    model, _, _ = trained
    metrics = dcgan.evaluate(model, tiny_data, TINY)
    for stem in ("cfid", "classifier_score", "recognizability", "class_entropy"):
        for suffix in ("", "_untrained", "_real"):
            assert math.isfinite(metrics[stem + suffix])
    assert metrics["num_eval"] == TINY.eval_samples
    assert 0.0 <= metrics["classifier_accuracy"] <= 1.0
    json.dumps(metrics)  # the runner writes these to metrics.json
    path = tmp_path / "samples.png"
    dcgan.draw_predictions(model, tiny_data, TINY, path)
    with Image.open(path) as img:
        assert img.width >= 600 and img.height >= 400


# Run in a fresh interpreter: logical CPU devices must be set before TensorFlow starts.
_MIRRORED_CHECK = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import dataclasses, keras, numpy as np
from training import dcgan

config = dataclasses.replace(dcgan.PRESETS["tiny"], dropout=0.0)
half = np.random.default_rng(0).uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
z_half = np.random.default_rng(1).standard_normal((8, config.latent_dim)).astype("float32")

class FixedLatents(dcgan.DCGAN):
    def latents(self, count):
        return tf.constant(np.concatenate([z_half, z_half]))[:count]

def one_step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = FixedLatents(config)
        # Plain SGD: unlike Adam's first step, its update is proportional to the gradient.
        model.g_optimizer = keras.optimizers.SGD(0.5, name="g_sgd")
        model.d_optimizer = keras.optimizers.SGD(0.5, name="d_sgd")
        model.g_optimizer.build(model.generator.trainable_variables)
        model.d_optimizer.build(model.discriminator.trainable_variables)
        model.compile(optimizer=None)
    # Both replicas get the same half batch, so per-replica batch norm sees global statistics.
    batch = tf.data.Dataset.from_tensors(np.concatenate([half, half]))
    logs = model.fit(batch, shuffle=False, verbose=0)
    return [w.numpy() for w in model.trainable_weights], logs.history

single, single_logs = one_step(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
multi, multi_logs = one_step(mirrored)
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(single, multi)),
    "single": single_logs, "multi": multi_logs,
}))
"""


def test_two_replica_step_equals_single_device_step():
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_CHECK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["max_weight_diff"] < 1e-5
    for name, values in report["single"].items():
        assert report["multi"][name] == pytest.approx(values, rel=1e-5)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6))
    assert gan_eval.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    x, y = rng.normal(1.0, 2.0, 300), rng.normal(-0.5, 0.5, 500)
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert gan_eval.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    # Diagonal covariances: the distance is the sum of the 1-D distances per feature.
    b = rng.normal([0.0, 3.0], [1.0, 2.0], (1000, 2))
    c = rng.normal([1.0, 3.0], [1.0, 0.5], (1000, 2))
    per_feature = sum(gan_eval.frechet_distance(b[:, i], c[:, i]) for i in range(2))
    assert gan_eval.frechet_distance(b, c) == pytest.approx(per_feature, rel=0.02)
    with pytest.raises(ValueError, match="feature sizes differ"):
        gan_eval.frechet_distance(a, a[:, :3])


def test_frechet_distance_with_fewer_samples_than_features_is_finite():
    rng = np.random.default_rng(1)
    assert math.isfinite(gan_eval.frechet_distance(rng.random((20, 64)), rng.random((20, 64))))


def test_probability_metrics_known_answers():
    uniform = np.full((50, 10), 0.1)
    assert gan_eval.classifier_score(uniform) == pytest.approx(1.0)
    one_hot = np.eye(10)[np.arange(100) % 10]
    assert gan_eval.classifier_score(one_hot) == pytest.approx(10.0)
    assert gan_eval.classifier_score(np.eye(4)[np.arange(8) % 4]) == pytest.approx(4.0)
    assert gan_eval.classifier_score(np.eye(10)[np.zeros(30, int)]) == pytest.approx(1.0)
    assert gan_eval.recognizability(one_hot) == 1.0
    assert gan_eval.recognizability(uniform) == 0.0
    assert gan_eval.class_entropy(one_hot) == pytest.approx(math.log(10))
    assert gan_eval.class_entropy(np.eye(10)[np.zeros(30, int)]) == 0.0


def test_real_digits_score_far_better_than_an_untrained_generator():
    pytest.importorskip("pureml")
    x_train, y_train, x_test, y_test = digits.load_mnist()
    classifier = gan_eval.train_digit_classifier(x_train[:6000], y_train[:6000], epochs=1, seed=0)
    assert gan_eval.classifier_accuracy(classifier, x_test[:500], y_test[:500]) > 0.85
    n = 400
    reference, _ = gan_eval.classifier_features(classifier, x_test[:n])
    real_feats, real_probs = gan_eval.classifier_features(classifier, x_test[n : 2 * n])
    fake = gan_eval.sample_images(dcgan.build_generator(dcgan.PRESETS["slim"]), n, seed=0)
    fake_feats, fake_probs = gan_eval.classifier_features(classifier, fake)
    cfid_real = gan_eval.frechet_distance(real_feats, reference)
    cfid_untrained = gan_eval.frechet_distance(fake_feats, reference)
    assert cfid_real < 0.1 * cfid_untrained
    assert gan_eval.classifier_score(real_probs) > 2 * gan_eval.classifier_score(fake_probs)
    assert gan_eval.recognizability(real_probs) > gan_eval.recognizability(fake_probs) + 0.3


def test_latent_classes_are_balanced_and_fixed_by_z():
    z = np.random.default_rng(0).standard_normal((20_000, 8)).astype(np.float32)
    classes = np.asarray(dcgan.latent_classes(z))
    shares = np.bincount(classes, minlength=10) / len(classes)
    assert np.all(np.abs(shares - 0.1) < 0.01)
    # Only the first coordinate decides, through equal bands of the normal CDF.
    moved = z.copy()
    moved[:, 1:] = 0.0
    np.testing.assert_array_equal(np.asarray(dcgan.latent_classes(moved)), classes)
    edges = np.array([[-5.0], [-1.28], [0.001], [5.0]], np.float32)  # CDF 0, 0.1003, 0.5004, 1
    assert np.asarray(dcgan.latent_classes(edges)).tolist() == [0, 1, 5, 9]


@pytest.mark.parametrize("head", dcgan.CLASS_HEADS)
def test_class_learning_weight_average_and_what_is_served(tmp_path, head):
    config = replace(TINY, class_from_latent=True, class_head=head, ema_momentum=0.5)
    data = digits.load_data(config, None, seed=0)
    keras.utils.set_random_seed(0)
    model = dcgan.build_trainable(config)
    history = model.fit(data.train, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    assert all(math.isfinite(values[-1]) for values in history.history.values())
    if head == "auxiliary":
        assert {"real_class_acc", "fake_class_acc"} <= set(history.history)
        assert model.discriminator.output_names == ["real_logit", "class_logits"]
    else:
        assert [t.name for t in model.discriminator.inputs] == ["images", "labels"]
    served = dcgan.servable(model)
    # The weight average is served, with batch-norm statistics measured on its own samples.
    assert served is not model.generator and served.output_names == ["images"]
    averages = model.g_optimizer._model_variables_moving_average
    for var, average in zip(served.trainable_variables, averages, strict=True):
        np.testing.assert_array_equal(var.numpy(), average.numpy())
    live = {w.path: w.numpy() for w in model.generator.non_trainable_weights}
    assert any(not np.allclose(w.numpy(), live[w.path]) for w in served.non_trainable_weights)
    # Export rebuilds the generator from the config and loads these weights into it.
    served.save_weights(tmp_path / "g.weights.h5")
    rebuilt = dcgan.build_generator(config)
    rebuilt.load_weights(tmp_path / "g.weights.h5")
    z = np.random.default_rng(0).standard_normal((4, config.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(z).numpy(), served(z).numpy(), atol=1e-6)
