"""What a model's data loader hands to the training runner (a leaf: imports no model or loader)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf


@dataclass
class TaskData:
    """What a model's loader hands to the training runner.

    Attributes:
        train: batched training data for `keras.Model.fit`, reshuffled each epoch.
        val: batched validation data for `fit`, or None (the GAN has no validation loss).
        num_train: number of training examples.
        num_val: number of validation examples.
        val_arrays: validation examples as NumPy arrays (model inputs already pre-processed)
            for metrics and pictures.
        description: one line saying where the data came from, printed at the start of a run.
        extra: loader-specific facts worth saving in the run folder (split car ids, ...).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    num_train: int
    num_val: int
    val_arrays: dict[str, np.ndarray]
    description: str
    extra: dict[str, Any] = field(default_factory=dict)
