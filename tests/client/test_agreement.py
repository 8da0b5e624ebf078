"""The rollout measures of the client registry: Dice, box IoU, class agreement, the digit judge."""

from __future__ import annotations

import numpy as np
import pytest

from client.canary import agreement
from client.canary.comparisons import COMPARISONS, comparison
from client.canary.judge import DigitJudge, judge_scores, shipped_judge
from client.results import Generation, Localization, Segmentation
from common.contract import CONTRACTS


def test_dice():
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    shifted = np.roll(square, 2, axis=1)
    assert agreement.dice(square, square) == 1.0
    assert agreement.dice(square, shifted) == pytest.approx(2 * 8 / 32)
    assert agreement.dice(square, ~square) == 0.0
    empty = np.zeros((8, 8), bool)
    assert agreement.dice(empty, empty) == 1.0  # nothing found twice is agreement
    with pytest.raises(ValueError, match="masks differ in shape"):
        agreement.dice(square, square[:4])


def test_box_iou_of_inclusive_corners():
    assert agreement.box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert agreement.box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert agreement.box_iou((0, 0, 4, 4), (10, 10, 14, 14)) == 0.0
    assert agreement.box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0  # one pixel


def results(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "unet":
        mask = rng.random((16, 24)) > 0.5
        return Segmentation(mask, mask.astype(np.float32), "model:unet/1")
    if kind == "localizer":
        return Localization("ellipse", 0.9, (2, 3, 10, 12), "model:localizer/1")
    return Generation(rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8), [1, 2], "model:g/1")


TRUTH = {
    "unet": np.ones((16, 24), bool),
    "localizer": agreement.BoxLabel("ellipse", (2, 3, 10, 12)),
}


@pytest.mark.parametrize("kind", list(COMPARISONS))
def test_every_model_has_measures_that_return_what_they_declare(kind):
    assert set(COMPARISONS) == set(CONTRACTS)
    entry = comparison(kind)
    a, b = results(kind, 0), results(kind, 1)
    same = entry.agreement(a, a)
    assert set(same) == set(entry.measures["agreement"])
    assert all(value == 1.0 for value in same.values())
    assert all(0.0 <= value <= 1.0 for value in entry.agreement(a, b).values())
    if entry.against_truth is not None:
        assert set(entry.against_truth(a, TRUTH[kind])) == set(entry.measures["truth"])
    if entry.quality is not None:
        assert set(entry.quality([a, b])) == set(entry.measures["quality"])
    image = np.zeros((16, 24, 3), np.uint8) if entry.inputs == "images" else None
    assert entry.picture(image, a).size[0] > 0
    with pytest.raises(ValueError, match="valid: unet, localizer, generator"):
        comparison("resnet")


def test_localizer_truth_counts_class_and_box():
    result = Localization("ellipse", 0.9, (0, 0, 9, 9), "model:localizer/1")
    right = agreement.localization_truth(result, agreement.BoxLabel("ellipse", (0, 0, 9, 9)))
    wrong = agreement.localization_truth(result, agreement.BoxLabel("triangle", (5, 0, 14, 9)))
    assert right == {"accuracy": 1.0, "box_iou": 1.0}
    assert wrong == {"accuracy": 0.0, "box_iou": pytest.approx(1 / 3)}


def test_the_judge_reads_digits_and_not_noise():
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images[:300] * (255.0 / 16.0)).astype(np.uint8)
    # MNIST-like: each digit fills a 20 px box in the middle of 28 px.
    big = [np.asarray(Image.fromarray(d).resize((20, 20), Image.BILINEAR)) for d in small]
    images = np.pad(np.stack(big), ((0, 0), (4, 4), (4, 4)))
    judge = shipped_judge()
    probs = judge.probabilities(images)
    assert probs.shape == (300, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # Trained on MNIST (97.5 % on its test split), the judge reads scikit-learn's blocky 8x8
    # digits far above chance (10 %): about 57 % of them.
    assert np.mean(probs.argmax(axis=1) == digits.target[:300]) > 0.45
    noise = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    read, unread = judge_scores(probs), judge_scores(judge.probabilities(noise))
    assert unread["judge_confidence"] < read["judge_confidence"]


def test_the_judge_resizes_and_greys_other_images():
    judge = DigitJudge.load()
    colour = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert judge.prepare(colour).shape == (3, 28, 28, 1)
    assert judge.probabilities(colour).shape == (3, 10)
