"""Golden sets for the rollout gates: the built-in ones, a user's folder, a version's warmup.

A golden folder holds, depending on what the model takes (`client.canary.comparisons.COMPARISONS`):
    images:  image files at the top level; masks/<same stem>.<any image type> (non-zero is
             foreground) for a segmentation model; or labels.csv (path,class,x_min,y_min,x_max,
             y_max in pixel-edge corners, x_max one past the last column, paths relative to the
             folder: the training CSV loader's format), whose rows then list the images.
    seeds:   seeds.json, {"seeds": [1, 2, ...]} or a bare list: latent seeds of `serve_seeds`.
The built-in sets (serving/rollout/golden/<model>/) are written by
`python -m training.data.golden_sets` (`make golden-sets`).

A replay folder (`verify --replay DIR`) holds the server's request logs instead: TFRecord files
of `tensorflow.serving.PredictionLog` (`<filename_prefix>.NNNNNN.tfrecord`, from a model's
`logging_config`). The inputs of its newest logged Predict requests for the model become the
golden items. Real traffic carries no truth, so only the agreement and judge gates apply.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from client.canary.agreement import BoxLabel
from client.canary.comparisons import Comparison
from client.images.preprocess import load_rgb
from common import codec
from common.contract import Contract
from common.warmup_records import WarmupRecordError, read_records, warmup_path

BUILT_IN = Path(__file__).resolve().parent / "golden"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CSV_COLUMNS = ("path", "class", "x_min", "y_min", "x_max", "y_max")
# The most logged requests a replay takes (the newest): bounded time and memory however much
# traffic the folder holds, and more than the latency gates' 200 timed requests per version.
REPLAY_LIMIT = 256
LOG_SUFFIX = ".tfrecord"


class GoldenError(Exception):
    """A golden folder or file that cannot be used (a usage error: exit 2)."""


@dataclass(frozen=True)
class Item:
    """One golden input: an RGB uint8 image, an int seed, or a float latent vector."""

    name: str
    value: Any
    truth: Any = None
    warmup: bool = False  # taken from a version's warmup requests


@dataclass
class GoldenSet:
    """The items a verification sends to both versions, and where they came from."""

    source: str
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Logged PredictRequests of a replay, made into items once the served contract is known
    # (`resolve_replay`).
    requests: list = field(default_factory=list)

    def describe(self) -> str:
        """`built-in unet: 8 images, 8 with truth; warmup: 2 items`."""
        own = [item for item in self.items if not item.warmup]
        truths = sum(item.truth is not None for item in own)
        text = f"{self.source}: {len(own)} items, {truths} with truth"
        return "; ".join([text, *self.notes])


def built_in_folder(kind: str) -> Path:
    """The shipped golden folder of a model kind."""
    return BUILT_IN / kind


def load_folder(folder: str | Path, compare: Comparison, source: str | None = None) -> GoldenSet:
    """The golden items of `folder` for a model that takes `compare.inputs`.

    Raises:
        GoldenError: a missing folder, no items, or an unreadable image, mask, CSV or seeds file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GoldenError(f"golden folder {folder} does not exist or is not a folder")
    if compare.inputs == "seeds":
        items = _seed_items(folder)
    elif compare.truth == "labels" and (folder / "labels.csv").is_file():
        items = _labelled_items(folder / "labels.csv")
    else:
        items = _image_items(folder, with_masks=compare.truth == "masks")
    if not items:
        what = "seeds.json" if compare.inputs == "seeds" else "images"
        raise GoldenError(f"golden folder {folder} holds no {what}")
    return GoldenSet(source or str(folder), items)


