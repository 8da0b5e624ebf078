"""Serving benchmark: the embedded server against in-process calls of the same SavedModel signature.

Every figure is a ratio measured in one run, on one machine, with the same input:
- gRPC Predict latency (p50, p99) over in-process calls, batch 1: the faster of TF2's eager
  signature call and the Session callable the server runs (the same path as TF Serving's);
- REST :predict latency (the same float image as `{"instances": ...}` JSON, on a kept-alive
  connection) over gRPC (`tensor_content`), the three latencies taken in turn;
- throughput of 8 concurrent batch-1 clients, without and with `--enable_batching`, over
  in-process calls at batch 8;
- the floor of gRPC's overhead: a bare grpcio server in a process of its own (same grpcio, same
  thread-pool executor and message limits, no model, no TensorFlow) answers the same Predict
  request with the server's own answer, pre-serialized. Timed in turn with the others, it is
  what grpcio itself costs for this payload: gRPC's latency can only approach in-process + echo.
- where gRPC's time goes, from a gRPC-only run read against the server's own histograms: the
  model's run in the server (`runtime_latency`) against in-process, the server's Python around
  it (`request_latency` minus `runtime_latency`), and the rest, grpcio and loopback on both sides
  (client latency minus `request_latency`), to set beside the echo;
- CPU per call (this process and the server's, from the kernel's counters): a gRPC Predict, an
  echo, an in-process call, and per image in each throughput run. With both cores busy, items/s
  is cores over CPU per item, so batched / in-process can reach at most
  in-process CPU per image / (that + echo CPU per call): what grpcio costs on both ends.

Example:
    python -m benchmarks.serving_bench --model-dir models/unet --seconds 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def interleaved(calls: dict, n: int, warmup: int = 10) -> dict[str, list[float]]:
    """Latencies of several calls taken in turn, round after round."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            out[name].append(time.perf_counter() - start)
    return out


def _throughput(
    call, clients: int, seconds: float, per_call: int = 1, pid: int | None = None
) -> tuple[float, float]:
    """Items per second from `clients` threads calling `call` in a loop for `seconds`, and the
    CPU milliseconds per item of this process and (if given) process `pid` meanwhile."""
    done = [0] * clients
    stop = threading.Event()

    def worker(i):
        while not stop.is_set():
            call()
            done[i] += per_call

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    own = lambda: cpu_seconds() + (cpu_seconds(pid) if pid else 0.0)  # noqa: E731
    time.sleep(seconds * 0.2)  # ramp-up, not counted
    start_count, start, start_cpu = sum(done), time.perf_counter(), own()
    time.sleep(seconds)
    count, elapsed, cpu = sum(done) - start_count, time.perf_counter() - start, own() - start_cpu
    stop.set()
    for thread in threads:
        thread.join()
    return count / elapsed, cpu * 1e3 / max(count, 1)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by this process, or by process `pid`."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    # /proc/<pid>/stat: utime and stime are the 12th and 13th fields after the ")" of the name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpu_ms_per_call(call, n: int, pid: int | None = None) -> float:
    """CPU milliseconds per call of `call`, this process and (if given) process `pid` together."""
    own = lambda: cpu_seconds() + (cpu_seconds(pid) if pid else 0.0)  # noqa: E731
    start = own()
    for _ in range(n):
        call()
    return (own() - start) * 1e3 / n


# The server's histograms that split a gRPC Predict (model API, entrypoint or runtime labels).
_HISTOGRAMS = {
    "request": (":tensorflow:serving:request_latency", 'API="Predict",entrypoint="GRPC"'),
    "runtime": (":tensorflow:serving:runtime_latency", 'API="Predict"'),
}
METRICS_PATH = "/monitoring/prometheus/metrics"


def server_latency_totals(rest_port: int) -> dict[str, tuple[float, int]]:
    """(sum µs, count) of gRPC Predict's `request_latency` and of `runtime_latency`, so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}{METRICS_PATH}", timeout=60) as r:
        text = r.read().decode()
    totals = {}
    for key, (name, labels) in _HISTOGRAMS.items():
        total, count = 0.0, 0
        for line in text.splitlines():
            if line.startswith((f"{name}_sum{{", f"{name}_count{{")) and labels in line:
                value = float(line.rsplit(" ", 1)[1])
                if line.startswith(f"{name}_sum"):
                    total += value
                else:
                    count += int(value)
        totals[key] = (total, count)
    return totals


def _mean_ms(before, after, key: str) -> float:
    (total0, count0), (total1, count1) = before[key], after[key]
    if count1 == count0:
        raise RuntimeError(f"the server recorded no {key} latency; is monitoring on?")
    return (total1 - total0) / (count1 - count0) / 1e3


# The floor's server: grpcio's generic handler over raw bytes, answering every Predict with the
# bytes of a real PredictResponse. It imports neither TensorFlow nor the protos.
_ECHO_SERVER = """
import sys
from concurrent import futures
import grpc
port, answer_path, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with open(answer_path, "rb") as f:
    answer = f.read()
