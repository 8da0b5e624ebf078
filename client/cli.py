"""The client's command line: segment, localize, generate, status and metadata.

Usage:
    python -m client segment car.jpg coins.png --out out/ --json
    python -m client localize shapes/*.png --jobs 4 --server 127.0.0.1:8500
    python -m client generate --n 16 --seed 0 --out grid.png
    python -m client status unet --rest http://127.0.0.1:8501
    python -m client status unet --server serving:8500 --ca ca.pem --cert me.pem --key me.key
    python -m client segment car.jpg --server dns:///tfserving-headless.tfserving.svc.cluster.local:8500
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from client.api import FALLBACK_POLICIES, ServingClient
from client.errors import ClientError
from client.fallbacks import METHODS
from client.images.pictures import color_instances, draw_box, overlay_mask, sample_grid
from client.images.preprocess import load_rgb
from client.transports.base import MAX_RESPONSE_BYTES
from client.transports.tls import add_tls_arguments, tls_from_args
from common.cli import Parser, fail, parse_args

# Exit statuses: some images failed; usage (argparse's own); the server failed, no fallback.
EXIT_SOME_FAILED, EXIT_USAGE, EXIT_SERVER = 1, 2, 3


class UnreadableImageError(Exception):
    """An input image that cannot be opened or decoded; reported per image."""


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, 1 some images failed, 2, 3)."""
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        client = _make_client(args)
    except (ClientError, ValueError) as error:  # a TLS file or a URL that cannot be used
        return fail(parser.prog, getattr(error, "message", error))
    try:
        with client:
            return args.run(client, args)
    except ClientError as error:
        print(f"client: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_SERVER
    except OSError as error:  # an unwritable --out, mostly
        print(f"client: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        print("client: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The `python -m client` argument parser, one sub-command per call."""
    parser = Parser(
        prog="python -m client", description="Call the served unet, localizer and generator."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    server = argparse.ArgumentParser(add_help=False)
    where = server.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        default="127.0.0.1:8500",
        metavar="TARGET",
        help="gRPC server: HOST:PORT, or dns:///NAME:PORT to balance over every address of "
        "NAME (default %(default)s)",
    )
    where.add_argument("--rest", metavar="URL", help="use REST at URL instead of gRPC")
    server.add_argument(
        "--timeout", type=_positive(float), metavar="S", help="seconds per call, all included"
    )
    server.add_argument(
        "--max-response-mib",
        type=_positive(float),
        default=MAX_RESPONSE_BYTES / 2**20,
        metavar="MIB",
        help="refuse answers larger than this (default %(default)g MiB)",
    )
    add_tls_arguments(server)

    version = argparse.ArgumentParser(add_help=False)
    version.add_argument("--model", help="served model name (default: the command's model)")
    pick = version.add_mutually_exclusive_group()
    pick.add_argument("--model-version", type=_positive(int), metavar="N")
    pick.add_argument("--version-label", metavar="LABEL")

    images = argparse.ArgumentParser(add_help=False)
    add = images.add_argument
    add("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    add("--fallback", choices=FALLBACK_POLICIES, default="auto", help="classical fallback use")
    add("--method", choices=METHODS, default="otsu", help="classical method of the fallback")
    add("--cleanup", action="store_true", help="keep the largest region, fill its holes")
    add(
        "--out",
        type=Path,
        metavar="DIR",
        help="write pictures into DIR as STEM.KIND.png; inputs sharing a stem (a/x.png, "
        "b/x.png) get STEM-2, STEM-3, ... in input order, never another input's stem",
    )
    add("--json", action="store_true", help="print one JSON object per image")
    add("--jobs", type=_positive(int), default=1, metavar="N", help="images in flight at once")

    parents = [images, server, version]
    sub = commands.add_parser("segment", parents=parents, help="foreground masks (unet)")
    sub.set_defaults(run=run_segment, default_model="unet")
    sub = commands.add_parser("localize", parents=parents, help="class and box (localizer)")
    sub.set_defaults(run=run_localize, default_model="localizer")

    sub = commands.add_parser("generate", parents=[server, version], help="a grid of samples")
    sub.add_argument("--n", type=_positive(int), required=True, help="number of images")
    sub.add_argument("--seed", type=int, help="seeds S, S+1, ... (default: random latents)")
    sub.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="grid picture")
    sub.add_argument("--cols", type=_positive(int), help="grid columns (default: square)")
    sub.add_argument("--scale", type=_positive(int), default=4, help="enlargement (default 4)")
    sub.add_argument("--json", action="store_true", help="print a JSON object")
    sub.set_defaults(run=run_generate, default_model="generator")

    for name in ("status", "metadata"):
        sub = commands.add_parser(name, parents=[server], help=f"model {name} as JSON")
        sub.add_argument("model", metavar="MODEL")
        sub.set_defaults(run=run_model_info)
    return parser


def run_segment(client: ServingClient, args: argparse.Namespace) -> int:
    """`segment`: a mask (and instances, with watershed) per image; see the module docstring."""

    def one(path: str, stem: str, image: np.ndarray) -> dict[str, Any]:
        result = client.segment([image], **_call_options(args))[0]
        labels = result.instances
        count = None if labels is None else int(np.unique(labels[labels > 0]).size)
        record = {
            "image": path,
            "source": result.source,
            "foreground_fraction": round(result.foreground_fraction, 6),
            "instances": count,
            "height": int(result.mask.shape[0]),
            "width": int(result.mask.shape[1]),
            "mask_png": None,
            "overlay_png": None,
            "instances_png": None,
            "instances_overlay_png": None,
        }
        if args.out is not None:
            # The mask itself (one channel, 0/255, the image's size), then a picture of it.
            mask = Image.fromarray(np.where(result.mask, 255, 0).astype(np.uint8))
            record["mask_png"] = _save(mask, args.out, stem, "mask")
            overlay = overlay_mask(image, result.mask)
            record["overlay_png"] = _save(overlay, args.out, stem, "overlay")
            if labels is not None:
                # Instance labels as 16-bit gray (0 background, 1..K), then their colouring.
                ids = Image.fromarray(labels.astype(np.uint16))
                record["instances_png"] = _save(ids, args.out, stem, "instances")
                colours = color_instances(image, labels)
                record["instances_overlay_png"] = _save(
                    colours, args.out, stem, "instances-overlay"
                )
        return record

    return _run_images(args, one, _segment_line)


def run_localize(client: ServingClient, args: argparse.Namespace) -> int:
    """`localize`: the class and box of the object in each image."""

    def one(path: str, stem: str, image: np.ndarray) -> dict[str, Any]:
        result = client.localize([image], **_call_options(args))[0]
        score = None if math.isnan(result.score) else round(result.score, 6)
        record = {
            "image": path,
            "source": result.source,
            "class": result.class_name,
            "score": score,
            "box": [int(v) for v in result.box],
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "boxes_png": None,
        }
        if args.out is not None:
            label = result.class_name if score is None else f"{result.class_name} {score:.2f}"
            record["boxes_png"] = _save(draw_box(image, result.box, label), args.out, stem, "boxes")
        return record

    return _run_images(args, one, _localize_line)


def run_generate(client: ServingClient, args: argparse.Namespace) -> int:
    """`generate`: N samples tiled into one grid picture."""
    options = _call_options(args)
    if args.seed is None:
        generation = client.generate(args.n, **options)
    else:
        generation = client.generate(seeds=list(range(args.seed, args.seed + args.n)), **options)
    grid = sample_grid(generation.images, cols=args.cols, scale=args.scale)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, format="PNG")
    n, height, width = generation.images.shape[:3]
    record = {"out": str(args.out), "source": generation.source, "count": int(n)}
    record.update(seeds=generation.seeds, height=int(height), width=int(width))
    if args.json:
        print(json.dumps(record))
    else:
        seeds = "random latents" if args.seed is None else f"seeds {args.seed}..{args.seed + n - 1}"
        print(f"{args.out}: {n} images {height}x{width}, {seeds}, {generation.source}")
    return 0


def run_model_info(client: ServingClient, args: argparse.Namespace) -> int:
    """`status MODEL` (every version and its state) or `metadata MODEL` (signatures), as JSON."""
    answer = client.status(args.model) if args.command == "status" else client.metadata(args.model)
    print(json.dumps(answer, indent=2, default=str))
    return 0


def _run_images(
    args: argparse.Namespace,
    one: Callable[[str, str, np.ndarray], dict[str, Any]],
    line: Callable[[dict[str, Any]], str],
) -> int:
    """Runs `one` on every image, `args.jobs` at a time, isolating per-image failures.

    An unreadable image gets one stderr line and the rest go on; a server error (one no fallback
    covers) stops the run, since every other image would fail the same way.
    """
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    stems = unique_stems(args.images)
    failed = 0
    server_error: ClientError | None = None
    bar = tqdm(
        total=len(args.images),
        desc=args.command,
        unit="image",
        file=sys.stderr,
        disable=None if len(args.images) > 1 else True,
    )
    with bar, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(lambda p, s: one(p, s, read_image(p)), path, stem): path
            for path, stem in zip(args.images, stems, strict=True)
        }
        for future in as_completed(futures):
            path = futures[future]
            try:
                record = future.result()
            except UnreadableImageError as error:
                failed += 1
                tqdm.write(f"{path}: cannot read image: {error}", file=sys.stderr)
            except ClientError as error:
                if error.code == "BAD_INPUT":
                    failed += 1
                    tqdm.write(f"{path}: cannot read image: {error.message}", file=sys.stderr)
                    continue
                server_error = error
                pool.shutdown(wait=False, cancel_futures=True)
                break
            except OSError as error:
                failed += 1
                tqdm.write(f"{path}: cannot write picture: {error}", file=sys.stderr)
            else:
                tqdm.write(json.dumps(record) if args.json else line(record), file=sys.stdout)
            bar.update()
    if server_error is not None:
        raise server_error
    return EXIT_SOME_FAILED if failed else 0


def read_image(path: str) -> np.ndarray:
    """The image at `path` as RGB uint8, upright per its EXIF orientation.

    Raises:
        UnreadableImageError: with a short reason (missing, a folder, not an image, ...).
    """
    file = Path(path)
    if not file.exists():
        raise UnreadableImageError("no such file")
    if file.is_dir():
        raise UnreadableImageError("is a folder, not an image file")
    try:
        return load_rgb(file)
    except UnidentifiedImageError:
        raise UnreadableImageError("not an image format Pillow can decode (corrupt?)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(_one_line(str(error)) or type(error).__name__) from None


def unique_stems(paths: list[str]) -> list[str]:
    """Picture name stems per input, one per input and never shared.

    Each input keeps its file's stem, unless an earlier input has the same one (a/x.png, then
    b/x.png); it then gets the first free `-2`, `-3`, ... suffix. A suffix never takes another
    input's own stem (b/x.png becomes x-3 when x-2.png is an input too), and stems that differ
    only in case count as equal, since they name one file on macOS and Windows.
    """
    plain = [Path(path).stem or "image" for path in paths]
    taken = {stem.casefold() for stem in plain}
    given: set[str] = set()
    stems = []
    for stem in plain:
        name, n = stem, 1
        while name.casefold() in given or (n > 1 and name.casefold() in taken):
            n += 1
            name = f"{stem}-{n}"
        given.add(name.casefold())
        stems.append(name)
    return stems


def _save(picture: Image.Image, out: Path, stem: str, kind: str) -> str:
    path = out / f"{stem}.{kind}.png"
    picture.save(path, format="PNG")
    return str(path)


def _segment_line(r: dict[str, Any]) -> str:
    parts = [f"{r['foreground_fraction']:.1%} foreground", f"{r['width']}x{r['height']}"]
    if r["instances"] is not None:
        parts.insert(0, f"{r['instances']} instances")
    pictures = [
        p
        for p in (r["mask_png"], r["overlay_png"], r["instances_png"], r["instances_overlay_png"])
        if p
    ]
    written = f" -> {', '.join(pictures)}" if pictures else ""
    return f"{r['image']}: {', '.join(parts)}, {r['source']}{written}"


def _localize_line(r: dict[str, Any]) -> str:
    score = "" if r["score"] is None else f" {r['score']:.2f}"
    box = "({}, {})-({}, {})".format(*r["box"])
    written = f" -> {r['boxes_png']}" if r["boxes_png"] else ""
    return f"{r['image']}: {r['class']}{score} at {box}, {r['source']}{written}"


def _make_client(args: argparse.Namespace) -> ServingClient:
    options: dict[str, Any] = {"max_response_bytes": max(int(args.max_response_mib * 2**20), 1)}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    for name in ("fallback", "method", "cleanup"):
        if hasattr(args, name):
            options[name] = getattr(args, name)
    tls = tls_from_args(args)
    if args.rest:
        url = args.rest if "://" in args.rest else f"{'https' if tls else 'http'}://{args.rest}"
        return ServingClient.rest(url, tls=tls, **options)
    return ServingClient.grpc(args.server, tls=tls, **options)


def _call_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model or args.default_model,
        "model_version": args.model_version,
        "version_label": args.version_label,
    }


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number greater than 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def _one_line(text: str) -> str:
    return " ".join(text.split())
