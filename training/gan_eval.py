"""GAN sample quality without Inception weights: a small in-project digit classifier as the judge.

FID and the Inception score need ImageNet weights that cannot be downloaded here, so we follow
TF-GAN's `frechet_classifier_distance` and `mnist_score`: the same formulas over the penultimate
features and class probabilities of a CNN trained on real labelled digits. Fréchet distances are
biased at small sample sizes, so compare them only at equal N, next to a real-vs-real floor.

Example:
    >>> clf = train_digit_classifier(x_train, y_train, epochs=2, seed=0)
    >>> feats, probs = classifier_features(clf, generated_uint8)
    >>> frechet_distance(feats, real_feats), classifier_score(probs)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf
from keras import layers
from PIL import Image
from scipy.special import xlogy

NUM_CLASSES = 10
FEATURES_LAYER = "features"


def to_classifier_input(images: np.ndarray) -> np.ndarray:
    """Turns uint8 images `[N,H,W]` or `[N,H,W,C]` into the classifier's grey `[N,H,W,1]` floats.

    Colour images are averaged to grey; the classifier itself rescales 0..255 to 0..1.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.shape[-1] != 1:
        images = images.mean(axis=-1, keepdims=True)
    return images.astype(np.float32)


def build_digit_classifier(image_size: int, seed: int = 0) -> keras.Model:
    """Two conv blocks, a 128-unit `features` layer and a 10-way softmax `class_probs`."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for i, filters in enumerate((32, 64), start=1):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=init,
            name=f"conv{i}",
        )(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", kernel_initializer=init, name=FEATURES_LAYER)(x)
    x = layers.Dropout(0.3, seed=seed, name="dropout")(x)
    probs = layers.Dense(
        NUM_CLASSES, activation="softmax", kernel_initializer=init, name="class_probs"
    )(x)
    return keras.Model(inputs, probs, name="digit_classifier")


def train_digit_classifier(
    x: np.ndarray, y: np.ndarray, epochs: int = 2, seed: int = 0, batch_size: int = 128
) -> keras.Model:
    """Trains the judge CNN on real labelled digits.

    Args:
        x: uint8 images `[N,H,W]` or `[N,H,W,C]` (square).
        y: integer labels 0..9, `[N]`.
        epochs: passes over `x`.
        seed: seeds the initial weights, dropout and shuffling.
        batch_size: images per step.

    Returns:
        The trained classifier (output `class_probs`, penultimate layer `features`).
    """
    x = to_classifier_input(x)
    y = np.asarray(y, np.int64)
    model = build_digit_classifier(x.shape[1], seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    model.fit(ds, epochs=epochs, shuffle=False, verbose=0)  # ds shuffles itself
    return model


def classifier_features(
    classifier: keras.Model, images: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Runs uint8 images through the classifier.

    Returns:
        `(features, probs)`: float64 `[N,128]` penultimate activations and `[N,10]` class
        probabilities.
    """
    both = keras.Model(
        classifier.input,
        [classifier.get_layer(FEATURES_LAYER).output, classifier.output],
        name="digit_classifier_features",
    )
    x = to_classifier_input(images)
    # Plain calls rather than `predict`: a new wrapper model per call would retrace predict's
    # tf.function every time, and these sets are small.
    outputs = [both(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
    feats = np.concatenate([np.asarray(f) for f, _ in outputs]).astype(np.float64)
    probs = np.concatenate([np.asarray(p) for _, p in outputs]).astype(np.float64)
    return feats, probs


def classifier_accuracy(classifier: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose most probable class is the label."""
    _, probs = classifier_features(classifier, x)
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(y)))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1] to uint8 as the contract says: round((x + 1) * 127.5)."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def sample_images(
    generator: keras.Model, count: int, seed: int = 0, batch_size: int = 256
) -> np.ndarray:
    """`count` uint8 images from latent vectors drawn from N(0, I) with NumPy's `seed`."""
    latent_dim = generator.input_shape[-1]
    z = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
    # Plain calls rather than `predict`, which would trace a new tf.function per model.
    starts = range(0, count, batch_size)
    batches = [generator(z[i : i + batch_size], training=False) for i in starts]
    return to_uint8(np.concatenate([np.asarray(b) for b in batches]))


def image_grid(images: np.ndarray, cols: int, gap: int = 2) -> np.ndarray:
    """uint8 images `[N,S,S,C]` on an RGB grid with `cols` columns and grey gaps."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, s = len(images), images.shape[1]
    rows = -(-n // cols)
    grid = np.full((rows * (s + gap) - gap, cols * (s + gap) - gap, 3), 128, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = img
    return grid


def save_samples_picture(fake: np.ndarray, real: np.ndarray, path: Path) -> None:
    """Writes a PNG of generated uint8 images in 8 columns beside real ones in 2 columns."""
    left, right = image_grid(fake, cols=8), image_grid(real, cols=2)
    gap = 8
    canvas = np.full(
        (max(left.shape[0], right.shape[0]), left.shape[1] + gap + right.shape[1], 3),
        128,
        np.uint8,
    )
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], -right.shape[1] :] = right
    # Nearest-neighbour upscaling keeps the pixels crisp; 28 px digits are tiny on a screen.
    scale = max(1, 900 // canvas.shape[1])
    Image.fromarray(canvas).resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST
    ).save(path)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `[N,D]` (or `[N]`).

    `|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`, with sample covariances (ddof 1).
    """
    a = _as_2d(feats_a)
    b = _as_2d(feats_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if caught or not np.all(np.isfinite(covmean)):
        # A singular product (fewer samples than features, dead features) can defeat sqrtm;
        # a tiny ridge on both covariances, as pytorch-fid does, makes it well defined.
        ridge = np.eye(cov_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    # Rounding makes sqrtm return tiny imaginary parts for what is in theory a real matrix.
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def _as_2d(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, np.float64)
    return feats[:, np.newaxis] if feats.ndim == 1 else feats


def classifier_score(probs: np.ndarray) -> float:
    """The Inception-score formula with our classifier: `exp(mean_x KL(p(y|x) || p(y)))`.

    1 when every prediction is the same; at most the number of classes (10 for digits), reached
    by confident predictions spread evenly over the classes.
    """
    probs = np.asarray(probs, np.float64)
    marginal = probs.mean(axis=0, keepdims=True)
    # xlogy makes 0 * log 0 = 0, so exact one-hot predictions are fine.
    kl = np.sum(xlogy(probs, probs) - xlogy(probs, marginal), axis=1)
    return float(np.exp(np.mean(kl)))


def recognizability(probs: np.ndarray, threshold: float = 0.9) -> float:
    """Share of samples that the classifier assigns to one class with probability > threshold."""
    return float(np.mean(np.max(np.asarray(probs), axis=1) > threshold))


def class_entropy(probs: np.ndarray) -> float:
    """Entropy (nats) of the predicted-class histogram; ln 10 = 2.30 is perfectly balanced."""
    probs = np.asarray(probs)
    counts = np.bincount(np.argmax(probs, axis=1), minlength=probs.shape[1])
    share = counts / counts.sum()
    # Adding 0.0 turns the -0.0 of a single class into 0.0.
    return float(-np.sum(xlogy(share, share))) + 0.0


def sample_metrics(
    feats: np.ndarray, probs: np.ndarray, reference_feats: np.ndarray, suffix: str = ""
) -> dict[str, float]:
    """cFID against the reference features plus the three probability metrics, keys + suffix."""
    return {
        f"cfid{suffix}": frechet_distance(feats, reference_feats),
        f"classifier_score{suffix}": classifier_score(probs),
        f"recognizability{suffix}": recognizability(probs),
        f"class_entropy{suffix}": class_entropy(probs),
    }