handler = grpc.method_handlers_generic_handler(
    "tensorflow.serving.PredictionService",
    {"Predict": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)},
)
server = grpc.server(
    futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
    handlers=[handler],
    options=[("grpc.max_receive_message_length", 2**31 - 1),
             ("grpc.max_send_message_length", 2**31 - 1), ("grpc.so_reuseport", 0)],
)
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
print("ready", flush=True)
server.wait_for_termination()
"""


class EchoServer:
    """The floor: a bare grpcio server answering Predict with pre-built bytes (`_ECHO_SERVER`).

    Its thread pool has the model server's default size (`--grpc_max_threads`, 4 per core).
    """

    def __init__(self, answer: bytes):
        self.port = _free_port()
        self.answer = tempfile.NamedTemporaryFile(suffix=".pb")  # noqa: SIM115 (closed in stop())
        self.answer.write(answer)
        self.answer.flush()
        threads = 4 * (os.cpu_count() or 1)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ECHO_SERVER, str(self.port), self.answer.name, str(threads)],
            stdout=subprocess.PIPE,
        )
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the echo server exited with status {self.process.wait()}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.answer.close()


class Server:
    """`python -m serving` for one model, run as a production deployment would run it."""

    def __init__(self, model_dir: Path, name: str, batching: Path | None, monitoring: bool = False):
        self.port, self.rest_port = _free_port(), _free_port()
        flags = [
            f"--port={self.port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_name={name}",
            f"--model_base_path={model_dir.resolve()}",
        ]
        if batching is not None:
            flags += ["--enable_batching", f"--batching_parameters_file={batching}"]
        # Prometheus metrics on the REST port (`server_latency_totals`), as TF Serving serves them.
        self.monitoring = tempfile.NamedTemporaryFile("w", suffix=".config")  # noqa: SIM115
        if monitoring:
            self.monitoring.write(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
            self.monitoring.flush()
            flags.append(f"--monitoring_config_file={self.monitoring.name}")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", *flags], cwd=ROOT, stdout=self.log, stderr=self.log
        )

    def wait(self, channel, timeout: float = 180.0) -> None:
        import grpc
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        probe = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="missing"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited:\n{self.log.read().decode()[-3000:]}")
            try:
                stub.Predict(probe, timeout=1)
            except grpc.RpcError as error:
                if "Servable" in (error.details() or ""):
                    return
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()
        self.monitoring.close()


def grpc_breakdown(
    in_process, grpc_call, echo_call, n: int, server_pid: int, echo_pid: int, rest_port: int
) -> dict:
    """Where a gRPC Predict's time goes, and CPU per call of each path (see the docstring).

    The server's histograms are read around a run of gRPC and in-process calls taken in turn,
    so they hold those gRPC calls alone; means, since histograms keep no percentiles.
    """
    before = server_latency_totals(rest_port)
    samples = interleaved({"in_process": in_process, "grpc": grpc_call}, n, warmup=0)
    after = server_latency_totals(rest_port)
    local, client = (statistics.fmean(samples[key]) * 1e3 for key in ("in_process", "grpc"))
    runtime, request = _mean_ms(before, after, "runtime"), _mean_ms(before, after, "request")
    return {
        "mean_ms": {
            "in_process": local,
            "server_runtime": runtime,
            "server_request": request,
            "grpc_client": client,
        },
        "model_in_server_over_in_process_ms": runtime - local,
        "server_python_ms": request - runtime,
        "grpcio_and_loopback_ms": client - request,
        "cpu_ms_per_call": {
            "in_process": cpu_ms_per_call(in_process, n),
            "grpc": cpu_ms_per_call(grpc_call, n, server_pid),
            "grpc_echo": cpu_ms_per_call(echo_call, n, echo_pid),
        },
    }


def run(args) -> dict:
    from common.quiet import import_tensorflow

    tf = import_tensorflow()
    import grpc
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

    versions = sorted(int(p.name) for p in args.model_dir.iterdir() if p.name.isdigit())
    if not versions:
        raise SystemExit(f"no numeric version folder under {args.model_dir}; run `make serve` once")
    path = args.model_dir / str(versions[-1])
    from serving.servables.saved_model import load_servable

    # Two in-process references: TF2's eager signature call and the Session callable that the
    # server (like TF Serving) runs. The faster of the two is the baseline of every ratio.
    signature = tf.saved_model.load(str(path)).signatures[args.signature]
    servable = load_servable(args.name, versions[-1], path)
    alias, spec = next(iter(signature.structured_input_signature[1].items()))
    shape = [d if d is not None else 1 for d in spec.shape.as_list()]
    rng = np.random.default_rng(0)
    one = rng.random(shape, dtype=np.float32)
    batch = np.repeat(one, args.clients, axis=0)
    one_t, batch_t = tf.constant(one), tf.constant(batch)
    print(f"model {args.name} v{versions[-1]}, signature {args.signature}, input {alias} {shape}")

    results: dict = {"model": args.name, "input_shape": shape, "clients": args.clients}

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=args.name, signature_name=args.signature)
    )
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(one))
    body = json.dumps({"signature_name": args.signature, "instances": one.tolist()}).encode()
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]

    for label, batching in (("plain", None), ("batching", args.batching_config)):
        server = Server(args.model_dir, args.name, batching, monitoring=batching is None)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options)
        try:
            server.wait(channel)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def grpc_call(stub=stub):
                stub.Predict(request, timeout=60)

            # One kept-alive connection, as any real REST client holds (a new TCP connection
            # per call would time urllib and the handshake, not serving).
            rest_connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
            path = f"/v1/models/{args.name}:predict"

            def rest_call(conn=rest_connection, path=path):
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"REST predict answered {answer.status}")

            if batching is None:
                # The floor answers with the server's own answer to this request.
                echo = EchoServer(stub.Predict(request, timeout=60).SerializeToString())
                echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo.port}", options=options)
                echo_stub = prediction_service_pb2_grpc.PredictionServiceStub(echo_channel)
                # Interleaved, so that drift on a shared machine hits every path alike.
                calls = {
                    "in_process_eager": lambda: signature(**{alias: one_t}),
                    "in_process_session": lambda: servable.run(args.signature, {alias: one}),
                    "grpc": grpc_call,
                    "rest": rest_call,
                    "grpc_echo": lambda stub=echo_stub: stub.Predict(request, timeout=60),
                }
                try:
                    times = interleaved(calls, args.n)
                    fastest = min(
                        ("in_process_eager", "in_process_session"),
                        key=lambda k: float(np.percentile(times[k], 50)),
                    )
                    results["breakdown"] = grpc_breakdown(
                        calls[fastest],
                        grpc_call,
                        calls["grpc_echo"],
                        max(args.n // 2, 20),
                        server.process.pid,
                        echo.process.pid,
                        server.rest_port,
                    )
                finally:
                    echo_channel.close()
                    echo.stop()
                for key, samples in times.items():
                    results[key] = _percentiles(samples)
                results["in_process"] = {**results[fastest], "path": fastest}
                batch_call = {
                    "in_process_eager": lambda: signature(**{alias: batch_t}),
                    "in_process_session": lambda: servable.run(args.signature, {alias: batch}),
                }[fastest]
            # The in-process reference is taken right before each served run (the server idle),
            # so both sides of a ratio see the same machine state.
            # Rounds alternate so slow drift of this shared machine hits both sides alike.
            local, served = [], []
            for _ in range(args.rounds):
                seconds = args.seconds / args.rounds
                local.append(_throughput(batch_call, 1, seconds, per_call=args.clients))
                served.append(_throughput(grpc_call, args.clients, seconds, pid=server.process.pid))
            results[f"in_process_batched_ips_{label}"] = statistics.median(x for x, _ in local)
            results[f"grpc_{label}_ips"] = statistics.median(x for x, _ in served)
            # CPU per image, this process and the server's: the in-process side is the model
            # alone, the served side adds gRPC on both ends (and the 8 clients' threads).
            results[f"in_process_batched_cpu_ms_per_image_{label}"] = statistics.median(
                c for _, c in local
            )
            results[f"grpc_{label}_cpu_ms_per_image"] = statistics.median(c for _, c in served)
            # Round by round, to show the spread of the ratio on this shared machine.
            results[f"{label}_over_in_process_batched_rounds"] = [
                s / x for (s, _), (x, _) in zip(served, local, strict=True)
            ]
        finally:
            channel.close()
            rest_connection.close()
            server.stop()

    echo = results["grpc_echo"]
    model_cpu = results["in_process_batched_cpu_ms_per_image_batching"]
    ratios = {
        "grpc_over_in_process_p50": results["grpc"]["p50_ms"] / results["in_process"]["p50_ms"],
        "grpc_over_in_process_p99": results["grpc"]["p99_ms"] / results["in_process"]["p99_ms"],
        # What gRPC's ratio would be if the server added nothing to grpcio's own cost.
        "grpc_floor_over_in_process_p50": (results["in_process"]["p50_ms"] + echo["p50_ms"])
        / results["in_process"]["p50_ms"],
        "grpc_floor_over_in_process_p99": (results["in_process"]["p99_ms"] + echo["p99_ms"])
        / results["in_process"]["p99_ms"],
        "rest_over_grpc_p50": results["rest"]["p50_ms"] / results["grpc"]["p50_ms"],
        "rest_over_grpc_p99": results["rest"]["p99_ms"] / results["grpc"]["p99_ms"],
        "unbatched_over_in_process_batched": results["grpc_plain_ips"]
        / results["in_process_batched_ips_plain"],
        "batched_over_in_process_batched": results["grpc_batching_ips"]
        / results["in_process_batched_ips_batching"],
        # With both cores busy, the best batched / in-process: the model's CPU per image over
        # that plus what grpcio alone costs per call on both ends (the echo's CPU).
        "batched_floor_over_in_process_batched": model_cpu
        / (model_cpu + results["breakdown"]["cpu_ms_per_call"]["grpc_echo"]),
    }
    results["ratios"] = ratios
    return results


def report(results: dict) -> str:
    ip, g, r = results["in_process"], results["grpc"], results["rest"]
    e, b = results["grpc_echo"], results["breakdown"]
    ratios = results["ratios"]
    n = results["clients"]
    in_process_ips = (
        results["in_process_batched_ips_plain"] + results["in_process_batched_ips_batching"]
    ) / 2
    mean, cpu = b["mean_ms"], b["cpu_ms_per_call"]
    rounds = results["batching_over_in_process_batched_rounds"]
    lines = [
        f"{'':34}{'p50 ms':>10}{'p99 ms':>10}",
        f"{'in-process, eager signature':34}{results['in_process_eager']['p50_ms']:10.2f}"
        f"{results['in_process_eager']['p99_ms']:10.2f}",
        f"{'in-process, Session callable':34}{results['in_process_session']['p50_ms']:10.2f}"
        f"{results['in_process_session']['p99_ms']:10.2f}",
        f"{'in-process baseline (the faster)':34}{ip['p50_ms']:10.2f}{ip['p99_ms']:10.2f}",
        f"{'gRPC Predict':34}{g['p50_ms']:10.2f}{g['p99_ms']:10.2f}",
        f"{'REST :predict (JSON)':34}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}",
        f"{'bare grpcio echo (no model)':34}{e['p50_ms']:10.2f}{e['p99_ms']:10.2f}",
        "",
        f"where a gRPC Predict goes (means, ms; in-process {mean['in_process']:.2f}, "
        f"gRPC {mean['grpc_client']:.2f}):",
        f"  model run in the server - in-process   {b['model_in_server_over_in_process_ms']:+.2f}",
        f"  server Python around the run           {b['server_python_ms']:+.2f}",
        f"  grpcio + loopback, both ends           {b['grpcio_and_loopback_ms']:+.2f}"
        f"  (echo p50 {e['p50_ms']:.2f})",
        f"CPU ms per call (client + server): gRPC {cpu['grpc']:.2f}, in-process "
        f"{cpu['in_process']:.2f}, echo {cpu['grpc_echo']:.2f}",
        "",
        f"throughput, {results['clients']} clients (images/s; CPU ms per image):",
        f"  in-process, batch {n}:        {in_process_ips:8.1f}  (mean of two runs; "
        f"{results['in_process_batched_cpu_ms_per_image_batching']:.2f})",
        f"  gRPC, no batching:            {results['grpc_plain_ips']:8.1f}  "
        f"({results['grpc_plain_cpu_ms_per_image']:.2f})",
        f"  gRPC, --enable_batching:      {results['grpc_batching_ips']:8.1f}  "
        f"({results['grpc_batching_cpu_ms_per_image']:.2f})",
        "",
        "ratios (goal; floor):",
        f"  gRPC / in-process p50         {ratios['grpc_over_in_process_p50']:.3f}  (<= 1.10; "
        f"in-process + echo {ratios['grpc_floor_over_in_process_p50']:.3f})",
        f"  gRPC / in-process p99         {ratios['grpc_over_in_process_p99']:.3f}  (<= 1.10; "
        f"in-process + echo {ratios['grpc_floor_over_in_process_p99']:.3f})",
        f"  REST / gRPC p50               {ratios['rest_over_grpc_p50']:.3f}  (<= 1.3)",
        f"  REST / gRPC p99               {ratios['rest_over_grpc_p99']:.3f}",
        f"  unbatched / in-process batch  {ratios['unbatched_over_in_process_batched']:.3f}",
        f"  batched / in-process batch    {ratios['batched_over_in_process_batched']:.3f}"
        f"  (>= 0.95; echo CPU {ratios['batched_floor_over_in_process_batched']:.3f}; rounds "
        f"{min(rounds):.3f}..{max(rounds):.3f})",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "unet")
    parser.add_argument("--name", default="unet", help="model name to serve it under")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--n", type=int, default=200, help="latency samples per path")
    parser.add_argument("--seconds", type=float, default=24.0, help="per throughput run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument(
        "--batching-config", type=Path, default=ROOT / "benchmarks" / "batching.config"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "serving.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = run(args)
    print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
