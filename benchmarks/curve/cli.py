"""`python -m benchmarks.curve`: the command line, the run, and the table, JSON and PNG."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import subprocess
from pathlib import Path

from benchmarks.curve import __doc__ as package_doc
from benchmarks.curve.inputs import load_request, random_inputs
from benchmarks.curve.openloop import ARRIVALS, run_curve
from benchmarks.curve.plot import plot_curve
from benchmarks.curve.senders import GrpcSender, RestSender
from benchmarks.curve.steps import P99_FACTOR, RATE_TOLERANCE, find_knee, lag_warnings, table
from client.errors import ClientError
from client.transports.grpc import GrpcTransport
from client.transports.rest import RestTransport
from client.transports.tls import add_tls_arguments, tls_from_args
from common.cli import Parser, fail, parse_args

PROG = "python -m benchmarks.curve"
ROOT = Path(__file__).resolve().parents[2]


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--rates {text!r}: expected numbers separated by commas") from None
    if any(not rate > 0 for rate in rates) or any(b <= a for a, b in itertools.pairwise(rates)):
        raise ValueError(f"--rates {text!r}: rates must be above 0 and rising, e.g. 10,20,40")
    return rates


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=package_doc.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT", help="the server's gRPC address")
    where.add_argument("--rest", metavar="URL", help="the server's REST base URL (http[s]://)")
    add = parser.add_argument
    add("--model", required=True, help="the served model's name")
    add("--signature", default="serving_default", help="signature (default: serving_default)")
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--version", type=int, help="call this version (default: the latest)")
    pin.add_argument("--label", help="call the version with this label (stable, canary, ...)")
    add(
        "--request",
        metavar="FILE.npz",
        help="inputs to send, one array per alias "
        "(default: a random valid input built from the model's metadata)",
    )
    add("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    add("--rates", default="5,10,20,40,80", help="the steps' rates, rising (default 5,10,20,40,80)")
    add("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    add("--warmup", type=float, default=2.0, help="seconds at the first rate first (default 2)")
    add("--arrivals", choices=ARRIVALS, default="poisson", help="gaps between requests")
    add("--timeout", type=float, default=10.0, help="deadline of each request (default 10 s)")
    add(
        "--max-in-flight",
        type=int,
        default=512,
        help="arrivals beyond this many waiting requests are counted NOT_SENT (default 512)",
    )
    add(
        "--keep-going",
        action="store_true",
        help="run every rate, even after a step achieves under half its offered rate",
    )
    add(
        "--knee-tolerance",
        type=float,
        default=RATE_TOLERANCE,
        help=f"a healthy step achieves this close to its offered rate (default {RATE_TOLERANCE})",
    )
    add(
        "--knee-p99-factor",
        type=float,
        default=P99_FACTOR,
        help="a healthy step's p99 is at most this times the lowest p99 of any step "
        f"(default {P99_FACTOR:g})",
    )
    add("--seed", type=int, default=0, help="seed of the arrivals and the random input")
    add("--note", default="", help="a note kept in the JSON and the plot's title")
    add(
        "--out",
        type=Path,
        help="JSON path; the PNG is written beside it "
        "(default out/bench/curve/<model>-<grpc|rest>.json)",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    add_tls_arguments(parser)
    return parser


def _check(args) -> list[float]:
    rates = _rates(args.rates)
    for flag, value, low in (("--seconds", args.seconds, 0), ("--timeout", args.timeout, 0)):
        if not value > low:
            raise ValueError(f"{flag} must be above {low}, not {value}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be 0 or more, not {args.warmup}")
    for flag, value in (("--batch", args.batch), ("--max-in-flight", args.max_in_flight)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, not {value}")
    if not 0 <= args.knee_tolerance < 1:
        raise ValueError(f"--knee-tolerance must be in [0, 1), not {args.knee_tolerance}")
    if not args.knee_p99_factor >= 1:
        raise ValueError(f"--knee-p99-factor must be 1 or more, not {args.knee_p99_factor}")
    if args.grpc is not None and (":" not in args.grpc or args.grpc.startswith("http")):
        raise ValueError(
            f"--grpc {args.grpc!r}: expected HOST:PORT, e.g. 127.0.0.1:8500 (--rest takes URLs)"
        )
    return rates


def _inputs(args, tls) -> dict:
    """The request's inputs: the --request file, else random ones from the served metadata."""
    if args.request is not None:
        return load_request(args.request)
    transport = (
        GrpcTransport(args.grpc, timeout=args.timeout, retries=0, tls=tls)
        if args.grpc is not None
        else RestTransport(args.rest, timeout=args.timeout, retries=0, tls=tls)
    )
    with transport:
        metadata = transport.metadata(args.model, version=args.version, label=args.label)
    return random_inputs(args.model, metadata, args.signature, batch=args.batch, seed=args.seed)


