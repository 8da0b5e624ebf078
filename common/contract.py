"""Serving contracts: the one definition of each model's inputs, outputs and pre-processing.

Pure Python on purpose (no TensorFlow, no NumPy): training, export, the server's metadata checks
and the slim client all import this module, and the client must install without TensorFlow.

Example:
    >>> from common.contract import unet_contract
    >>> c = unet_contract(image_size=128)
    >>> c.signature("serving_default").inputs[0].shape
    (None, 128, 128, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SIGNATURE = "serving_default"
# Signature that takes encoded JPEG/PNG bytes and answers at the original image size.
BYTES_SIGNATURE = "serve_bytes"
# The unet's same bytes in, and its mask probabilities out at the model's own resolution as an
# 8-bit PNG (round(p * 255)): a few kilobytes in REST's JSON where floats take a megabyte. The
# caller restores each mask to its image's size (`image_size`) as it does after serving_default.
BYTES_MASK_PNG_SIGNATURE = "serve_bytes_mask_png"
# Generator signature that takes integer seeds and draws the latent vectors statelessly.
SEEDS_SIGNATURE = "serve_seeds"

# Box layout used by the localizer everywhere: centre x, centre y, height, width. In the
# normalised form each value is divided by the image width (x, w) or height (y, h).
BOX_FORMAT = ("x", "y", "h", "w")

DEFAULT_CLASS_NAMES = ("ellipse", "rectangle", "triangle")

# The most pixels an encoded image, and a request's images together, may decode to (4096 x
# 4096): TF's decoders allocate what a header declares, so it is checked before decoding (the
# rule is `Preprocessing`'s), and the client refuses too.
DEFAULT_MAX_PIXELS = 2**24
# The most scans a progressive JPEG may have: libjpeg passes over all its coefficients once a
# scan, so a few kilobytes of repeated scans cost seconds. Ten times the 10 scans of libjpeg's
# standard progression.
DEFAULT_MAX_JPEG_SCANS = 100


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature. `None` in `shape` marks a dynamic dimension."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class SignatureSpec:
    """A serving signature: its name and its named inputs and outputs."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB/gray uint8 image becomes the model's input tensor.

    The image is converted to `channels` channels, resized to `size` (height, width) with
    `resize_method` (antialiased when `antialias`), then mapped to `value * scale + offset`
    as float32. Training, the in-graph bytes signature and the client all follow it.
    `max_pixels` is the pixel budget, counted from headers before anything is decoded (width x
    height, all frames of a GIF), and `max_jpeg_scans` bounds a progressive JPEG's scans:
    - the bytes signature's graph refuses each image over either, alone, so its answer does
      not depend on which requests a server batches together; where the signature pads every
      output to the batch's largest image (`pads_outputs`), each side is at most `max_side`;
    - the server checks the same from the same headers before a request joins a batch, and
      also the request's images together against `max_pixels` (padded outputs: count x
      largest height x largest width); the embedded server only: TF Serving has the graph's
      per-image checks alone;
    - the client refuses a larger image before decoding it. A JPEG much larger than the input is
    decoded at a reduced DCT scale (`jpeg_scale`, libjpeg's 1/2, 1/4 or 1/8 decoding) and
    resized from there; `jpeg_margin` is how many times the input size the scaled image must
    keep on both sides (0 decodes every JPEG at full size). At 1 a Carvana photo (1918x1280)
    for a 128 px model is decoded at 1/8, its 8x8 blocks' means, a box filter before the
    antialiased resize: on 12 synthetic cars the shipped U-Net's masks agree with those of the
    1/4 decode (margin 2) at Dice 0.998 or more and match the truth as well (0.991), for a
    third less client pre-processing CPU (5.8 -> 3.8 ms; issue 22).
    """

    size: tuple[int, int]
    channels: int = 3
    resize_method: str = "bilinear"
    antialias: bool = True
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    jpeg_margin: float = 1.0
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS

    @property
    def max_side(self) -> int:
        """The longest side of an image whose output is padded: a padded output is then at
        most `max_pixels`, whatever the other images in its batch."""
        return math.isqrt(self.max_pixels)


def pads_outputs(signature: SignatureSpec) -> bool:
    """Whether a bytes signature pads every image's output to the largest (height and width
    both dynamic, as the unet's masks at each image's own size)."""
    return any(len(t.shape) == 4 and t.shape[1:3] == (None, None) for t in signature.outputs)


def encoded_image_inputs(contract: Contract) -> dict[str, str]:
    """{signature: input alias} of every input that takes encoded images (a string input of a
    model with pre-processing), the inputs that `Preprocessing.max_pixels` bounds."""
    if contract.preprocessing is None:
        return {}
    return {
        sig.name: spec.name
        for sig in contract.signatures
        for spec in sig.inputs
        if spec.dtype == "string"
    }


def pixel_refusals(signature: str, pre: Preprocessing) -> dict[str, str]:
    """The texts of every pixel-budget refusal, as the graph and the server both give them.

    Each is a template whose `{}` fields (`str.format` and `tf.strings.format` alike) are, in
    order: "pixels": image index, width, height, pixels; "frames" (an animated GIF): index,
    frames, width, height, pixels; "side": index, width, height; "scans": index, scans;
    "total": image count, pixels; "padded": output count, width, height, pixels.
    """
    image = f"{signature} takes at most {pre.max_pixels} pixels per image"
    request = f"{signature} takes at most {pre.max_pixels} pixels per request"
    why = " (max_pixels of the model contract)"
    return {
        "pixels": "image {} is {}x{} = {} pixels; " + image + why,
        "frames": "image {} is a GIF of {} frames up to {}x{}, {} pixels to decode; " + image + why,
        "side": (
            f"image {{}} is {{}}x{{}}; {signature} pads every output to the largest image, so "
            f"it takes at most {pre.max_side} pixels a side" + why
        ),
        "scans": (
            f"image {{}} is a JPEG of {{}} scans; {signature} takes at most "
            f"{pre.max_jpeg_scans} (libjpeg passes over the whole image once a scan)"
        ),
        "total": "the {} images are {} pixels together; " + request + why,
        "padded": "the {} outputs padded to {}x{} are {} pixels; " + request + why,
    }


# libjpeg decodes a JPEG at 1/1, 1/2, 1/4 or 1/8 of its size for a fraction of the work.
JPEG_SCALES = (8, 4, 2, 1)


def jpeg_scale(height: int, width: int, pre: Preprocessing) -> int:
    """The scale denominator (8, 4, 2 or 1) a JPEG of this size is decoded at.

    The largest one whose scaled image (`ceil(side / scale)`, as libjpeg makes it) keeps at
    least `pre.jpeg_margin` times the model input on both sides. The training pipeline, the
    in-graph bytes signature (`training.data.preprocess.decode_image`) and the client
    (`client.images.preprocess`) all decode by this rule.
    """
    if pre.jpeg_margin <= 0:
        return 1
    need_h, need_w = pre.jpeg_margin * pre.size[0], pre.jpeg_margin * pre.size[1]
    for scale in JPEG_SCALES:
        if -(-height // scale) >= need_h and -(-width // scale) >= need_w:
            return scale
    return 1


@dataclass(frozen=True)
class Contract:
    """Everything a caller must know to talk to one served model."""

    model_name: str
    signatures: tuple[SignatureSpec, ...]
    preprocessing: Preprocessing | None = None
    class_names: tuple[str, ...] = ()
    latent_dim: int | None = None
    mask_threshold: float = 0.5
    box_format: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def signature(self, name: str = DEFAULT_SIGNATURE) -> SignatureSpec:
        """Returns the signature called `name`, or raises a ValueError listing the valid ones."""
        for sig in self.signatures:
            if sig.name == name:
                return sig
        valid = ", ".join(s.name for s in self.signatures)
        raise ValueError(
            f"model {self.model_name!r} has no signature {name!r}; valid signatures: {valid}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used in export manifests)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        """Inverse of `to_dict`."""
        sigs = tuple(
            SignatureSpec(
                name=s["name"],
                inputs=tuple(_tensor(t) for t in s["inputs"]),
                outputs=tuple(_tensor(t) for t in s["outputs"]),
            )
            for s in data["signatures"]
        )
        pre = data.get("preprocessing")
        if pre is not None:
            pre = Preprocessing(**{**pre, "size": tuple(pre["size"])})
        return cls(
            model_name=data["model_name"],
            signatures=sigs,
            preprocessing=pre,
            class_names=tuple(data.get("class_names", ())),
            latent_dim=data.get("latent_dim"),
            mask_threshold=data.get("mask_threshold", 0.5),
            box_format=tuple(data.get("box_format", ())),
            extra=dict(data.get("extra", {})),
        )


def _tensor(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(data["name"], data["dtype"], tuple(data["shape"]))


def unet_contract(image_size: int = 128) -> Contract:
    """Contract of the `unet` car-segmentation model at a square `image_size`."""
    n = image_size
    return Contract(
        model_name="unet",
        preprocessing=Preprocessing(size=(n, n)),
        signatures=(
            SignatureSpec(
                DEFAULT_SIGNATURE,
                inputs=(TensorSpec("image", "float32", (None, n, n, 3)),),
                outputs=(
                    TensorSpec("mask", "float32", (None, n, n, 1)),
                    TensorSpec("mask_logits", "float32", (None, n, n, 1)),
                ),
            ),
            SignatureSpec(
                BYTES_SIGNATURE,
                inputs=(TensorSpec("image_bytes", "string", (None,)),),
                # Mask probabilities at each original image size (a mixed batch is padded with
                # zeros to the largest; `image_size` gives each image's height and width).
                outputs=(
                    TensorSpec("mask", "float32", (None, None, None, 1)),
                    TensorSpec("image_size", "int32", (None, 2)),
                ),
            ),
            SignatureSpec(
                BYTES_MASK_PNG_SIGNATURE,
                inputs=(TensorSpec("image_bytes", "string", (None,)),),
                # Each mask's probabilities at the model's resolution as an 8-bit PNG (the
                # `_bytes` suffix makes REST write it as base64), and each image's own size.
                outputs=(
                    TensorSpec("mask_png_bytes", "string", (None,)),
                    TensorSpec("image_size", "int32", (None, 2)),
                ),
            ),
        ),
    )


def localizer_contract(
    image_size: int = 64, class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES
) -> Contract:
    """Contract of the `localizer` classification + box model."""
    n, k = image_size, len(class_names)
    return Contract(
        model_name="localizer",
        preprocessing=Preprocessing(size=(n, n)),
        class_names=tuple(class_names),
        box_format=BOX_FORMAT,
        signatures=(
            SignatureSpec(
                DEFAULT_SIGNATURE,
                inputs=(TensorSpec("image", "float32", (None, n, n, 3)),),
                outputs=(
                    TensorSpec("class_probs", "float32", (None, k)),
                    TensorSpec("class_id", "int64", (None,)),
                    TensorSpec("box", "float32", (None, 4)),
                ),
            ),
            SignatureSpec(
                BYTES_SIGNATURE,
                inputs=(TensorSpec("image_bytes", "string", (None,)),),
                outputs=(
                    TensorSpec("class_probs", "float32", (None, k)),
                    TensorSpec("class_id", "int64", (None,)),
                    # Box in the original image's pixels.
                    TensorSpec("box", "float32", (None, 4)),
                    TensorSpec("image_size", "int32", (None, 2)),
                ),
            ),
        ),
    )


def generator_contract(latent_dim: int = 64, image_size: int = 28, channels: int = 1) -> Contract:
    """Contract of the `generator` (DCGAN) model: latent vectors or seeds in, uint8 images out."""
    images = TensorSpec("images", "uint8", (None, image_size, image_size, channels))
    return Contract(
        model_name="generator",
        latent_dim=latent_dim,
        # The generator ends in tanh; images are round((x + 1) * 127.5) as uint8.
        extra={"output_range": [-1.0, 1.0], "image_size": image_size, "channels": channels},
        signatures=(
            SignatureSpec(
                DEFAULT_SIGNATURE,
                inputs=(TensorSpec("z", "float32", (None, latent_dim)),),
                outputs=(images,),
            ),
            SignatureSpec(
                SEEDS_SIGNATURE,
                inputs=(TensorSpec("seeds", "int64", (None,)),),
                outputs=(images,),
            ),
        ),
    )


# (signature, "inputs" or "outputs", alias) -> the served tensor's shape (-1 for a dynamic size).
ShapeOf = Callable[[str, str, str], Sequence[int]]


@dataclass(frozen=True)
class ModelContract:
    """One model's entry in the registry: its contract, built from sizes or from a served model.

    Attributes:
        build: the contract builder (`unet_contract`, ...); sizes are keyword arguments.
        served: rebuilds the contract from a served model's signature shapes (the sizes a
            version was trained at, such as the image side or the latent size, come from
            there; names, dtypes and pre-processing are the project's).
    """

    build: Callable[..., Contract]
    served: Callable[[ShapeOf], Contract]


def _served_unet(shape_of: ShapeOf) -> Contract:
    return unet_contract(shape_of(DEFAULT_SIGNATURE, "inputs", "image")[1])


def _served_localizer(shape_of: ShapeOf) -> Contract:
    side = shape_of(DEFAULT_SIGNATURE, "inputs", "image")[1]
    k = shape_of(DEFAULT_SIGNATURE, "outputs", "class_probs")[-1]
    names = (
        DEFAULT_CLASS_NAMES
        if k == len(DEFAULT_CLASS_NAMES)
        else tuple(f"class_{i}" for i in range(k))
    )
    return localizer_contract(side, names)


def _served_generator(shape_of: ShapeOf) -> Contract:
    latent = shape_of(DEFAULT_SIGNATURE, "inputs", "z")[-1]
    image = shape_of(DEFAULT_SIGNATURE, "outputs", "images")
    return generator_contract(latent, image[1], image[3])


# The registry: one entry per model. Every stage names models by these keys.
CONTRACTS: dict[str, ModelContract] = {
    "unet": ModelContract(unet_contract, _served_unet),
    "localizer": ModelContract(localizer_contract, _served_localizer),
    "generator": ModelContract(generator_contract, _served_generator),
}
MODEL_NAMES = tuple(CONTRACTS)


def model_contract(name: str) -> ModelContract:
    """The registry entry of model `name`, or a ValueError listing the valid names."""
    try:
        return CONTRACTS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}"
        ) from None
