"""Learning-rate schedules for `fit`, as callbacks that follow the run's own epochs.

A callback rather than a `keras.optimizers.schedules` object: the number of steps per epoch is
known only once the data is (a Carvana folder or a CSV sets it), and a resumed run picks the
schedule up at its epoch.

Example:
    >>> model.fit(data, epochs=20, callbacks=[CosineDecay(1e-3, epochs=20)])
"""

from __future__ import annotations

import math

import keras

SCHEDULES = ("constant", "cosine")


class CosineDecay(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each step: `base * (1 + cos(pi * t)) / 2`.

    `t` runs from 0 at the first step of the run to 1 at the end of its last epoch, so the last
    steps take small ones; that settles the weights in the minimum that large steps keep
    overshooting, which is where the last per-mille of Dice and IoU is.

    Args:
        base: the learning rate at the start.
        epochs: the run's total epochs (the schedule's length).
    """

    def __init__(self, base: float, epochs: int):
        super().__init__()
        self.base, self.epochs, self._epoch = base, epochs, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # Keras knows the steps per epoch except for data of unknown length; then the rate
        # changes once an epoch.
        steps = self.params.get("steps") or 0
        done = self._epoch + (batch / steps if steps else 0.0)
        t = min(done / self.epochs, 1.0)
        self.model.optimizer.learning_rate.assign(self.base * 0.5 * (1.0 + math.cos(math.pi * t)))


def callbacks(name: str, base: float, epochs: int) -> list[keras.callbacks.Callback]:
    """The callbacks of schedule `name` (one of SCHEDULES) for a run of `epochs`."""
    return [CosineDecay(base, epochs)] if name == "cosine" else []
