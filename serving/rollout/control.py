"""ModelService steps of a rollout: status, canary, promote, rollback and dropping a canary.

Every change is written to the config file first, then pushed with HandleReloadConfigRequest; a
label moves only once its version is AVAILABLE and a version unloads only once no label points
at it, so clients of `stable` never see a failed request.

Example:
    tool = Rollout("127.0.0.1:8500", "serving/models.config", timeout=60.0)
    tool.canary("unet", 2)       # "canary: unet stable=1 canary=2"
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from client.tls import TLSFiles, grpc_channel
from common.quiet import import_tensorflow

import_tensorflow()  # tensorflow_serving's protos import TensorFlow: keep its banner off stderr
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)

from serving.config.files import map_base_paths  # noqa: E402
from serving.rollout import config_edit as rc  # noqa: E402

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
                raise rc.ServerError(f"{code}: {one_line(response.status.error_message)}")
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
                        raise rc.ServerError(one_line(last))
                else:
                    restarted, last = True, f"still {State.Name(entry.state)}"
            time.sleep(POLL_S)
        raise rc.ServerError(one_line(f"not AVAILABLE after {self.timeout:g} s ({last})"))

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

    def version_dir(self, config, name: str, version: int) -> Path:
        """`<base_path>/<version>` of a model on this machine (after --base_path_map)."""
        base = rc.model_config(map_base_paths(config, self.base_path_map), name).base_path
        return Path(base) / str(version)

    def on_disk(self, config, name: str, version: int) -> None:
        """Refuses unless `<base_path>/<version>` exists here (after --base_path_map)."""
        path = self.version_dir(config, name, version)
        if not path.is_dir():
            raise rc.RefusalError(f"version {version} of {name} not found on disk at {path}")

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
                    "error": one_line(s.status.error_message),
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

    def drop_canary(self, name: str) -> str:
        """Takes the `canary` label off, then unloads its version; `stable` is untouched."""
        config = rc.read_config(self.config_path)
        step, version = rc.drop_label(config, name, rc.CANARY)
        self.apply(step)  # the label goes first, while its version is still loaded
        self.prune(step, name)
        stable = rc.labels_of(step, name).get(rc.STABLE)
        return f"abort: {name} canary {version} unloaded, stable={stable}"

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


def one_line(text: str) -> str:
    """`text` with every run of whitespace as one space."""
    return " ".join(text.split())
