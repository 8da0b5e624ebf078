"""Writes the client demo's input pictures, which ship in `client/demo_inputs/`.

The client must not import training (or TensorFlow), so the demo reads these files instead of
drawing them. This module is how they were made, and `make demo-inputs` makes them again:

    python -m training.data.demo_inputs client/demo_inputs
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common.contract import DEFAULT_CLASS_NAMES
from common.quiet import import_tensorflow

# EXIF tag 0x0112: orientation 6 means "rotate 90 degrees clockwise to view".
EXIF_ORIENTATION, ROTATE_CW = 0x0112, 6


def write_demo_inputs(folder: Path) -> list[Path]:
    """Synthetic car photos (one a JPEG stored sideways with an EXIF orientation tag) and single
    objects with their true class in the file name; returns the paths written."""
    import_tensorflow()  # first, so its native start-up notices stay off the output
    from training.data.cars import car_seeds, render_car
    from training.data.shapes import synthetic_objects

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, seed in enumerate(car_seeds(4, seed=2024)):
        image, _ = render_car(seed, view=i, height=240, width=360)
        if i < 3:
            path = folder / f"car-{i + 1}.jpg"
            Image.fromarray(image).save(path, quality=90)
        else:
            # A camera held sideways stores the pixels rotated and says so in EXIF; the client
            # must show (and segment) it upright, 240x360, not as the stored 360x240.
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = ROTATE_CW
            path = folder / "car-exif-rotated.jpg"
            sideways = Image.fromarray(np.ascontiguousarray(np.rot90(image, k=1)))
            sideways.save(path, quality=90, exif=exif)
        written.append(path)
    images, class_ids, _ = synthetic_objects(4, image_size=128, seed=7, progress=False)
    for i, (image, c) in enumerate(zip(images, class_ids, strict=True)):
        path = folder / f"shape-{i + 1}-{DEFAULT_CLASS_NAMES[c]}.png"
        Image.fromarray(image).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "client/demo_inputs")
    for path in write_demo_inputs(folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
