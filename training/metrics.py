"""Segmentation losses and metrics: BCE, soft Dice, and hard Dice/IoU (NumPy and Keras).

Dice and IoU are per image and then averaged, as Carvana scored them. An empty prediction of an
empty mask scores 1.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def dice_score(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Hard Dice per image for boolean masks `[N, H, W]` (or one `[H, W]` mask)."""
    t, p = _flat_bool(truth), _flat_bool(pred)
    inter = np.sum(t & p, axis=1)
    total = np.sum(t, axis=1) + np.sum(p, axis=1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou_score(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Hard IoU (Jaccard) per image for boolean masks `[N, H, W]` (or one `[H, W]` mask)."""
    t, p = _flat_bool(truth), _flat_bool(pred)
    inter = np.sum(t & p, axis=1)
    union = np.sum(t | p, axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _flat_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim == 2:
        mask = mask[np.newaxis]
    return mask.reshape(mask.shape[0], -1)


def bce_loss(y_true, logits):
    """Sigmoid binary cross-entropy on logits, averaged over pixels."""
    return ops.mean(ops.binary_crossentropy(y_true, logits, from_logits=True), axis=(1, 2, 3))


def soft_dice_loss(y_true, logits, smooth: float = 1.0):
    """1 - soft Dice per image; `smooth` keeps empty masks stable."""
    probs = ops.sigmoid(logits)
    y_true = ops.cast(y_true, probs.dtype)
    inter = ops.sum(y_true * probs, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(probs, axis=(1, 2, 3))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def bce_dice_loss(y_true, logits):
    """BCE plus soft-Dice loss, the usual Carvana objective."""
    return bce_loss(y_true, logits) + soft_dice_loss(y_true, logits)


class _HardOverlap(keras.metrics.Mean):
    """Running mean of a per-image hard overlap score computed from logits at threshold 0.5."""

    def _scores(self, inter, t_sum, p_sum):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.cast(y_true > 0.5, "float32")
        pred = ops.cast(y_pred >= 0.0, "float32")  # sigmoid(logit) >= 0.5
        inter = ops.sum(truth * pred, axis=(1, 2, 3))
        t_sum = ops.sum(truth, axis=(1, 2, 3))
        p_sum = ops.sum(pred, axis=(1, 2, 3))
        return super().update_state(self._scores(inter, t_sum, p_sum), sample_weight)


class DiceMetric(_HardOverlap):
    """Hard Dice per image, averaged (Keras metric on logits)."""

    def _scores(self, inter, t_sum, p_sum):
        total = t_sum + p_sum
        return ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1.0), 1.0)


class IoUMetric(_HardOverlap):
    """Hard IoU per image, averaged (Keras metric on logits)."""

    def _scores(self, inter, t_sum, p_sum):
        union = t_sum + p_sum - inter
        return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)
