"""Synthetic Carvana-like car photos with exact masks, deterministic by seed (NumPy + Pillow only).

Example:
    >>> from training.data.cars import render_car
    >>> image, mask = render_car(car_seed=7, view=0, height=64, width=96)
    >>> image.shape, mask.shape, int(mask.max())
    ((64, 96, 3), (64, 96), 1)
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.errors import DataError
from training.progress import progress as progress_bar

BACKGROUNDS = ("studio", "plain")
# The plain backdrop is one flat light grey, and plain-mode cars are kept at or below this
# luminance, so that a single global threshold separates car from backdrop: the easy case.
PLAIN_GREY = 220.0
PLAIN_MAX_LUMA = 110.0

_LUMA = np.array([0.299, 0.587, 0.114])


def render_car(
    car_seed: int, view: int, height: int, width: int, background: str = "studio"
) -> tuple[np.ndarray, np.ndarray]:
    """Renders one photo of a synthetic car and its exact mask.

    The car's identity (colour, proportions) depends only on `car_seed`; the view (mirroring,
    position, scale, squash and perspective-like stretch, lighting, backdrop) on `view` too.

    Args:
        car_seed: identity of the car; any non-negative integer.
        view: index of the photo of that car (Carvana has 16 per car).
        height: image height in pixels.
        width: image width in pixels (Carvana's photos are 3:2, 1918x1280).
        background: `studio` (gradient wall and floor, colour texture, floor shadow, noise) or
            `plain` (one flat light grey, no shadow, no noise).

    Returns:
        A uint8 RGB image `[height, width, 3]` and a uint8 mask `[height, width]` in {0, 1}: the
        union of body, cabin and wheels. The floor shadow is never part of the mask.

    Raises:
        ValueError: on an unknown background or an image smaller than 8x8 pixels.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background={background!r} is not valid; choose one of: studio, plain")
    if height < 8 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small; use at least 8x8 pixels")
    car = _car_identity(np.random.default_rng([car_seed, 0]))
    rng = np.random.default_rng([car_seed, view, 1])
    to_px, geom = _view_transform(rng, car, height, width)

    if background == "studio":
        image = _studio_backdrop(rng, height, width, geom)
    else:
        image = np.full((height, width, 3), PLAIN_GREY)
        car["body_rgb"] = _cap_luma(car["body_rgb"], PLAIN_MAX_LUMA)

    parts = {
        name: _fill([to_px(p) for p in polys], height, width)
        for name, polys in _car_parts(car).items()
    }
    mask = parts["body"] | parts["cabin"] | parts["tyres"]

    # Sky-lit paint: brighter on top, darker at the sills, plus a slope along the car.
    rows = (np.arange(height) - geom["top_px"]) / max(geom["ground_px"] - geom["top_px"], 1.0)
    rel = np.broadcast_to(np.clip(rows, 0.0, 1.0)[:, None, None], (height, width, 1))
    slope = 1.0 + geom["light_slope"] * np.linspace(-1.0, 1.0, width)[:, None]
    shell = parts["body"] | parts["cabin"]
    image[shell] = (car["body_rgb"] * geom["light"] * (1.18 - 0.45 * rel) * slope)[shell]
    image[parts["arches"] & parts["body"]] *= 0.55
    image[parts["windows"]] = (car["glass_rgb"] * (0.7 + 0.6 * rel))[parts["windows"]]
    image[parts["lights"] & mask] = car["light_rgb"]
    image[parts["tyres"]] = car["tyre_rgb"]
    image[parts["hubs"]] = car["hub_rgb"] * geom["light"]

    if background == "studio":
        image += rng.normal(0.0, rng.uniform(2.0, 5.0), image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def car_seeds(num_cars: int, seed: int) -> list[int]:
    """Per-car seeds derived from `seed`; the first k are the same whatever `num_cars` is."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(num_cars, np.uint64)]


def synthetic_cars(
    num_cars: int,
    views_per_car: int,
    height: int,
    width: int,
    seed: int,
    background: str = "studio",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Renders `views_per_car` photos of each of `num_cars` cars.

    Args:
        num_cars: number of distinct cars.
        views_per_car: photos per car.
        height: image height in pixels.
        width: image width in pixels.
        seed: seed from which every car is derived.
        background: `studio` or `plain` (see `render_car`).
        progress: show a progress bar on stderr when there are more than 200 images.

    Returns:
        Images `[N, H, W, 3]` uint8, masks `[N, H, W]` uint8 in {0, 1}, and one car id per image
        (`c0000`, `c0001`, ...), car by car, `N = num_cars * views_per_car`.
    """
    count = num_cars * views_per_car
    images = np.empty((count, height, width, 3), np.uint8)
    masks = np.empty((count, height, width), np.uint8)
    car_ids: list[str] = []
    jobs = [
        (c, s, v) for c, s in enumerate(car_seeds(num_cars, seed)) for v in range(views_per_car)
    ]
    for i, (c, s, v) in enumerate(progress_bar(jobs, count, "rendering cars", progress)):
        images[i], masks[i] = render_car(s, v, height, width, background)
        car_ids.append(f"c{c:04d}")
    return images, masks, car_ids


def write_carvana_layout(
    root: Path,
    num_cars: int,
    views_per_car: int,
    height: int,
    width: int,
    seed: int,
    background: str = "studio",
) -> Path:
    """Writes synthetic cars in Kaggle's Carvana layout, for exercising the real-data loader.

    Files are `root/train/<car_id>_<NN>.jpg` and `root/train_masks/<car_id>_<NN>_mask.gif`
    (foreground 255, background 0), with 12-hex-digit car ids as in Kaggle and NN = 01, 02, ...

    Args:
        root: folder to write into; created if missing.
        num_cars: number of distinct cars.
        views_per_car: photos per car (at most 99, since NN has two digits).
        height: image height in pixels (Carvana: 1280).
        width: image width in pixels (Carvana: 1918).
        seed: seed from which every car is derived; car k looks as in `synthetic_cars`.
        background: `studio` or `plain` (see `render_car`).

    Returns:
        `root`.

    Raises:
        DataError: when `views_per_car` does not fit in two digits.
    """
    if not 1 <= views_per_car <= 99:
        raise DataError(f"views_per_car={views_per_car} must be 1..99 (view numbers have 2 digits)")
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(parents=True, exist_ok=True)
    seeds = car_seeds(num_cars, seed)
    jobs = [(s, v) for s in seeds for v in range(views_per_car)]
    for s, v in progress_bar(jobs, len(jobs), "writing cars"):
        image, mask = render_car(s, v, height, width, background)
        name = f"{s:016x}"[:12] + f"_{v + 1:02d}"
        Image.fromarray(image).save(root / "train" / f"{name}.jpg", quality=95)
        Image.fromarray(mask * 255).save(root / "train_masks" / f"{name}_mask.gif")
    return root


def _car_identity(rng: np.random.Generator) -> dict:
    """Colour and proportions, in car units: length 1 from rear (x=0) to front, y up from ground."""
    kind = rng.choice(["dark", "light", "colour"], p=[0.3, 0.3, 0.4])
    tint = rng.uniform(-8.0, 8.0, 3)
    if kind == "dark":
        body = rng.uniform(25.0, 75.0) + tint
    elif kind == "light":
        body = rng.uniform(185.0, 240.0) + tint
    else:
        hsv = (rng.uniform(), rng.uniform(0.45, 0.9), rng.uniform(0.4, 0.9))
        body = 255.0 * np.array(colorsys.hsv_to_rgb(*hsv))
    wheel_r = rng.uniform(0.08, 0.105)
    return {
        "body_rgb": np.clip(body, 0.0, 255.0),
        "glass_rgb": np.array([30.0, 38.0, 52.0]) + rng.uniform(0.0, 25.0),
        "tyre_rgb": np.full(3, rng.uniform(18.0, 35.0)),
        "hub_rgb": np.full(3, rng.uniform(120.0, 190.0)),
        "light_rgb": np.array([235.0, 225.0, 190.0]),
        "wheel_r": wheel_r,
        "wheels_x": (rng.uniform(0.15, 0.22), rng.uniform(0.76, 0.83)),
        "sill": wheel_r * rng.uniform(0.55, 0.8),
        "belt": rng.uniform(0.25, 0.31),
        "hood_drop": rng.uniform(0.0, 0.06),
        "roof": rng.uniform(0.12, 0.18),
        "cabin_x": (rng.uniform(0.12, 0.3), rng.uniform(0.62, 0.75)),
        "rake": (rng.uniform(0.04, 0.12), rng.uniform(0.1, 0.2)),
    }


def _car_parts(car: dict) -> dict[str, list[np.ndarray]]:
    """Polygons `[K, 2]` in car units, a list per part; circles are 48-gons."""
    sill, belt, drop = car["sill"], car["belt"], car["hood_drop"]
    xs = [0.0, 0.0, 0.05, 0.5, 0.95, 1.0, 1.0, 0.97, 0.03]
    ys = [sill + 0.02, belt - 0.01, belt, belt, belt - drop, belt - drop - 0.03, sill + 0.03]
    body = _smooth(np.stack([xs, [*ys, sill, sill]], axis=1), 3)
    (c0, c1), (r0, r1), roof = car["cabin_x"], car["rake"], car["roof"]
    base, top = belt - 0.015, belt + roof
    cabin = _smooth(np.array([[c0, base], [c0 + r0, top], [c1 - r1, top], [c1, base]]), 2, 4)
    # Windows: the cabin inset by a frame and split by a pillar, so they sit inside the cabin.
    y0, y1, pillar = belt + 0.01, top - 0.02, (c0 + r0 + c1 - r1) / 2.0
    rear = [c0 + 0.03 + r0 * (y - base) / (top - base) for y in (y0, y1)]
    front = [c1 - 0.03 - r1 * (y - base) / (top - base) for y in (y0, y1)]
    windows = [
        np.array([[rear[0], y0], [rear[1], y1], [pillar - 0.01, y1], [pillar - 0.01, y0]]),
        np.array([[pillar + 0.01, y0], [pillar + 0.01, y1], [front[1], y1], [front[0], y0]]),
    ]
    r = car["wheel_r"]
    wheels = [(x, r) for x in car["wheels_x"]]
    lamp_y = belt - drop - 0.05
    lamp = np.array([[0.965, lamp_y], [1.0, lamp_y], [1.0, lamp_y + 0.03], [0.96, lamp_y + 0.03]])
    return {
        "body": [body],
        "cabin": [cabin],
        "windows": windows,
        "arches": [_circle(x, y, r * 1.15) for x, y in wheels],
        "tyres": [_circle(x, y, r) for x, y in wheels],
        "hubs": [_circle(x, y, r * 0.55) for x, y in wheels],
        "lights": [lamp],
    }


def _view_transform(rng: np.random.Generator, car: dict, height: int, width: int):
    """Draws one view and returns the car-units-to-pixels mapping and the view's geometry."""
    length = width * rng.uniform(0.6, 0.8)
    squash = rng.uniform(0.85, 1.15)
    perspective = rng.uniform(-0.2, 0.2)
    shear = rng.uniform(-0.08, 0.08)
    flip = bool(rng.integers(2))
    centre_x = width * (0.5 + rng.uniform(-0.06, 0.06))
    ground = height * rng.uniform(0.74, 0.86)

    def to_px(points: np.ndarray) -> np.ndarray:
        x, y = points[:, 0], points[:, 1]
        # One end nearer the camera looks taller: a cheap stand-in for a perspective view.
        y = y * squash * (1.0 + perspective * (x - 0.5))
        x = x + shear * y
        if flip:
            x = 1.0 - x
        return np.stack([centre_x + (x - 0.5) * length, ground - y * length], axis=1)

    car_top = car["belt"] + car["roof"]
    geom = {
        "length_px": length,
        "centre_px": centre_x,
        "ground_px": ground,
        "top_px": ground - car_top * squash * (1.0 + abs(perspective) / 2) * length,
        "light": rng.uniform(0.85, 1.15),
        "light_slope": rng.uniform(-0.15, 0.15),
    }
    return to_px, geom


def _studio_backdrop(rng: np.random.Generator, height: int, width: int, geom: dict) -> np.ndarray:
    """Wall and floor gradients, low-frequency colour texture, a spotlight and a floor shadow."""
    rows = np.arange(height, dtype=float)[:, None, None]
    horizon = geom["ground_px"] - rng.uniform(0.25, 0.6) * (geom["ground_px"] - geom["top_px"])
    wall_top, wall_low = rng.uniform(150.0, 235.0, (2, 1)) + rng.uniform(-10.0, 10.0, (2, 3))
    floor_far, floor_near = rng.uniform(110.0, 200.0, (2, 1)) + rng.uniform(-10.0, 10.0, (2, 3))
    wall = wall_top + (wall_low - wall_top) * rows / max(horizon, 1.0)
    floor = floor_far + (floor_near - floor_far) * (rows - horizon) / max(height - horizon, 1.0)
    # A soft seam where the wall curves into the floor, as in a photo studio's cyclorama.
    blend = np.clip((rows - horizon) / max(0.02 * height, 1.0) + 0.5, 0.0, 1.0)
    image = wall * (1.0 - blend) + floor * blend
    image = np.broadcast_to(image, (height, width, 3)).copy()

    # Colour blobs a few per image side: they shift brightness locally, which defeats any one
    # global threshold without looking like car edges.
    amp = rng.uniform(15.0, 35.0)
    grid_h, grid_w = int(rng.integers(3, 6)), int(rng.integers(4, 8))
    shared = rng.normal(0.0, 1.0, (grid_h, grid_w))
    for ch in range(3):
        coarse = (0.7 * shared + 0.5 * rng.normal(0.0, 1.0, (grid_h, grid_w))).astype(np.float32)
        image[..., ch] += amp * _upsample(coarse, height, width)
    cy, cx = rng.uniform(0.1, 0.6) * height, rng.uniform(0.0, 1.0) * width
    spread = rng.uniform(0.3, 0.6) * width
    ys, xs = np.mgrid[0:height, 0:width]
    spot = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2.0 * spread**2))
    image *= (0.85 + rng.uniform(0.2, 0.35) * spot)[..., None]

    shadow = Image.new("L", (width, height), 0)
    half_w, half_h = 0.56 * geom["length_px"], 0.07 * geom["length_px"]
    cx, gy = geom["centre_px"], geom["ground_px"]
    ImageDraw.Draw(shadow).ellipse((cx - half_w, gy - half_h, cx + half_w, gy + half_h), fill=255)
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(0.035 * geom["length_px"], 0.5)))
    darkness = rng.uniform(0.45, 0.65) * np.asarray(shadow, float) / 255.0
    return image * (1.0 - darkness)[..., None]


