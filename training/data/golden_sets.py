"""Writes the rollout gates' built-in golden sets, which ship in `serving/rollout/golden/`.

The rollout tool must not import training (nor need TensorFlow to draw data), so it reads these
files instead of drawing them. This module is how they were made, and `make golden-sets` makes
them again:

    python -m training.data.golden_sets serving/rollout/golden

One folder per model, in the layout `verify --golden DIR` also reads:
    unet/       car-01.jpg ... and masks/car-01.png ... (mask: 255 car, 0 background)
    localizer/  object-01.png ... and labels.csv (path,class,x_min,y_min,x_max,y_max: the
                training CSV loader's format, pixel-edge corners, x_max one past the last column)
    generator/  seeds.json ({"seeds": [...]}: 256 latent seeds for the `serve_seeds` signature)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import DEFAULT_CLASS_NAMES
from training.boxes import to_corners
from training.data.cars import car_seeds, render_car
from training.data.shapes import CSV_COLUMNS, synthetic_objects

# Seeds no training preset uses (they draw from 0, 1, 2...), so the golden cars and objects are
# unseen by every model trained on the built-in data.
CAR_SEED, OBJECT_SEED, LATENT_SEED = 90210, 31337, 2718
NUM_CARS, NUM_OBJECTS = 8, 12
# Enough seeds that two equally good generators rarely differ in the judge's mean by more than
# the default judge_confidence margin (measurements: docs/rollouts.md#gate-calibration).
NUM_SEEDS = 256
# Carvana's 3:2 photos at a modest size: the models resize them to their own input side.
CAR_HEIGHT, CAR_WIDTH = 96, 144
OBJECT_SIZE = 64


def write_golden_sets(folder: Path) -> list[Path]:
    """Writes the three models' golden sets under `folder`; returns the paths written."""
    folder = Path(folder)
    cars, objects = _write_cars(folder / "unet"), _write_objects(folder / "localizer")
    return [*cars, *objects, _write_seeds(folder / "generator")]


def _write_cars(folder: Path) -> list[Path]:
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    written = []
    for i, seed in enumerate(car_seeds(NUM_CARS, seed=CAR_SEED)):
        # One view per car, a different one each time, so the set spans poses and lighting.
        image, mask = render_car(seed, view=i, height=CAR_HEIGHT, width=CAR_WIDTH)
        name = f"car-{i + 1:02d}"
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=90)
        Image.fromarray(mask * 255).save(folder / "masks" / f"{name}.png")
        written += [folder / f"{name}.jpg", folder / "masks" / f"{name}.png"]
    return written


def _write_objects(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    images, class_ids, boxes = synthetic_objects(
        NUM_OBJECTS, image_size=OBJECT_SIZE, seed=OBJECT_SEED, progress=False
    )
    # The boxes are the shapes' exact pixel extents, so their corners are whole numbers.
    corners = np.rint(to_corners(boxes, OBJECT_SIZE, OBJECT_SIZE)).astype(int)
    rows, written = [], []
    for i, (image, class_id, box) in enumerate(zip(images, class_ids, corners, strict=True)):
        name = f"object-{i + 1:02d}.png"
        Image.fromarray(image).save(folder / name)
        rows.append([name, DEFAULT_CLASS_NAMES[class_id], *(int(v) for v in box)])
        written.append(folder / name)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    return [*written, folder / "labels.csv"]


def _write_seeds(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(LATENT_SEED).generate_state(NUM_SEEDS, np.uint32)
    path = folder / "seeds.json"
    path.write_text(json.dumps({"seeds": [int(s) for s in seeds]}, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "serving/rollout/golden")
    for path in write_golden_sets(folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
