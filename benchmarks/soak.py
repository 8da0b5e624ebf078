"""Soak: many clients calling the embedded server over gRPC and REST for a while; errors and RSS.

The server runs with `make serve`'s command line (the three slim models from `models/`,
batching and monitoring on) on free ports. `--clients` threads each loop over a mix of real
client calls for `--seconds`: a car segmented over gRPC, a shape localized over REST, digits
generated over gRPC, a model status over REST. It prints the calls, the errors (goal 0), the
latency p50/p99 per kind, and the server's resident memory after a warm-up and at the end
(goal: growth under 10%). Not part of `make test`.

Example:
    make served-models && python -m benchmarks.soak --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from client.api import ServingClient
from client.demo import INPUTS
from common.contract import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[1]
GOAL_ERRORS, GOAL_RSS_GROWTH = 0, 0.10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def _start_server(models: Path, log) -> tuple[subprocess.Popen, int, int]:
    port, rest_port = _free_port(), _free_port()
    flags = [
        f"--port={port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={ROOT / 'serving' / 'models.config'}",
        "--allow_version_labels_for_unavailable_models",
        f"--monitoring_config_file={ROOT / 'serving' / 'monitoring.config'}",
        "--enable_batching",
        f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}",
        f"--base_path_map=/models={models.resolve()}",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", *flags], cwd=ROOT, stdout=log, stderr=log
    )
    with ServingClient.grpc(f"127.0.0.1:{port}", timeout=5, fallback="never") as client:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}; see its log")
            try:
                if all(
                    any(v["state"] == "AVAILABLE" for v in client.status(m)) for m in MODEL_NAMES
                ):
                    return process, port, rest_port
            except Exception:  # not up yet
                time.sleep(0.5)
    raise TimeoutError("the server did not become ready in 300 s")


def _calls(port: int, rest_port: int):
    """The mix each client loops over: (kind, callable) pairs, each with its own connections."""
    car = (INPUTS / "car-1.jpg").read_bytes()
    shape = next(p for p in sorted(INPUTS.iterdir()) if p.name.startswith("shape-")).read_bytes()
    grpc_client = ServingClient.grpc(f"127.0.0.1:{port}", timeout=30, fallback="never")
    rest_client = ServingClient.rest(f"http://127.0.0.1:{rest_port}", timeout=30, fallback="never")
    seeds = iter(range(10**9))
    return [
        ("grpc segment", lambda: grpc_client.segment(car, version_label="stable")),
        ("rest localize", lambda: rest_client.localize(shape, version_label="stable")),
        ("grpc generate", lambda: grpc_client.generate(seeds=[next(seeds)])),
        ("rest status", lambda: rest_client.status("unet")),
    ], (grpc_client, rest_client)


def run(args) -> dict:
    log_path = Path(tempfile.gettempdir()) / f"soak-server-{os.getpid()}.log"
    with open(log_path, "w") as log:
        process, port, rest_port = _start_server(args.models, log)
        try:
            return _soak(args, process.pid, port, rest_port) | {"server_log": str(log_path)}
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)


def _soak(args, pid: int, port: int, rest_port: int) -> dict:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    stop = threading.Event()
    warm = threading.Barrier(args.clients + 1)

    def client_loop(index: int) -> None:
        calls, clients = _calls(port, rest_port)
        try:
            for _, call in calls:  # warm-up: every kind once, before RSS is first read
                call()
            warm.wait()
            i = index
            while not stop.is_set():
                kind, call = calls[i % len(calls)]
                i += 1
                started = time.perf_counter()
                try:
                    call()
                except Exception as error:  # every failure is counted, with its text
                    with lock:
                        errors[kind].append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    latencies[kind].append(time.perf_counter() - started)
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    warm.wait()
    rss_start = _rss_mib(pid)
    started = time.monotonic()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    rss_end = _rss_mib(pid)
    per_kind = {}
    for kind in sorted(set(latencies) | set(errors)):
        ms = np.array(latencies.get(kind, [])) * 1e3
        per_kind[kind] = {
            "calls": len(ms) + len(errors.get(kind, [])),
            "errors": len(errors.get(kind, [])),
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        }
    total_errors = sum(len(e) for e in errors.values())
    return {
        "clients": args.clients,
        "seconds": elapsed,
        "calls": sum(k["calls"] for k in per_kind.values()),
        "errors": total_errors,
        "error_samples": {kind: texts[:3] for kind, texts in errors.items() if texts},
        "per_kind": per_kind,
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": rss_end / rss_start - 1,
        "goals": {"errors": GOAL_ERRORS, "rss_growth": GOAL_RSS_GROWTH},
        "goals_met": total_errors <= GOAL_ERRORS and rss_end / rss_start - 1 < GOAL_RSS_GROWTH,
    }


def report(result: dict) -> str:
    lines = [
        f"soak: {result['clients']} clients x {result['seconds']:.0f} s, "
        f"{result['calls']} calls, {result['errors']} errors (goal {GOAL_ERRORS})",
        f"{'':16} {'calls':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    for kind, row in result["per_kind"].items():
        p50 = f"{row['p50_ms']:8.1f}" if row["p50_ms"] is not None else f"{'-':>8}"
        p99 = f"{row['p99_ms']:8.1f}" if row["p99_ms"] is not None else f"{'-':>8}"
        lines.append(f"{kind:16} {row['calls']:7d} {row['errors']:7d} {p50} {p99}")
    lines.append(
        f"server RSS: {result['rss_start_mib']:.0f} MiB after warm-up, "
        f"{result['rss_end_mib']:.0f} MiB at the end ({result['rss_growth']:+.1%}, goal < "
        f"{GOAL_RSS_GROWTH:.0%})"
    )
    for kind, samples in result["error_samples"].items():
        lines.append(f"  {kind} errors, e.g.: {samples[0]}")
    lines.append("goals met" if result["goals_met"] else "GOALS NOT MET")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="model base path")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "soak.json")
    args = parser.parse_args(argv)
    result = run(args)
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