def _fill(polys: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Boolean raster of the union of the given pixel-space polygons."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polys:
        draw.polygon([tuple(p) for p in poly.tolist()], fill=1)
    return np.asarray(canvas, bool)


def _smooth(poly: np.ndarray, rounds: int, pieces: int = 1) -> np.ndarray:
    """Rounds a closed polygon's corners by Chaikin corner cutting; splitting each edge into
    `pieces` first keeps the rounding near the corners."""
    steps = np.arange(pieces)[None, :, None] / pieces
    poly = (poly[:, None] + steps * (np.roll(poly, -1, axis=0) - poly)[:, None]).reshape(-1, 2)
    for _ in range(rounds):
        nxt = np.roll(poly, -1, axis=0)
        poly = np.stack([0.75 * poly + 0.25 * nxt, 0.25 * poly + 0.75 * nxt], 1).reshape(-1, 2)
    return poly


def _circle(x: float, y: float, r: float, sides: int = 48) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, sides, endpoint=False)
    return np.stack([x + r * np.cos(angles), y + r * np.sin(angles)], axis=1)


def _upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    resized = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, float)


def _cap_luma(rgb: np.ndarray, max_luma: float) -> np.ndarray:
    luma = float(rgb @ _LUMA)
    return rgb * (max_luma / luma) if luma > max_luma else rgb