def _commit() -> str | None:
    """The checkout's HEAD, so the JSON says which code made it (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _sender(args, tls, inputs) -> GrpcSender | RestSender:
    spec = {"version": args.version, "label": args.label, "tls": tls}
    if args.grpc is not None:
        return GrpcSender(args.grpc, args.model, args.signature, inputs, **spec)
    return RestSender(args.rest, args.model, args.signature, inputs, **spec)


async def _run(args, rates, sender: GrpcSender | RestSender) -> list[dict]:
    try:
        return await run_curve(
            sender,
            rates,
            args.seconds,
            warmup=args.warmup,
            arrivals=args.arrivals,
            seed=args.seed,
            timeout=args.timeout,
            max_in_flight=args.max_in_flight,
            keep_going=args.keep_going,
            progress=not args.no_progress,
        )
    finally:
        await sender.close()


def _print_report(title: str, result: dict) -> None:
    steps, knee = result["steps"], result["knee"]
    print(title)
    print(table(steps, None if knee is None else knee["index"]))
    if knee is None:
        print("knee: none (the lowest rate's step is not healthy by the rule)")
    else:
        print(
            f"knee: {knee['rate_rps']:g} rps (achieved {knee['achieved_rps']:.1f}, "
            f"p99 {knee['p99_ms']:.1f} ms)"
        )
    for line in result["lag_warnings"]:
        print("warning: " + line)


def main(argv=None) -> int:
    """Runs the curve; 0 when it ran (errors from the server are figures), 1 when it could not
    start (metadata unreadable, a bad --request), 2 for a usage error."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        rates = _check(args)
        tls = tls_from_args(args)
        if args.rest is not None:
            RestTransport(args.rest, tls=tls).close()  # checks the URL (and the TLS files)
        if tls is not None:
            tls.ssl_context()  # reads and checks the files once, before anything is sent
    except (ValueError, ClientError) as error:
        return fail(PROG, error)
    try:
        inputs = _inputs(args, tls)
    except ClientError as error:
        return fail(
            PROG,
            f"cannot read the metadata of model {args.model!r} ({error}); is it "
            "served there? (--request FILE.npz needs no metadata)",
            1,
        )
    except ValueError as error:
        return fail(PROG, error, 1)
    try:
        sender = _sender(args, tls, inputs)
    except (ValueError, ClientError) as error:
        return fail(PROG, error, 1)
    transport = "grpc" if args.grpc is not None else "rest"
    steps = asyncio.run(_run(args, rates, sender))
    knee = find_knee(steps, args.knee_tolerance, args.knee_p99_factor)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "cpus": os.cpu_count(),
        "target": args.grpc or args.rest,
        "transport": transport,
        "model": args.model,
        "signature": args.signature,
        "version": args.version,
        "label": args.label,
        "request": args.request or f"random, batch {args.batch}",
        "arrivals": args.arrivals,
        "seconds_per_step": args.seconds,
        "warmup_s": args.warmup,
        "timeout_s": args.timeout,
        "note": args.note,
        "knee_rule": {"rate_tolerance": args.knee_tolerance, "p99_factor": args.knee_p99_factor},
        "knee": None if knee is None else steps[knee] | {"index": knee},
        "steps": steps,
        "lag_warnings": lag_warnings(steps),
    }
    title = f"{args.model}:{args.signature} over {'gRPC' if transport == 'grpc' else 'REST'}"
    _print_report(title + (f" ({args.note})" if args.note else ""), result)
    out = args.out or ROOT / "out" / "bench" / "curve" / f"{args.model}-{transport}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    picture = out.with_suffix(".png")
    plot_curve(steps, knee, title + (f"\n{args.note}" if args.note else ""), picture)
    print(f"wrote {out} and {picture}")
    return 0
