"""Canary rollouts on any TF Serving, gated on how the canary answers: `python -m serving.rollout`.

Example:
    python -m serving.rollout --server 127.0.0.1:8500 --config serving/models.config \\
        --base_path_map /models=models auto unet 2
    python -m serving.rollout --server serving:8500 --ca ca.pem --cert me.pem --key me.key \\
        --config serving/models.config status

Commands: status, canary M V, verify M, promote M, rollback M, abort M, auto M V, webhook
(the gates over HTTP for Flagger: POST /gate; see serving/rollout/webhook.py). `verify`
sends a golden set to the `stable` and `canary` labels and applies the gates of gates.toml;
`promote` runs the same gates first (--force skips them); `auto` is canary, gates, then promote,
or abort (unlabel and unload the canary) when a gate fails. Clients should ask for the `stable`
label: an unlabelled request gets the highest AVAILABLE version, which is the canary while one is
loaded.

Operators take turns: a command that edits the config holds a lock beside it (another one waits
up to --lock_timeout s, then gives up in one line), edits it in place (comments kept; a symlink
such as a ConfigMap's is followed), and refuses to write over a change made since it read the
file. Exit status 3: a step timed out while the server was still applying it; the file keeps the
new config and nothing was restored (`status` shows how it ends).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

import grpc

from client.errors import ClientError
from client.transports.tls import add_tls_arguments, tls_from_args
from common.cli import Parser, fail, parse_args
from serving.rollout import config_edit as rc
from serving.rollout.control import Rollout, one_line
from serving.rollout.verify import Options, Verification, check_options, verify

PROG = "python -m serving.rollout"
GATES_HELP = """\
gates (verify, promote, auto): every golden item goes to `stable` and `canary` in turn, in
rounds, timed; the gates compare the answers (agreement, and against truth or the judge) and
the latencies. Latency p50/p99 per version come from these timed requests, because TF Serving's
metrics carry no version label (--prometheus URL: from the embedded server's per-version
histogram in that Prometheus, over the same requests); the server's error rate over the window
comes from its Prometheus request_count (--monitoring_config_file), which counts both versions
together.
Thresholds: serving/rollout/gates.toml (override with --gates). Exit status: 0 passed (and
promoted), 1 a gate failed (auto: rolled back; promote: refused) or the server failed, 2 a
usage error or refusal (also: the config changed meanwhile, or its lock stayed held), 3 a step
timed out while the server was still applying it (the file keeps it; see `status`)."""


def format_table(report: dict) -> str:
    """The status report as a fixed-width table."""
    lines = [f"{'MODEL':<16} {'VERSION':>7}  {'STATE':<11} {'LABELS':<16} ERROR"]
    for model, info in report.items():
        if not info["versions"]:
            lines.append(f"{model:<16} {'-':>7}  {'NOT_FOUND':<11} {'':<16}")
        for row in info["versions"]:
            labels = ",".join(row["labels"])
            lines.append(
                f"{model:<16} {row['version']:>7}  {row['state']:<11} {labels:<16} {row['error']}"
            )
        lines.append(f"{'':<16} policy {info['policy']}, labels {info['labels'] or '{}'}")
    return "\n".join(line.rstrip() for line in lines)


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that run the gates."""
    add = parser.add_argument
    add("--kind", help="the model's registry kind when its name is not one (unet, ...)")
    add("--golden", metavar="DIR", help="golden folder (images + masks/ or labels.csv; seeds.json)")
    add(
        "--replay",
        metavar="DIR",
        help="request logs (a logging_config's *.tfrecord files): the newest logged Predict "
        "requests for the model are the golden set (no truth: agreement and judge gates only)",
    )
    add("--gates", metavar="FILE", help="TOML overriding serving/rollout/gates.toml")
    add("--monitoring_config_file", metavar="FILE", help="the server's, to read its metrics")
    add("--rest_api_port", type=int, default=8501, help="REST port serving the metrics")
    add("--shadow", metavar="FILE", help="shadow-mode records (client shadow_log) to summarise")
    add(
        "--prometheus",
        metavar="URL",
        help="a Prometheus scraping the embedded server: latency per version from its "
        "serving_embedded_version_request_latency (not on real TF Serving)",
    )
    add("--out", metavar="DIR", help="write the report picture verify-MODEL.png here")


