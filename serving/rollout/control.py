"""ModelService steps of a rollout: status, canary, promote, rollback and dropping a canary.

Every change is written to the config file first (under its lock, in place: `config_file`), then
pushed with HandleReloadConfigRequest; a label moves only once its version is AVAILABLE and a
version unloads only once no label points at it, so clients of `stable` never see a failed
request. After a time-out the server's state decides: a version still loading keeps the new
config (InDoubtError), one that failed or never appeared is restored.

Example:
    tool = Rollout("127.0.0.1:8500", "serving/models.config", timeout=60.0)
    tool.canary("unet", 2)       # "canary: unet stable=1 canary=2"
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import grpc

from client.transports.tls import TLSFiles, grpc_channel
from common.quiet import import_tensorflow

import_tensorflow()  # tensorflow_serving's protos import TensorFlow: keep its banner off stderr
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)

from serving.config.files import map_base_paths  # noqa: E402
from serving.rollout import config_edit as rc  # noqa: E402
from serving.rollout import config_file  # noqa: E402

State = get_model_status_pb2.ModelVersionStatus.State
POLL_S = 0.1


class Rollout:
    """One server and its config file: every change is written to the file, then reloaded.

    Args:
        server: gRPC HOST:PORT of the model server.
        config_path: The server's `--model_config_file`.
        timeout: Seconds allowed for each RPC and for each wait on a version's state.
        base_path_map: PREFIX=DIR, to find on this machine the versions of container paths.
        tls: CA, client certificate and key for a TLS channel (`client.transports.tls`), or None.
        lock_timeout: Seconds to wait for another operator's lock on the config.

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
        lock_timeout: float = 30.0,
    ):
        self.config_path, self.timeout, self.base_path_map = config_path, timeout, base_path_map
        self.lock_timeout, self.file, self._held = (
            lock_timeout,
            config_file.ConfigFile(config_path),
            0,
        )
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

    @contextlib.contextmanager
    def locked(self, holder: str):
        """Holds the config's lock (re-entrant); the plan is read afresh under it.

        Raises:
            rc.RefusalError: Another operator held it for longer than `lock_timeout`.
        """
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        with config_file.ConfigLock(self.config_path, self.lock_timeout, holder, _say):
            self._held, self.file.seen = 1, None
            try:
                yield
            finally:
                self._held = 0

    def read(self) -> rc.ModelServerConfig:
        """The config, read for planning: later writes refuse if the file changes meanwhile."""
        return self.file.read()

    def apply(self, config: rc.ModelServerConfig) -> None:
        """Writes the config file in place, then HandleReloadConfigRequest with it.

        The file goes first so that a server polling the file never re-applies an older config.
        If the server rejects the reload, the old file is put back; if the reload times out the
        server may still apply it, so the file keeps the new config.

        Raises:
            rc.InDoubtError: The reload timed out.
            rc.ServerError: The server rejected it.
        """
        old = self.file.config()
        self.file.write(config)
        request = model_management_pb2.ReloadConfigRequest(config=config)
        try:
            response = self.stub.HandleReloadConfigRequest(request, timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise rc.InDoubtError(
                    f"the reload did not answer within {self.timeout:g} s and the server may "
                    f"still apply it: {self.config_path} keeps the new config, nothing "
                    "restored; see `status`"
                ) from None
            self.file.write(old)
            raise
        if response.status.error_code != 0:
            self.file.write(old)
            code = _code_name(response.status.error_code)
            raise rc.ServerError(f"{code}: {one_line(response.status.error_message)}")

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
            rc.ServerError: It reached END (its error as the message).
            NotYet: The timeout passed; its `state` says what the server was doing.
        """
        restarted = not ended_before
        deadline = time.monotonic() + self.timeout
        last, state = "never seen by the server", None
        while time.monotonic() < deadline:
            for entry in self.statuses(name, version):
                if entry.state == State.AVAILABLE:
                    return
                if entry.state == State.END:
                    last = entry.status.error_message or "unloaded before it was available"
                    if restarted:
                        raise rc.ServerError(one_line(last))
                else:
                    state = State.Name(entry.state)
                    restarted, last = True, f"still {state}"
            time.sleep(POLL_S)
        raise NotYet(one_line(f"not AVAILABLE after {self.timeout:g} s ({last})"), state)

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
        """Applies `step` and waits for `version`, then judges by the server's state.

        AVAILABLE goes on (also after a reload that timed out). Still loading after the wait:
        the server is on the new config, which the file keeps (InDoubtError). Failed, or never
        seen by the server: `config` is restored, file and server, and ServerError is raised.
        """
        ended_before = self.ended(name, version)
        late = None
        try:
            self.apply(step)
        except rc.InDoubtError:  # the server may apply it late: what it does decides
            late = f"the reload timed out after {self.timeout:g} s"
        try:
            self.wait_available(name, version, ended_before)
        except NotYet as error:
            if error.state is not None:
                raise rc.InDoubtError(
                    f"{verb}: {name} version {version} still {error.state} after "
                    f"{self.timeout:g} s: the server runs the new config, kept in "
                    f"{self.config_path}; nothing restored: follow it with `status`, then "
                    f"`abort` or run {verb} again"
                ) from None
            self._restore(config, f"{verb}: {name} version {version} failed to load: {error}")
        except rc.ServerError as error:
            self._restore(config, f"{verb}: {name} version {version} failed to load: {error}")
        if late:
            _say(f"{late}, but {name} version {version} is AVAILABLE: going on")

    def _restore(self, config, why: str) -> None:
        """Puts `config` back (file and server), then raises ServerError(`why`)."""
        try:
            self.apply(config)
        except rc.InDoubtError:
            raise rc.InDoubtError(
                f"{why}; the old config is back in {self.config_path}, but its reload timed "
                "out: see `status`"
            ) from None
        raise rc.ServerError(why)

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
        with self.locked(f"canary {name} {version}"):
            return self._canary(name, version)

    def _canary(self, name: str, version: int) -> str:
        config = self.read()
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
        with self.locked(f"promote {name}"):
            return self._promote(name)

    def _promote(self, name: str) -> str:
        config = self.read()
        step, previous = rc.promote_labels(config, name)
        new = rc.labels_of(step, name)[rc.STABLE]
        if not any(s.state == State.AVAILABLE for s in self.statuses(name, new)):
            raise rc.RefusalError(f"promote: canary version {new} of {name} is not AVAILABLE")
        self.apply(step)  # both versions still loaded while the label moves
        sidecar = config_file.read_sidecar(self.config_path)
        if previous is not None and previous != new:
            sidecar[name] = {"previous_stable": previous}
            config_file.write_sidecar(self.config_path, sidecar)
        self.prune(step, name)
        return f"promote: {name} stable={new} (previous {previous})"

    def drop_canary(self, name: str) -> str:
        """Takes the `canary` label off, then unloads its version; `stable` is untouched."""
        with self.locked(f"abort {name}"):
            return self._drop_canary(name)

    def _drop_canary(self, name: str) -> str:
        config = self.read()
        step, version = rc.drop_label(config, name, rc.CANARY)
        self.apply(step)  # the label goes first, while its version is still loaded
        self.prune(step, name)
        stable = rc.labels_of(step, name).get(rc.STABLE)
        return f"abort: {name} canary {version} unloaded, stable={stable}"

    def rollback(self, name: str) -> str:
        with self.locked(f"rollback {name}"):
            return self._rollback(name)

    def _rollback(self, name: str) -> str:
        config = self.read()
        rc.model_config(config, name)
        sidecar = config_file.read_sidecar(self.config_path)
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
        config_file.write_sidecar(self.config_path, sidecar)
        self.prune(step, name)
        return f"rollback: {name} stable={previous} (was {current})"


class NotYet(rc.ServerError):
    """A wait that timed out; `state` is the version's last state (None: never seen)."""

    def __init__(self, message: str, state: str | None):
        super().__init__(message)
        self.state = state


def _say(line: str) -> None:
    print(f"python -m serving.rollout: {line}", file=sys.stderr, flush=True)


def _code_name(value: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == value), str(value))


def one_line(text: str) -> str:
    """`text` with every run of whitespace as one space."""
    return " ".join(text.split())
