"""The peer benchmark's driver: starts both servers, checks their answers, times the paths."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.peers.table import percentiles, report
from benchmarks.serving_bench import Server

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]

# Every answer must match the in-process call's to within float32 rounding noise. The servers
# run the same graph on the same input, but not the same way (our server runs TF Serving's
# Session callable, KServe an eager signature call in another process), and oneDNN may order a
# convolution's sums differently with another thread split, which moves the last bits of a float32.
# On this machine all five answers were bit-identical (the largest difference printed is 0); the
# tolerance leaves room for a few ulps of such reordering, accumulated through the network, while
# a wrong answer (another input, a transposed or rescaled image, the other output) moves values
# by 1e-2 or more, three orders above it. REST answers are compared after JSON: both servers
# spell each float32 so that it reads back exactly.
RTOL, ATOL = 1e-5, 1e-5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class KServeServer:
    """benchmarks.peers.kserve_server in .venv-peers: `kserve.ModelServer`, one worker."""

    def __init__(self, version_dir: Path, name: str, signature: str, python: Path = PEERS_PYTHON):
        if not python.exists():
            raise SystemExit(f"{python} is missing: run `make peers` (or `make bench-peers`)")
        self.name, self.rest_port, self.grpc_port = name, _free_port(), _free_port()
        flags = [
            f"--model_name={name}",
            f"--model_dir={version_dir.resolve()}",
            f"--signature_name={signature}",
            f"--http_port={self.rest_port}",
            f"--grpc_port={self.grpc_port}",
            "--workers=1",
        ]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [str(python), "-m", "benchmarks.peers.kserve_server", *flags],
            cwd=ROOT,
            stdout=self.log,
            stderr=self.log,
        )

    def wait(self, timeout: float = 180.0) -> None:
        """Returns once KServe's v1 model endpoint says the model is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"KServe exited:\n{self.log.read().decode()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=2)
                conn.request("GET", f"/v1/models/{self.name}")
                answer = conn.getresponse()
                ready = answer.status == 200 and json.loads(answer.read()).get("ready") is True
                conn.close()
                if ready:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("KServe did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def oip_messages(python: Path = PEERS_PYTHON) -> tuple[type, type]:
    """KServe's own ModelInferRequest and ModelInferResponse, rebuilt in this venv.

    The classes come from the file descriptor compiled into KServe's generated module (read in
    .venv-peers, whose protobuf is 6.x), added to a private pool here (protobuf 7.x): the wire
    format is KServe's exactly, with no copy of its .proto in this repository.
    """
    from google.protobuf import descriptor_pool, message_factory

    code = (
        "import sys\n"
        "from kserve.protocol.grpc import grpc_predict_v2_pb2 as m\n"
        "sys.stdout.buffer.write(m.DESCRIPTOR.serialized_pb)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [str(python), "-c", code], cwd=ROOT, capture_output=True, check=True, env=env
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(done.stdout)
    request = pool.FindMessageTypeByName("inference.ModelInferRequest")
    response = pool.FindMessageTypeByName("inference.ModelInferResponse")
    return message_factory.GetMessageClass(request), message_factory.GetMessageClass(response)


def rest_caller(port: int, name: str, body: bytes) -> Callable[[], bytes]:
    """POSTs `body` to /v1/models/<name>:predict on one kept-alive connection; returns the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = f"/v1/models/{name}:predict"
    headers = {"Content-Type": "application/json"}

    def call() -> bytes:
        conn.request("POST", path, body, headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(
                f"REST predict on port {port} answered {answer.status}: {data[:300]}"
            )
        return data

    call.close = conn.close  # type: ignore[attr-defined]
    return call


def decode_rest(body: bytes) -> dict[str, np.ndarray]:
    """TF Serving's row format (`{"predictions": [{"<output>": ...}, ...]}`) as named batches."""
    rows = json.loads(body)["predictions"]
    return {name: np.asarray([row[name] for row in rows], dtype=np.float32) for name in rows[0]}


def check_answers(
    reference: dict[str, np.ndarray], answers: dict[str, dict[str, np.ndarray]]
) -> dict[str, float]:
    """The largest absolute difference of each path's answer from `reference`.

    Raises:
        AssertionError: a path names other outputs, or a value differs by more than the tolerance.
    """
    worst = {}
    for path, answer in answers.items():
        if sorted(answer) != sorted(reference):
            raise AssertionError(
                f"{path} answered outputs {sorted(answer)}, not {sorted(reference)}"
            )
        worst[path] = 0.0
        for name, expected in reference.items():
            got = np.asarray(answer[name], dtype=np.float32)
            if got.shape != expected.shape:
                raise AssertionError(
                    f"{path}, output {name}: shape {got.shape}, not {expected.shape}"
                )
            np.testing.assert_allclose(
                got, expected, rtol=RTOL, atol=ATOL, err_msg=f"{path}, output {name}"
            )
            worst[path] = max(worst[path], float(np.max(np.abs(got - expected))))
    return worst


def interleaved(
    calls: dict[str, Callable[[], object]], n: int, warmup: int
) -> dict[str, list[float]]:
    """Latencies of every call taken in turn, round after round, so drift hits all alike.

    Each round starts one path further along the list, so that no path always runs right after
    the same neighbour (and its caches, or its server's wake-up, never favour one side).
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            calls[name]()
            out[name].append(time.perf_counter() - start)
    return out


def run(model_dir: Path, name: str, signature: str, n: int, warmup: int, seed: int) -> dict:
    """Starts both servers, checks the five paths agree, then times them interleaved."""
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    import grpc
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    if not versions:
        raise SystemExit(f"no numeric version folder under {model_dir}; run `make served-models`")
    version_dir = model_dir / str(versions[-1])
    model = tf.saved_model.load(str(version_dir))
    fn = model.signatures[signature]
    alias, spec = next(iter(fn.structured_input_signature[1].items()))
    shape = [d if d is not None else 1 for d in spec.shape.as_list()]
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    image_t = tf.constant(image)
    reference = {k: v.numpy() for k, v in fn(**{alias: image_t}).items()}

    infer_request_type, infer_response_type = oip_messages()
    ours = Server(model_dir, name, None)
    theirs = KServeServer(version_dir, name, signature)
    channels, rest_calls = [], []
    try:
        ours_channel = grpc.insecure_channel(f"127.0.0.1:{ours.port}", options=GRPC_OPTIONS)
        kserve_channel = grpc.insecure_channel(
            f"127.0.0.1:{theirs.grpc_port}", options=GRPC_OPTIONS
        )
        channels += [ours_channel, kserve_channel]
        ours.wait(ours_channel)
        theirs.wait()

        predict = prediction_service_pb2_grpc.PredictionServiceStub(ours_channel).Predict
        predict_request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name=signature)
        )
        predict_request.inputs[alias].CopyFrom(tf.make_tensor_proto(image))
        model_infer = kserve_channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=infer_request_type.SerializeToString,
            response_deserializer=infer_response_type.FromString,
        )
        infer_request = infer_request_type(model_name=name)
        infer_request.inputs.add(name=alias, datatype="FP32", shape=shape)
        infer_request.raw_input_contents.append(image.tobytes())
        body = json.dumps({"instances": image.tolist()}).encode()
        ours_rest = rest_caller(ours.rest_port, name, body)
        kserve_rest = rest_caller(theirs.rest_port, name, body)
        rest_calls += [ours_rest, kserve_rest]

        def decode_infer(response) -> dict[str, np.ndarray]:
            return {
                out.name: np.frombuffer(raw, dtype=np.float32).reshape(list(out.shape))
                for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
            }

        calls = {
            "in_process": lambda: fn(**{alias: image_t}),
            "ours_grpc": lambda: predict(predict_request, timeout=60),
            "kserve_grpc": lambda: model_infer(infer_request, timeout=60),
            "ours_rest": ours_rest,
            "kserve_rest": kserve_rest,
        }
        decoders = {
            "in_process": lambda out: {k: v.numpy() for k, v in out.items()},
            "ours_grpc": lambda r: {k: tf.make_ndarray(v) for k, v in r.outputs.items()},
            "kserve_grpc": decode_infer,
            "ours_rest": decode_rest,
            "kserve_rest": decode_rest,
        }
        answers = {path: decoders[path](call()) for path, call in calls.items()}
        worst = check_answers(reference, answers)
        load_before = os.getloadavg()
        times = interleaved(calls, n, warmup)
        load_after = os.getloadavg()
    finally:
        for call in rest_calls:
            call.close()
        for channel in channels:
            channel.close()
        ours.stop()
        theirs.stop()

    return {
        "model": name,
        "version": versions[-1],
        "signature": signature,
        "input_shape": shape,
        "seed": seed,
        "n": n,
        "warmup": warmup,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "max_abs_diff": worst,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "paths": {path: percentiles(samples) for path, samples in times.items()},
    }


def main(argv=None) -> int:
    import argparse
    import sys

    import benchmarks.peers

    parser = argparse.ArgumentParser(
        description=benchmarks.peers.__doc__.splitlines()[0],
        epilog="Needs .venv-peers (`make peers`).",
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "unet")
    parser.add_argument("--name", default="unet", help="model name both servers serve it under")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--n", type=int, default=1000, help="timed rounds (samples per path)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=0, help="of the random input image")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "peers.json")
    args = parser.parse_args(argv)
    if args.n < 100 or args.warmup < 0:
        parser.error(
            f"--n must be at least 100 (for a p99) and --warmup >= 0, got {args.n}, {args.warmup}"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = run(args.model_dir, args.name, args.signature, args.n, args.warmup, args.seed)
    results["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(report(results))
    print(
        f"\nmodel {results['model']} v{results['version']}, input {results['input_shape']},"
        f" {args.n} rounds after {args.warmup} warm-up rounds; largest difference from the"
        f" in-process answer {max(results['max_abs_diff'].values()):.2e}"
        f" (tolerance rtol {RTOL}, atol {ATOL}); load average before"
        f" {results['load_average_before'][0]:.2f}, after {results['load_average_after'][0]:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    sys.stdout.flush()
    return 0
