"""The cosine learning-rate schedule, step by step inside a real `fit`."""

import math

import keras
import numpy as np
import pytest

from training import schedules
from training.config import replace
from training.errors import ConfigError
from training.unet import PRESETS


class _Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def test_cosine_decay_follows_the_whole_run():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)
    seen = _Rates()
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=3,
        verbose=0,
        callbacks=[*schedules.callbacks("cosine", 0.1, 3), seen],
    )
    steps = 12
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps)]
    assert seen.rates == pytest.approx(expected, rel=1e-5)
    assert schedules.callbacks("constant", 0.1, 3) == []


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="constant, cosine"):
        replace(PRESETS["tiny"], lr_schedule="step")
