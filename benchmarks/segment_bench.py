"""End to end: `ServingClient.segment(path)` on a Carvana-size JPEG against the model itself.

One call reads the 1918x1280 JPEG, decodes and pre-processes it, calls the served unet and
post-processes the mask back to 1918x1280; over gRPC and over REST, against the real
`python -m serving`. The reference is the same SavedModel's serving_default called in-process
on one pre-processed image. The three are timed in turn, round after round, so drift on a
shared machine hits them alike; ratios of p50 latencies are printed with their goals.

Example:
    python -m benchmarks.segment_bench --model-dir models/unet --n 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.client_bench import CARVANA_SIZE, carvana_jpeg
from benchmarks.serving_bench import ROOT, Server, interleaved

GOALS = {"grpc_over_model": 1.5, "rest_over_model": 1.6}


def _latest(model_dir: Path) -> Path:
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    return model_dir / str(versions[-1])


def run(args) -> dict:
    import grpc

    from client.api import ServingClient
    from client.images.preprocess import prepare_image
    from common.contract import unet_contract
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "car.jpg"
        path.write_bytes(carvana_jpeg())
        version = _latest(args.model_dir)
        serve = tf.saved_model.load(str(version)).signatures["serving_default"]
        side = int(serve.structured_input_signature[1]["image"].shape[1])
        image = tf.constant(prepare_image(path, unet_contract(side).preprocessing)[None])
        server = Server(args.model_dir, "unet", None)
        try:
            server.wait(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
            over_grpc = ServingClient.grpc(f"127.0.0.1:{server.port}", fallback="never")
            over_rest = ServingClient.rest(f"http://127.0.0.1:{server.rest_port}", fallback="never")
            calls = {
                "model": lambda: serve(image=image)["mask"].numpy(),
                "grpc": lambda: over_grpc.segment(path)[0].mask,
                "rest": lambda: over_rest.segment(path)[0].mask,
            }
            masks = {name: calls[name]() for name in ("grpc", "rest")}
            times = interleaved(calls, args.n, warmup=5)
            over_grpc.close()
            over_rest.close()
        finally:
            server.stop()
    p50 = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    agree = float(np.mean(masks["grpc"] == masks["rest"]))
    return {
        "image": f"{CARVANA_SIZE[0]}x{CARVANA_SIZE[1]} JPEG",
        "model_version": version.name,
        "p50_ms": p50,
        "p99_ms": {name: float(np.percentile(t, 99) * 1e3) for name, t in times.items()},
        "grpc_over_model": p50["grpc"] / p50["model"],
        "rest_over_model": p50["rest"] / p50["model"],
        "grpc_rest_mask_agreement": agree,
        "goals": GOALS,
    }


def report(result: dict) -> str:
    p50, p99 = result["p50_ms"], result["p99_ms"]
    lines = [f"image: {result['image']}, unet version {result['model_version']}"]
    lines.append(f"{'':34} {'p50 ms':>8} {'p99 ms':>8}")
    names = {
        "model": "model call in-process, batch 1",
        "grpc": "ServingClient.segment over gRPC",
        "rest": "ServingClient.segment over REST",
    }
    for key, text in names.items():
        lines.append(f"{text:34} {p50[key]:8.2f} {p99[key]:8.2f}")
    for key, goal in GOALS.items():
        met = "met" if result[key] <= goal else "NOT met"
        lines.append(f"{key.replace('_', ' '):34} {result[key]:8.2f}  (goal <= {goal}: {met})")
    lines.append(f"gRPC and REST masks agree on {result['grpc_rest_mask_agreement']:.4%} of pixels")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "unet")
    parser.add_argument("--n", type=int, default=60, help="timed rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "segment.json")
    args = parser.parse_args(argv)
    result = run(args)
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
