"""Client benchmark: pre/post-processing CPU per Carvana-sized JPEG, and tensor encoding.

Prints ratios measured in one run:
- client pre-processing (read the JPEG at its DCT scale, resize, scale) plus post-processing
  (the mask back at 1918x1280) CPU time per image, over the model's own in-process inference
  time; beside them, the full-size decode and float-probability resize they replace, the
  pre-processing at jpeg_margin 2 (a 1/4 decode, the contract's rule before issue 22) and the
  DCT-scaled decode alone (libjpeg's entropy decoding, which no client can skip);
- `common.codec.encode` (tensor_content) over `tf.make_tensor_proto` for the same batch.

Example:
    python -m benchmarks.client_bench --model-dir models/unet
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CARVANA_SIZE = (1918, 1280)  # width, height of a Carvana training image


def _cpu(call, repeat: int) -> float:
    """Median process CPU seconds of `call` (CPU, not wall, so other processes don't count)."""
    call()
    samples = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        samples.append(time.process_time() - start)
    return float(np.median(samples))


def _wall(call, repeat: int) -> float:
    call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def carvana_jpeg() -> bytes:
    """A real photograph (skimage's astronaut) at Carvana's size, JPEG-encoded at quality 90."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize(CARVANA_SIZE, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def run(args) -> dict:
    from client.images import postprocess
    from client.images.inputs import InputImage
    from client.images.preprocess import decode, load_rgb, prepare_image
    from common import codec
    from common.contract import unet_contract
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    versions = sorted(int(p.name) for p in args.model_dir.iterdir() if p.name.isdigit())
    if not versions:
        raise SystemExit(
            f"no numeric version folder under {args.model_dir}; run `make served-models`"
        )
    signature = tf.saved_model.load(str(args.model_dir / str(versions[-1]))).signatures[
        "serving_default"
    ]
    side = signature.structured_input_signature[1]["image"].shape[1]
    pre = unet_contract(side).preprocessing
    jpeg = carvana_jpeg()
    width, height = CARVANA_SIZE

    batch = prepare_image(jpeg, pre)[None]
    probabilities = signature(image=tf.constant(batch))["mask"].numpy()[0]
    results: dict = {"image": f"{width}x{height} JPEG, {len(jpeg)} bytes", "model_side": side}
    # What one ServingClient.segment call does around the model (gRPC path).
    results["pre_s"] = _cpu(lambda: InputImage(jpeg).model_input(pre), args.repeat)
    results["post_s"] = _cpu(
        lambda: postprocess.mask_at_size(probabilities, height, width), args.repeat
    )
    results["jpeg_margin"] = pre.jpeg_margin
    results["decode_s"] = _cpu(lambda: decode(jpeg, pre), args.repeat)
    margin_2 = dataclasses.replace(pre, jpeg_margin=2.0)
    results["pre_margin_2_s"] = _cpu(lambda: InputImage(jpeg).model_input(margin_2), args.repeat)
    # The work those replace: a full-size decode, float probabilities resized to full size.
    results["full_decode_s"] = _cpu(lambda: load_rgb(jpeg), args.repeat)
    results["float_post_s"] = _cpu(
        lambda: postprocess.threshold(
            postprocess.resize_probabilities(probabilities, height, width)
        ),
        args.repeat,
    )
    # A car's answer is smooth, unlike the car model's noisy answer on the photo above, which
    # is no car: mask_at_size costs the same for both.
    from training.data.cars import render_car

    car, _ = render_car(car_seed=7, view=2, height=height, width=width)
    car_map = signature(image=tf.constant(prepare_image(car, pre)[None]))["mask"].numpy()[0]
    results["car_post_s"] = _cpu(
        lambda: postprocess.mask_at_size(car_map, height, width), args.repeat
    )
    fast = postprocess.mask_at_size(probabilities, height, width)
    full = postprocess.threshold(postprocess.resize_probabilities(probabilities, height, width))
    results["mask_dice_vs_float_path"] = float(
        2 * (fast & full).sum() / max(1, int(fast.sum()) + int(full.sum()))
    )
    image_t = tf.constant(batch)
    results["model_s"] = _wall(lambda: signature(image=image_t), args.repeat)
    results["pre_post_over_model"] = (results["pre_s"] + results["post_s"]) / results["model_s"]

    for n in (1, 16):
        tensor = np.random.default_rng(0).random((n, side, side, 3), dtype=np.float32)
        ours = _wall(lambda t=tensor: codec.encode(t).SerializeToString(), args.repeat * 5)
        theirs = _wall(
            lambda t=tensor: tf.make_tensor_proto(t).SerializeToString(), args.repeat * 5
        )
        results[f"encode_batch{n}"] = {
            "ours_ms": ours * 1e3,
            "tf_ms": theirs * 1e3,
            "ratio": ours / theirs,
        }
    return results


def report(r: dict) -> str:
    lines = [
        f"image: {r['image']}, model input {r['model_side']}x{r['model_side']}",
        f"  pre-processing, DCT-scaled decode (CPU) {r['pre_s'] * 1e3:8.2f} ms"
        f"   (full-size decode alone: {r['full_decode_s'] * 1e3:.2f} ms)",
        f"    of which the decode (jpeg_margin {r['jpeg_margin']}) {r['decode_s'] * 1e3:8.2f} ms"
        f"   (pre-processing at jpeg_margin 2: {r['pre_margin_2_s'] * 1e3:.2f} ms)",
        f"  post-processing, mask at full size (CPU) {r['post_s'] * 1e3:8.2f} ms"
        f"   (float probabilities resized: {r['float_post_s'] * 1e3:.2f} ms)",
        f"  the same for a synthetic car's mask (CPU) {r['car_post_s'] * 1e3:8.2f} ms",
        f"  model, in-process, batch 1 (wall)        {r['model_s'] * 1e3:8.2f} ms",
        f"  (pre + post) / model                     {r['pre_post_over_model']:8.3f}"
        f"  (goal <= 0.5: {'met' if r['pre_post_over_model'] <= 0.5 else 'NOT met'})",
        f"  floor: DCT-scaled decode / model         {r['decode_s'] / r['model_s']:8.3f}",
        f"  full-size mask Dice against the float path {r['mask_dice_vs_float_path']:.5f}"
        "  (goal >= 0.999)",
        "tensor encoding, common.codec.encode vs tf.make_tensor_proto (incl. serialisation):",
    ]
    for n in (1, 16):
        e = r[f"encode_batch{n}"]
        lines.append(
            f"  batch {n:2d}: {e['ours_ms']:.3f} ms vs {e['tf_ms']:.3f} ms, ratio {e['ratio']:.3f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "unet")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "client.json")
    args = parser.parse_args(argv)
    results = run(args)
    print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
