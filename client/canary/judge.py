"""The generator's judge in NumPy: the project's digit classifier, from its shipped weights.

`training.gan_eval.build_digit_classifier` (rescale, two 3x3 conv + ReLU + 2x2 max-pool blocks,
a 128-unit dense layer, a 10-way softmax) trained once by `training.judge_weights`, evaluated
here without TensorFlow so that the slim client and the rollout gates can judge generated digits.
A test holds it to the Keras network on the same weights.

Example:
    >>> judge = DigitJudge.load()
    >>> judge.probabilities(generation.images).shape      # [N, 10]
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER = Path(__file__).resolve().parent / "judge_weights"
WEIGHTS_FILE, MANIFEST_FILE = "digit_judge.npz", "digit_judge.json"
# The share of samples the judge must call with more than this confidence to count them as
# recognisable, as `training.gan_eval.recognizability` does.
RECOGNIZABLE = 0.9


class DigitJudge:
    """The digit classifier's forward pass in float32 NumPy.

    Args:
        arrays: `{"conv1/kernel": [3,3,1,32], "conv1/bias": [32], ..., "class_probs/bias": [10]}`.
        image_size: the square side the classifier was trained at.
    """

    def __init__(self, arrays: dict[str, np.ndarray], image_size: int = 28):
        self.w = {key: np.asarray(value, np.float32) for key, value in arrays.items()}
        self.image_size = image_size

    @classmethod
    def load(cls, folder: str | Path = FOLDER) -> DigitJudge:
        """The shipped judge (`client/canary/judge_weights/`), or one the training stage wrote."""
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        with np.load(folder / WEIGHTS_FILE) as data:
            arrays = {key: data[key] for key in data.files}
        return cls(arrays, int(manifest["image_size"]))

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 `[N,H,W]` or `[N,H,W,C]` as the judge's grey `[N,S,S,1]` 0..255 floats.

        Colour is averaged to grey (as `gan_eval.to_classifier_input` does); another size is
        resized bilinearly to the judge's side.
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        x = x.astype(np.float32)
        if x.shape[-1] != 1:
            x = x.mean(axis=-1, keepdims=True)
        s = self.image_size
        if x.shape[1:3] != (s, s):
            x = np.stack(
                [
                    np.asarray(
                        Image.fromarray(plane[..., 0], mode="F").resize(
                            (s, s), Image.Resampling.BILINEAR
                        )
                    )[..., np.newaxis]
                    for plane in x
                ]
            )
        return x

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities `[N, 10]` of uint8 images (see `prepare`)."""
        x = self.prepare(images) / np.float32(255.0)
        for name in ("conv1", "conv2"):
            x = _max_pool2(np.maximum(_conv3x3_same(x, *self._layer(name)), 0.0))
        x = x.reshape(len(x), -1)
        kernel, bias = self._layer("features")
        x = np.maximum(x @ kernel + bias, 0.0)
        kernel, bias = self._layer("class_probs")
        return _softmax(x @ kernel + bias)

    def _layer(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.w[f"{name}/kernel"], self.w[f"{name}/bias"]


@cache
def shipped_judge() -> DigitJudge:
    """The shipped judge, loaded once per process."""
    return DigitJudge.load()


def _conv3x3_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D(3, padding="same") on NHWC: zero padding of 1, stride 1."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # [N, H, W, C, 3, 3]: every pixel's 3x3 neighbourhood, without copying.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    n, h, w, c = x.shape
    # One matrix product (im2col): each row is a pixel's neighbourhood in (c, i, j) order.
    columns = windows.reshape(n * h * w, c * 9)
    weights = kernel.transpose(2, 0, 1, 3).reshape(c * 9, -1)
    return (columns @ weights + bias).reshape(n, h, w, -1)


def _max_pool2(x: np.ndarray) -> np.ndarray:
    """Keras MaxPooling2D(2) (valid padding): an odd last row or column is dropped."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def judge_scores(probs: np.ndarray) -> dict[str, float]:
    """The judge's verdict on a set of samples.

    Returns:
        `judge_confidence`: the mean top-class probability (how surely the judge reads a digit);
        `recognizability`: the share read with more than 0.9 (as in `training.gan_eval`).
    """
    top = np.asarray(probs, np.float64).max(axis=-1)
    return {
        "judge_confidence": float(top.mean()),
        "recognizability": float(np.mean(top > RECOGNIZABLE)),
    }