def seconds(text: str) -> float:
    """A finite, non-negative number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected finite seconds >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The rollout CLI's argument parser."""
    p = Parser(
        prog=PROG,
        description="Canary rollouts through gRPC ModelService, gated on the canary's answers.",
        epilog=GATES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", required=True, help="gRPC HOST:PORT of the model server")
    p.add_argument("--config", required=True, help="the server's --model_config_file")
    p.add_argument("--timeout", type=seconds, default=60.0, help="seconds per RPC and per wait")
    p.add_argument(
        "--lock_timeout",
        type=seconds,
        default=30.0,
        help="seconds to wait while another operator holds the config's lock (default 30)",
    )
    p.add_argument("--base_path_map", default="", help="PREFIX=DIR: where config paths live here")
    p.add_argument("--json", action="store_true", help="status and gate reports as JSON")
    add_tls_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="versions, states and labels").add_argument("model", nargs="?")
    canary = sub.add_parser("canary", help="load VERSION beside stable, label it canary")
    canary.add_argument("model")
    canary.add_argument("version", type=int)
    gated = {"epilog": GATES_HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}
    check = sub.add_parser("verify", help="run the gates: canary against stable", **gated)
    check.add_argument("model")
    add_gate_options(check)
    promote = sub.add_parser("promote", help="run the gates, then stable takes the canary", **gated)
    promote.add_argument("model")
    promote.add_argument("--force", action="store_true", help="promote without the gates")
    add_gate_options(promote)
    sub.add_parser("rollback", help="stable goes back to the previous one").add_argument("model")
    sub.add_parser("abort", help="unlabel the canary and unload it").add_argument("model")
    auto = sub.add_parser("auto", help="canary VERSION, gates, then promote or abort", **gated)
    auto.add_argument("model")
    auto.add_argument("version", type=int)
    add_gate_options(auto)
    hook = sub.add_parser("webhook", help="serve the gates over HTTP for Flagger", **gated)
    hook.add_argument(
        "--listen", default="0.0.0.0:8080", help="HOST:PORT to serve on (default 0.0.0.0:8080)"
    )
    hook.add_argument(
        "--read_timeout",
        type=seconds,
        default=10.0,
        help="seconds for a request's head and body to arrive (default 10)",
    )
    add_gate_options(hook)
    return p


def _options(args: argparse.Namespace) -> Options:
    return Options(
        kind=args.kind,
        golden=args.golden,
        gates=args.gates,
        monitoring_config=args.monitoring_config_file,
        rest_port=args.rest_api_port,
        shadow=args.shadow,
        out=args.out,
        replay=args.replay,
        prometheus=args.prometheus,
    )


def _report(result: Verification, args, steps: list[str], outcome: str) -> None:
    """Prints the gate report and the steps taken (one JSON object with --json), and writes the
    picture with --out."""
    from pathlib import Path

    from serving.rollout import report

    picture = None
    if args.out:
        picture = report.write_picture(result, Path(args.out) / f"verify-{result.model}.png")
    if args.json:
        data = {**report.to_json(result), "outcome": outcome, "steps": steps}
        if picture is not None:
            data["picture"] = str(picture)
        print(json.dumps(data, indent=2))
        return
    print(report.format_verification(result))
    if picture is not None:
        print(f"report picture: {picture}")
    for step in steps[1:] if args.command == "auto" else steps:  # auto printed its canary step
        print(step)


