"""Where the time goes: sampling profiles of one gRPC Predict, one REST predict, one segment call.

The server side is sampled with py-spy attached to the real `python -m serving` process while
a client sends the same request again and again; the client side (`ServingClient.segment` on a
1918x1280 JPEG over gRPC and over REST) is sampled with py-spy on a child process doing the
calls. Each profile prints the functions with the most samples of their own ("self"), and those
with the most samples in total, as shares of all samples. Not part of `make test`.

Example:
    python -m benchmarks.profile_paths --seconds 15 --top 12
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.client_bench import carvana_jpeg
from benchmarks.serving_bench import ROOT, Server

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def _summarise(raw: Path, top: int) -> dict:
    """Self and total sample shares per function from py-spy's raw (collapsed) output."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        count = int(count)
        samples += count
        frames = [_name(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    share = lambda counter: [  # noqa: E731
        (name, round(n / max(samples, 1), 3)) for name, n in counter.most_common(top)
    ]
    return {"samples": samples, "self": share(own), "total": share(total)}


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    short = "/".join(Path(path).parts[-2:]) if path else "?"
    return f"{match['function']} ({short})"


def _record(pid: int, seconds: float, out: Path, idle: bool = False) -> subprocess.Popen:
    flags = ["--idle"] if idle else []
    return subprocess.Popen(
        [sys.executable.replace("python", "py-spy"), "record", "--pid", str(pid), "--duration",
         str(int(seconds)), "--rate", "200", "--format", "raw", "--gil", *flags, "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _load(call, seconds: float) -> int:
    """Calls `call` in a loop for `seconds`; returns how many calls were made."""
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        call()
        n += 1
    return n


def server_profiles(args, folder: Path) -> dict:
    import grpc
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

    from serving.tensors import from_numpy

    image = np.random.default_rng(0).random((1, 128, 128, 3), dtype=np.float32)
    server = Server(args.model_dir, "unet", None)
    results = {}
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        server.wait(channel)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="unet"))
        request.inputs["image"].CopyFrom(from_numpy(image, tensor_content=True))
        body = json.dumps({"instances": image.tolist()}).encode()
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/unet:predict"

        def rest_call():
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60).read()

        calls = {
            "grpc_predict": lambda: stub.Predict(request, timeout=60),
            "rest_predict": rest_call,
        }
        for name, call in calls.items():
            _load(call, 2)  # warm
            raw = folder / f"{name}.txt"
            spy = _record(server.process.pid, args.seconds, raw)
            n = _load(call, args.seconds)
            spy.wait()
            results[name] = {"calls": n, **_summarise(raw, args.top)}
        channel.close()
    finally:
        server.stop()
    return results


_CLIENT_LOOP = """
import sys, time
from client.api import ServingClient
kind, target, path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = open(path, "rb").read()
make = ServingClient.grpc if kind == "grpc" else ServingClient.rest
with make(target, timeout=60, fallback="never") as client:
    client.segment(data)
    print("ready", flush=True)
    deadline, n = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        client.segment(data)
        n += 1
    print(n, flush=True)
"""


def client_profiles(args, folder: Path) -> dict:
    import grpc

    jpeg = folder / "car.jpg"
    jpeg.write_bytes(carvana_jpeg())
    server = Server(args.model_dir, "unet", None)
    results = {}
    try:
        server.wait(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        targets = {
            "grpc": f"127.0.0.1:{server.port}",
            "rest": f"http://127.0.0.1:{server.rest_port}",
        }
        for kind, target in targets.items():
            argv = [kind, target, str(jpeg), str(args.seconds + 2)]
            child = subprocess.Popen(
                [sys.executable, "-c", _CLIENT_LOOP, *argv],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout.readline().strip() == "ready"
            raw = folder / f"segment_{kind}.txt"
            # --idle: waiting on the server is part of the call's time.
            _record(child.pid, args.seconds, raw, idle=True).wait()
            calls = int(child.stdout.readline())
            child.wait()
            results[f"client_segment_{kind}"] = {"calls": calls, **_summarise(raw, args.top)}
    finally:
        server.stop()
    return results


def report(results: dict) -> str:
    lines = []
    for name, profile in results.items():
        lines.append(f"== {name}: {profile['calls']} calls, {profile['samples']} samples")
        lines.append("   self:")
        lines += [f"     {share:6.1%}  {function}" for function, share in profile["self"]]
        lines.append("   total (inclusive):")
        lines += [f"     {share:6.1%}  {function}" for function, share in profile["total"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "unet")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "profiles.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = server_profiles(args, Path(folder)) | client_profiles(args, Path(folder))
    print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