def _read_image(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise GoldenError(f"golden image {path} cannot be read: {error}") from None


def _image_items(folder: Path, with_masks: bool) -> list[Item]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    masks = {}
    if with_masks and (folder / "masks").is_dir():
        masks = {
            p.stem: p for p in (folder / "masks").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        }
    items = []
    for path in files:
        image = _read_image(path)
        truth, mask_path = None, masks.get(path.stem)
        if mask_path is not None:
            try:
                with Image.open(mask_path) as opened:
                    truth = np.asarray(opened.convert("L")) > 0
            except (OSError, UnidentifiedImageError) as error:
                raise GoldenError(f"golden mask {mask_path} cannot be read: {error}") from None
            if truth.shape != image.shape[:2]:
                raise GoldenError(
                    f"golden mask {mask_path} is {truth.shape[1]}x{truth.shape[0]}, its "
                    f"image {path.name} is {image.shape[1]}x{image.shape[0]}; they must match"
                )
        items.append(Item(path.name, image, truth))
    return items


def _labelled_items(csv_path: Path) -> list[Item]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GoldenError(
                f"{csv_path} lacks columns {missing}; expected: {', '.join(CSV_COLUMNS)}"
            )
        rows = list(reader)
    items = []
    for line, row in enumerate(rows, start=2):
        image = _read_image(csv_path.parent / row["path"].strip())
        try:
            x0, y0, x1, y1 = (round(float(row[c])) for c in CSV_COLUMNS[2:])
        except ValueError:
            raise GoldenError(f"{csv_path}, line {line}: box corners must be numbers") from None
        if x1 <= x0 or y1 <= y0:
            raise GoldenError(f"{csv_path}, line {line}: empty box ({x0}, {y0}, {x1}, {y1})")
        # Pixel-edge corners (x_max one past the last column) to the client's inclusive ones.
        label = BoxLabel(row["class"].strip(), (x0, y0, x1 - 1, y1 - 1))
        items.append(Item(row["path"].strip(), image, label))
    return items


def _seed_items(folder: Path) -> list[Item]:
    path = folder / "seeds.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise GoldenError(f"golden folder {folder} has no seeds.json") from None
    except ValueError as error:
        raise GoldenError(f"{path} is not JSON: {error}") from None
    seeds = data.get("seeds") if isinstance(data, dict) else data
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise GoldenError(f'{path} must hold {{"seeds": [integers]}} or a list of integers')
    return [Item(f"seed {s}", s) for s in seeds]


# -- a version's own warmup requests ----------------------------------------------------------


def warmup_items(version_dir: Path, compare: Comparison, contract: Contract) -> list[Item]:
    """The inputs of a version's warmup requests, as golden items (no truth).

    Encoded images are decoded; pre-processed float images are scaled back to uint8 with the
    contract's scaling; seeds and latent vectors are taken as they are.
    """
    from tensorflow_serving.apis import prediction_log_pb2  # the rollout tool has TensorFlow

    path = warmup_path(version_dir)
    if not path.is_file():
        return []
    try:
        records = read_records(path)
    except WarmupRecordError as error:
        raise GoldenError(str(error)) from None
    items = []
    for number, record in enumerate(records):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            continue
        items += _request_items(log.predict_log.request, "warmup", number, compare, contract)
    return items


def _request_items(
    request, source: str, number: int, compare: Comparison, contract: Contract
) -> list[Item]:
    """One item per batch entry of each input of a PredictRequest, named like
    `warmup serving_default.image #0.1` (`source` is "warmup" or "logged")."""
    items = []
    name = f"{source} {request.model_spec.signature_name or 'serving_default'}"
    for alias, proto in sorted(request.inputs.items()):
        values = _warmup_values(codec.decode(proto), compare, contract)
        items += [
            Item(f"{name}.{alias} #{number}.{i}", value, warmup=source == "warmup")
            for i, value in enumerate(values)
        ]
    return items


# -- logged requests (verify --replay) --------------------------------------------------------


def load_replay(folder: str | Path, model: str, limit: int = REPLAY_LIMIT) -> GoldenSet:
    """The newest `limit` logged Predict requests for `model` under `folder` (recursively).

    Files are read newest first (by modification time, then name). A last record cut short in
    the newest file (still being written) is left out with a note; any other damage is an error.

    Returns:
        A GoldenSet whose `requests` hold the logged requests, oldest first; `resolve_replay`
        turns them into items.

    Raises:
        GoldenError: no such folder, no log files, a corrupt file, or no Predict record for
            `model` (the message names the models the records are for).
    """
    import tensorflow as tf  # the rollout tool has TensorFlow (see warmup_items)
    from tensorflow_serving.apis import prediction_log_pb2

    folder = Path(folder)
    if not folder.is_dir():
        raise GoldenError(f"--replay folder {folder} does not exist or is not a folder")
    files = sorted(
        (p for p in folder.rglob(f"*{LOG_SUFFIX}") if p.is_file()),
        key=lambda p: (p.stat().st_mtime, str(p)),
    )
    if not files:
        raise GoldenError(
            f"--replay folder {folder} holds no request logs (*{LOG_SUFFIX} files, written by a "
            "model's logging_config)"
        )
    found: list = []
    others: dict[str, int] = {}
    notes = []
    for newest, path in enumerate(reversed(files)):
        kept = []
        try:
            for raw in tf.data.TFRecordDataset(str(path)):
                log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
                name = log.log_metadata.model_spec.name
                if log.WhichOneof("log_type") == "predict_log":
                    name = name or log.predict_log.request.model_spec.name
                    if name == model:
                        kept.append(log.predict_log.request)
                        kept = kept[-limit:]
                        continue
                others[name or "(no name)"] = others.get(name or "(no name)", 0) + 1
        except tf.errors.DataLossError as error:
            # TensorFlow's text wraps "truncated record at N" or "corrupted record at N".
            damage = re.search(r"(truncated|corrupted) record at \d+", error.message)
            what = damage.group(0) if damage else error.message
            if newest != 0 or not what.startswith("truncated"):
                raise GoldenError(f"request log {path} is corrupt: {what}") from None
            notes.append(f"a truncated last record of {path.name} left out (still being written?)")
        except ValueError as error:  # protobuf's DecodeError
            raise GoldenError(
                f"request log {path} holds a record that is not a PredictionLog: {error}"
            ) from None
        found = kept[-(limit - len(found)) :] + found if len(found) < limit else found
        if len(found) >= limit:
            break
    if not found:
        seen = ", ".join(f"{n} ({c})" for n, c in sorted(others.items())) or "none"
        raise GoldenError(
            f"--replay folder {folder} has no logged Predict request for model {model}; "
            f"records found for: {seen}"
        )
    notes.insert(0, f"{len(found)} logged Predict requests (newest first, at most {limit})")
    return GoldenSet(f"replay {folder}", notes=notes, requests=found)


def resolve_replay(golden: GoldenSet, compare: Comparison, contract: Contract) -> None:
    """Makes the logged requests of a replay into golden items (no truth: real traffic).

    Raises:
        GoldenError: none of the requests has an input the model's gates can send.
    """
    for number, request in enumerate(golden.requests):
        golden.items += _request_items(request, "logged", number, compare, contract)
    if not golden.items:
        raise GoldenError(
            f"{golden.source}: none of the {len(golden.requests)} logged requests has an input "
            f"the gates can send ({compare.inputs})"
        )
    golden.requests = []


def _warmup_values(array: np.ndarray, compare: Comparison, contract: Contract) -> list:
    """One golden value per batch entry of a warmup input, of the kind the model takes."""
    if compare.inputs == "images":
        if array.dtype == object:
            return [load_rgb(bytes(value)) for value in array.reshape(-1)]
        pre = contract.preprocessing
        if array.ndim == 4 and np.issubdtype(array.dtype, np.floating) and pre is not None:
            pixels = (array.astype(np.float64) - pre.offset) / pre.scale
            return list(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        return []
    if np.issubdtype(array.dtype, np.integer) and array.ndim == 1:
        return [int(value) for value in array]
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
        return [np.asarray(row, np.float32) for row in array]
    return []
