"""Canary rollouts on any TF Serving over gRPC ModelService: status, canary, promote, rollback.

Example:
    python -m serving.rollout --server 127.0.0.1:8500 --config serving/models.config \\
        --base_path_map /models=models canary unet 2
    python -m serving.rollout --server serving:8500 --ca ca.pem --cert me.pem --key me.key \\
        --config serving/models.config status

Clients should ask for the `stable` label: an unlabelled request gets the highest AVAILABLE
version, which is the canary while one is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from client.errors import ClientError
from client.tls import TLSFiles, add_tls_arguments, grpc_channel, tls_from_args
from common.cli import Parser, fail, parse_args
from common.quiet import import_tensorflow

import_tensorflow()  # tensorflow_serving's protos import TensorFlow: keep its banner off stderr
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)

from serving.config.files import map_base_paths  # noqa: E402
from serving.rollout import config_edit as rc  # noqa: E402

PROG = "python -m serving.rollout"
State = get_model_status_pb2.ModelVersionStatus.State
POLL_S = 0.1


class Rollout:
    """One server and its config file: every change is written to the file, then reloaded.

    Args:
        server: gRPC HOST:PORT of the model server.
        config_path: The server's `--model_config_file`.
        timeout: Seconds allowed for each RPC and for each wait on a version's state.
        base_path_map: PREFIX=DIR, to find on this machine the versions of container paths.
        tls: CA, client certificate and key for a TLS channel (`client.tls`), or None.

    Raises:
        ClientError: BAD_INPUT for a TLS file that is missing or not PEM.
    """

    def __init__(
        self,
        server: str,
        config_path: str,
        timeout: float,
        base_path_map: str = "",
        tls: TLSFiles | None = None,
    ):
        self.config_path, self.timeout, self.base_path_map = config_path, timeout, base_path_map
        self.channel = grpc_channel(server, tls)
        self.stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def statuses(self, name: str, version: int | None = None) -> list:
        """GetModelStatus entries (empty when the server has never seen the model/version)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        try:
            return list(
                self.stub.GetModelStatus(request, timeout=self.timeout).model_version_status
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise

    def apply(self, config: rc.ModelServerConfig) -> None:
        """Writes the config file atomically, then HandleReloadConfigRequest with it.

        The file goes first so that a server polling the file never re-applies an older config;
        if the server rejects the reload, the old file is put back.
        """
        old = Path(self.config_path).read_text(encoding="utf-8")
        rc.write_config(self.config_path, config)
        request = model_management_pb2.ReloadConfigRequest(config=config)
        try:
            response = self.stub.HandleReloadConfigRequest(request, timeout=self.timeout)
            if response.status.error_code != 0:
                code = _code_name(response.status.error_code)
                raise rc.ServerError(f"{code}: {_one_line(response.status.error_message)}")
        except BaseException:
            rc._atomic_write(Path(self.config_path), old)
            raise

    def ended(self, name: str, version: int) -> bool:
        """Whether the server's history shows `version` in END (unloaded or failed)."""
        return any(s.state == State.END for s in self.statuses(name, version))

    def wait_available(self, name: str, version: int, ended_before: bool = False) -> None:
        """Polls until `version` is AVAILABLE.

        Args:
            name: The model name.
            version: The version to wait for.
            ended_before: It was in END before the load was asked for: that stale END counts
                only once another state was seen (or at the timeout).

        Raises:
            rc.ServerError: It reached END (its error as the message) or the timeout passed.
        """
        restarted = not ended_before
        deadline = time.monotonic() + self.timeout
        last = "never seen by the server"
        while time.monotonic() < deadline:
            for entry in self.statuses(name, version):
                if entry.state == State.AVAILABLE:
                    return
                if entry.state == State.END:
                    last = entry.status.error_message or "unloaded before it was available"
                    if restarted:
                        raise rc.ServerError(_one_line(last))
                else:
                    restarted, last = True, f"still {State.Name(entry.state)}"
            time.sleep(POLL_S)
        raise rc.ServerError(_one_line(f"not AVAILABLE after {self.timeout:g} s ({last})"))

    def wait_gone(self, name: str, versions: set[int]) -> None:
        """Polls until none of `versions` is AVAILABLE or UNLOADING any more."""
        deadline = time.monotonic() + self.timeout
        while versions and time.monotonic() < deadline:
            live = {s.version for s in self.statuses(name) if s.state != State.END}
            if not live & versions:
                return
            time.sleep(POLL_S)
        if versions:
            raise rc.ServerError(f"{name} versions {sorted(versions)} still loaded")

    def load_or_restore(self, config, step, name: str, version: int, verb: str) -> None:
        """Applies `step`, waits for `version`; on failure restores `config` and raises."""
        ended_before = self.ended(name, version)
        self.apply(step)
        try:
            self.wait_available(name, version, ended_before)
        except rc.ServerError as error:
            self.apply(config)
            raise rc.ServerError(
                f"{verb}: {name} version {version} failed to load: {error}"
            ) from None

    def prune(self, config, name: str) -> None:
        """Applies the config with only labelled versions aspired; waits for the rest to go."""
        pruned = rc.prune(config, name)
        if pruned != config:
            self.apply(pruned)
            kept = set(rc.labels_of(pruned, name).values())
            self.wait_gone(name, {s.version for s in self.statuses(name)} - kept)

    def on_disk(self, config, name: str, version: int) -> None:
        """Refuses unless `<base_path>/<version>` exists here (after --base_path_map)."""
        base = rc.model_config(map_base_paths(config, self.base_path_map), name).base_path
        if not (Path(base) / str(version)).is_dir():
            raise rc.RefusalError(
                f"version {version} of {name} not found on disk at {base}/{version}"
            )

    def status(self, name: str | None) -> dict:
        """Model -> {policy, labels, versions: [{version, state, labels, error}]}."""
        config = rc.read_config(self.config_path)
        names = [name] if name else [m.name for m in config.model_config_list.config]
        report = {}
        for model in names:
            labels = rc.labels_of(config, model)
            rows = [
                {
                    "version": s.version,
                    "state": State.Name(s.state),
                    "labels": sorted(k for k, v in labels.items() if v == s.version),
                    "error": _one_line(s.status.error_message),
                }
                for s in self.statuses(model)
            ]
            policy = rc.describe_policy(config, model)
            report[model] = {"policy": policy, "labels": labels, "versions": rows}
        return report

    def canary(self, name: str, version: int) -> str:
        config = rc.read_config(self.config_path)
        labels = rc.labels_of(config, name)
        self.on_disk(config, name, version)
        stable = labels.get(rc.STABLE)
        if stable is None:
            available = [s.version for s in self.statuses(name) if s.state == State.AVAILABLE]
            if not available:
                raise rc.RefusalError(
                    f"canary: {name} has no stable label and no AVAILABLE version"
                )
            stable = max(available)
        step = rc.canary_load(config, name, version, stable)
        self.load_or_restore(config, step, name, version, "canary")
        step = rc.with_label(step, name, rc.CANARY, version)
        self.apply(step)
        self.prune(step, name)
        return f"canary: {name} stable={stable} canary={version}"

    def promote(self, name: str) -> str:
        config = rc.read_config(self.config_path)
        step, previous = rc.promote_labels(config, name)
        new = rc.labels_of(step, name)[rc.STABLE]
        if not any(s.state == State.AVAILABLE for s in self.statuses(name, new)):
            raise rc.RefusalError(f"promote: canary version {new} of {name} is not AVAILABLE")
        self.apply(step)  # both versions still loaded while the label moves
        sidecar = rc.read_sidecar(self.config_path)
        if previous is not None and previous != new:
            sidecar[name] = {"previous_stable": previous}
            rc.write_sidecar(self.config_path, sidecar)
        self.prune(step, name)
        return f"promote: {name} stable={new} (previous {previous})"

    def rollback(self, name: str) -> str:
        config = rc.read_config(self.config_path)
        rc.model_config(config, name)
        sidecar = rc.read_sidecar(self.config_path)
        previous = sidecar.get(name, {}).get("previous_stable")
        if not isinstance(previous, int):
            raise rc.RefusalError(
                f"rollback: {name} has no previous stable version; nothing to roll back"
            )
        step = rc.rollback_load(config, name, previous)
        self.on_disk(config, name, previous)
        self.load_or_restore(config, step, name, previous, "rollback")
        current = rc.labels_of(step, name)[rc.STABLE]
        step = rc.with_label(step, name, rc.STABLE, previous)
        self.apply(step)
        del sidecar[name]
        rc.write_sidecar(self.config_path, sidecar)
        self.prune(step, name)
        return f"rollback: {name} stable={previous} (was {current})"


def _code_name(value: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == value), str(value))


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def build_parser() -> argparse.ArgumentParser:
    """The rollout CLI's argument parser."""
    p = Parser(prog=PROG, description="Canary rollouts through gRPC ModelService.")
    p.add_argument("--server", required=True, help="gRPC HOST:PORT of the model server")
    p.add_argument("--config", required=True, help="the server's --model_config_file")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per RPC and per wait")
    p.add_argument("--base_path_map", default="", help="PREFIX=DIR: where config paths live here")
    p.add_argument("--json", action="store_true", help="status as JSON")
    add_tls_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="versions, states and labels").add_argument("model", nargs="?")
    canary = sub.add_parser("canary", help="load VERSION beside stable, label it canary")
    canary.add_argument("model")
    canary.add_argument("version", type=int)
    sub.add_parser("promote", help="stable takes the canary's version").add_argument("model")
    sub.add_parser("rollback", help="stable goes back to the previous one").add_argument("model")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the rollout CLI; 0 done, 1 server error, 2 refused or bad usage."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.base_path_map and "=" not in args.base_path_map:
        return fail(PROG, "--base_path_map expects PREFIX=DIR")
    try:
        tls = tls_from_args(args)
        tool = Rollout(args.server, args.config, args.timeout, args.base_path_map, tls)
    except ClientError as error:  # a TLS file that cannot be used
        return fail(PROG, error.message)
    try:
        if args.command == "status":
            report = tool.status(args.model)
            print(json.dumps(report, indent=2) if args.json else format_table(report))
        elif args.command == "canary":
            print(tool.canary(args.model, args.version))
        else:
            print(getattr(tool, args.command)(args.model))
    except (rc.RefusalError, rc.ServerError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2 if isinstance(error, rc.RefusalError) else 1
    except grpc.RpcError as error:
        print(f"{PROG}: {error.code().name}: {_one_line(error.details() or '')}", file=sys.stderr)
        return 1
    except OSError as error:  # an unwritable config folder
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    finally:
        tool.channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
