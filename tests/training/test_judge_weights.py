"""The shipped judge: its NumPy forward pass is the Keras digit classifier's on the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client.canary.judge import FOLDER, MANIFEST_FILE, WEIGHTS_FILE, DigitJudge
from training import gan_eval
from training.judge_weights import LAYERS, load_into, write_judge

# float32 arithmetic in another order (im2col products against Keras's convolutions).
PARITY_ATOL = 1e-5


def keras_judge(folder) -> tuple[object, DigitJudge]:
    judge = DigitJudge.load(folder)
    with np.load(folder / WEIGHTS_FILE) as data:
        arrays = {key: data[key] for key in data.files}
    classifier = gan_eval.build_digit_classifier(judge.image_size)
    load_into(classifier, arrays)
    return classifier, judge


def digits(n: int) -> np.ndarray:
    from training.data.digits import load_sklearn_digits

    images, _ = load_sklearn_digits(28)
    return images[:n]


def test_the_numpy_judge_equals_the_keras_judge_on_the_shipped_weights():
    classifier, judge = keras_judge(FOLDER)
    noise = np.random.default_rng(0).integers(0, 256, (32, 28, 28), dtype=np.uint8)
    for images in (digits(96), noise):
        _, want = gan_eval.classifier_features(classifier, images)
        np.testing.assert_allclose(judge.probabilities(images), want, atol=PARITY_ATOL)
    manifest = json.loads((FOLDER / MANIFEST_FILE).read_text())
    assert manifest["layers"] == list(LAYERS) and manifest["test_accuracy"] > 0.95


@pytest.mark.integration
def test_the_writer_ships_what_the_client_reads(tmp_path):
    # A quick judge on scikit-learn's digits: the same writer `make judge-weights` runs on MNIST.
    written = write_judge(tmp_path, dataset="digits", train_images=256, epochs=1)
    assert sorted(p.name for p in written) == sorted([WEIGHTS_FILE, MANIFEST_FILE])
    classifier, judge = keras_judge(tmp_path)
    _, want = gan_eval.classifier_features(classifier, digits(32))
    np.testing.assert_allclose(judge.probabilities(digits(32)), want, atol=PARITY_ATOL)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["dataset"] == "digits"
