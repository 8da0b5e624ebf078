"""End to end: `ServingClient.segment(path)` on a Carvana-size JPEG against the model itself.

One call reads the 1918x1280 JPEG, decodes and pre-processes it, calls the served unet and
post-processes the mask back to 1918x1280; over gRPC and over REST, against the real
`python -m serving`. The reference is the same SavedModel's serving_default called in-process
on one pre-processed image. In the same rounds, the parts of a call are timed alone: the
client's pre-processing (the JPEG opened, decoded at the contract's DCT scale and resized) and
post-processing (the mask at 1918x1280), the DCT-scaled decode by itself, and a bare grpcio
server answering the same Predict request with the server's own answer (no model). Everything
is timed in turn, round after round, so drift on a shared machine hits all alike; ratios of
p50 latencies are printed with their goals, and beside them the floor: the model, the grpcio
echo and the decode, what a gRPC segment call cannot go below; and for REST, which sends the
JPEG as it is, the bytes signature called in-process on it (the server's decode, the model and
the PNG answer, no HTTP) plus the client's post-processing.

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
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from benchmarks.serving_bench import EchoServer
    from client.api import ServingClient
    from client.images.inputs import InputImage
    from client.images.preprocess import decode, prepare_image
    from client.models import segmentation
    from common.contract import BYTES_MASK_PNG_SIGNATURE, jpeg_scale, unet_contract
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "car.jpg"
        path.write_bytes(carvana_jpeg())
        version = _latest(args.model_dir)
        signatures = tf.saved_model.load(str(version)).signatures
        serve = signatures["serving_default"]
        serve_bytes = signatures[BYTES_MASK_PNG_SIGNATURE]
        jpeg = tf.constant([path.read_bytes()])
        side = int(serve.structured_input_signature[1]["image"].shape[1])
        contract = unet_contract(side)
        pre = contract.preprocessing
        one = prepare_image(path, pre)[None]
        image = tf.constant(one)
        answer = {"mask": serve(image=image)["mask"].numpy()[0]}
        height, width = CARVANA_SIZE[1], CARVANA_SIZE[0]
        server = Server(args.model_dir, "unet", None)
        echo = None
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=_OPTIONS)
            server.wait(channel)
            over_grpc = ServingClient.grpc(f"127.0.0.1:{server.port}", fallback="never")
            over_rest = ServingClient.rest(f"http://127.0.0.1:{server.rest_port}", fallback="never")
            # The floor of the transport: the client's own Predict request, answered by a bare
            # grpcio server with the bytes the model server answered it with.
            request = _predict_request(one)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            echo = EchoServer(stub.Predict(request, timeout=60).SerializeToString())
            echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo.port}", options=_OPTIONS)
            echo_stub = prediction_service_pb2_grpc.PredictionServiceStub(echo_channel)
            calls = {
                "model": lambda: serve(image=image)["mask"].numpy(),
                "model_bytes": lambda: serve_bytes(image_bytes=jpeg)["mask_png_bytes"].numpy(),
                "grpc": lambda: over_grpc.segment(path)[0].mask,
                "rest": lambda: over_rest.segment(path)[0].mask,
                "pre": lambda: InputImage(path).model_input(pre),
                "decode": lambda: decode(path, pre),
                "post": lambda: segmentation(contract, answer, (height, width), "").mask,
                "echo": lambda: echo_stub.Predict(request, timeout=60),
            }
            masks = {name: calls[name]() for name in ("grpc", "rest")}
            times = interleaved(calls, args.n, warmup=5)
            echo_channel.close()
            channel.close()
            over_grpc.close()
            over_rest.close()
        finally:
            if echo is not None:
                echo.stop()
            server.stop()
    p50 = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    agree = float(np.mean(masks["grpc"] == masks["rest"]))
    floor = p50["model"] + p50["echo"] + p50["decode"]
    rest_floor = p50["model_bytes"] + p50["post"]
    return {
        "image": f"{CARVANA_SIZE[0]}x{CARVANA_SIZE[1]} JPEG",
        "model_version": version.name,
        "jpeg_scale": jpeg_scale(height, width, pre),
        "jpeg_margin": pre.jpeg_margin,
        "p50_ms": p50,
        "p99_ms": {name: float(np.percentile(t, 99) * 1e3) for name, t in times.items()},
        "grpc_over_model": p50["grpc"] / p50["model"],
        "rest_over_model": p50["rest"] / p50["model"],
        "grpc_floor_over_model": floor / p50["model"],
        "rest_floor_over_model": rest_floor / p50["model"],
        "grpc_rest_mask_agreement": agree,
        "goals": GOALS,
    }


_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def _predict_request(batch: np.ndarray):
    """The request `ServingClient.segment` sends over gRPC for this pre-processed image."""
    from tensorflow_serving.apis import model_pb2, predict_pb2

    from client.models import IMAGE_MODELS
    from common import codec

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="unet", signature_name="serving_default"),
        output_filter=IMAGE_MODELS["unet"].outputs,
    )
    codec.encode(batch, out=request.inputs["image"])
    return request


def report(result: dict) -> str:
    p50, p99 = result["p50_ms"], result["p99_ms"]
    lines = [
        f"image: {result['image']}, unet version {result['model_version']}, decoded at "
        f"1/{result['jpeg_scale']} (jpeg_margin {result['jpeg_margin']})",
        f"{'':44} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    names = {
        "model": "model call in-process, batch 1",
        "model_bytes": "  the JPEG to its bytes signature, in-process",
        "grpc": "ServingClient.segment over gRPC",
        "rest": "ServingClient.segment over REST",
        "pre": "  client pre (open, decode, resize)",
        "decode": "    of which the DCT-scaled decode",
        "post": "  client post (the mask at full size)",
        "echo": "  bare grpcio echo of the same Predict",
    }
    for key, text in names.items():
        lines.append(f"{text:44} {p50[key]:8.2f} {p99[key]:8.2f}")
    rest_of_call = p50["grpc"] - p50["pre"] - p50["post"]
    lines.append(
        f"{'  gRPC call (segment - pre - post)':44} {rest_of_call:8.2f}"
        f"   ({rest_of_call / p50['model']:.2f} x the model)"
    )
    for key, goal in GOALS.items():
        met = "met" if result[key] <= goal else "NOT met"
        lines.append(f"{key.replace('_', ' '):44} {result[key]:8.2f}  (goal <= {goal}: {met})")
    floors = {
        "grpc_floor_over_model": "gRPC floor: (model + echo + decode) / model",
        "rest_floor_over_model": "REST floor: (bytes signature + post) / model",
    }
    for key, text in floors.items():
        lines.append(f"{text:44} {result[key]:8.2f}")
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