def _gated(tool: Rollout, args, tls) -> int:
    """verify, promote and auto: 0 passed (and promoted), 1 a gate failed."""
    options = _options(args)
    if args.command == "promote" and args.force:
        print(tool.promote(args.model))
        return 0
    steps: list[str] = []
    if args.command == "auto":
        check_options(args.model, options, args.server, tls)  # refuse before loading anything
        steps.append(tool.canary(args.model, args.version))
        if not args.json:
            print(steps[-1], flush=True)
    try:
        result = verify(tool, args.server, tls, args.model, options, args.timeout, args.command)
    except BaseException as error:
        if args.command != "auto":
            raise
        tool.drop_canary(args.model)  # whatever stopped the check, the canary does not stay
        if isinstance(error, ClientError):  # e.g. a canary whose signatures break the contract
            why = f"{error.code}: {one_line(error.message)}"
        elif isinstance(error, rc.ServerError):
            why = str(error)
        else:
            raise
        raise rc.ServerError(
            f"auto: {args.model} version {args.version} rolled back: {why}"
        ) from None
    canary, why = result.versions[rc.CANARY], result.first_failure()
    if result.passed:
        if args.command != "verify":
            steps.append(tool.promote(args.model))
        _report(result, args, steps, "passed" if args.command == "verify" else "promoted")
        return 0
    if args.command == "auto":
        steps.append(tool.drop_canary(args.model))
        outcome, message = "rolled back", f"auto: {args.model} version {canary} rolled back: {why}"
    elif args.command == "promote":
        outcome = "refused"
        message = f"promote: {args.model} version {canary} refused: {why}; --force promotes anyway"
    else:
        outcome, message = "failed", f"verify: {args.model} version {canary} fails {why}"
    _report(result, args, steps, outcome)
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _webhook(tool: Rollout, args, tls) -> int:
    """Serves POST /gate (Flagger's webhook) and GET /healthz until stopped."""
    from serving.rollout import webhook

    try:
        host, port = webhook.parse_listen(args.listen)
    except ValueError as error:
        return fail(PROG, error)
    if args.read_timeout <= 0:
        return fail(PROG, f"--read_timeout must be above 0 s, got {args.read_timeout:g}")
    options = _options(args)
    webhook.check_startup(options, args.server, tls)
    service = webhook.GateService(tool, args.server, tls, options, args.timeout)
    return webhook.serve(service, host, port, args.read_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the rollout CLI; 0 done (or promoted), 1 a gate or the server failed, 2 refused or
    bad usage, 3 a step timed out while the server was still applying it."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.base_path_map and "=" not in args.base_path_map:
        return fail(PROG, "--base_path_map expects PREFIX=DIR")
    try:
        tls = tls_from_args(args)
        tool = Rollout(
            args.server, args.config, args.timeout, args.base_path_map, tls, args.lock_timeout
        )
    except ClientError as error:  # a TLS file that cannot be used
        return fail(PROG, error.message)
    try:
        if args.command == "status":
            report = tool.status(args.model)
            print(json.dumps(report, indent=2) if args.json else format_table(report))
        elif args.command == "auto":  # one lock from the canary to the promote or the abort
            with tool.locked(f"auto {args.model} {args.version}"):
                return _gated(tool, args, tls)
        elif args.command in ("verify", "promote"):
            return _gated(tool, args, tls)
        elif args.command == "webhook":
            return _webhook(tool, args, tls)
        elif args.command == "canary":
            print(tool.canary(args.model, args.version))
        elif args.command == "abort":
            print(tool.drop_canary(args.model))
        else:
            print(getattr(tool, args.command)(args.model))
    except (rc.RefusalError, rc.ServerError, rc.InDoubtError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return {rc.RefusalError: 2, rc.InDoubtError: 3}.get(type(error), 1)
    except grpc.RpcError as error:
        print(f"{PROG}: {error.code().name}: {one_line(error.details() or '')}", file=sys.stderr)
        return 1
    except ClientError as error:  # a Predict or metadata call of the gates
        print(f"{PROG}: {error.code}: {one_line(error.message)}", file=sys.stderr)
        return 1
    except OSError as error:  # an unwritable config folder
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    finally:
        tool.channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
