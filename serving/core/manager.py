"""Version manager: polls base paths, loads and unloads versions, lends ref-counted servables."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving.core import config_checks, versions
from serving.core.loading import VersionLoader, Workers, WorkQueue
from serving.core.model_status import (
    PUBLIC_STATE,
    ManagedModel,
    ManagedVersion,
    State,
    version_statuses,
)
from serving.errors import (
    ServingError,
    invalid_argument,
    not_found,
    servable_not_found,
    unknown,
)
from serving.servables.saved_model import Servable, load_servable

logger = logging.getLogger("serving")


class ModelManager:
    """TF Serving's ServerCore + AspiredVersionsManager, with the availability-preserving policy.

    All state sits behind one condition variable. Loads run on a pool of `num_load_threads`
    threads and unloads on one of `num_unload_threads`; 0 means one at a time on the manager's
    own thread, which both share, as in TF Serving. The first config loads on a pool of
    `num_initial_load_threads` (TF Serving: 4 per CPU). A queued version stays START until a
    thread takes it. Listeners run under the lock: keep them quick.
    """

    def __init__(
        self,
        *,
        loader: Callable[[str, int, str], Servable] = load_servable,
        warmup: Callable[[Servable], None] | None = None,
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        allow_version_labels_for_unavailable_models: bool = False,
        listeners: Sequence[Callable[[str, int, int], None]] = (),
        num_load_threads: int = 0,
        num_unload_threads: int = 0,
        num_initial_load_threads: int = 4 * (os.cpu_count() or 1),
    ):
        self._version_loader = VersionLoader(
            loader, warmup, max_num_load_retries, load_retry_interval_s
        )
        self._poll_wait = max(file_system_poll_wait_seconds, 0.0)
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._listeners = list(listeners)
        self._cv = threading.Condition(threading.RLock())
        # Held while a config is checked and applied, not while its loads are awaited.
        self._reload_lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._config = None
        self._models: dict[str, ManagedModel] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._history: dict[str, dict[int, tuple[int, ServingError | None]]] = {}
        self._workers = Workers(self._cv)
        own_thread = WorkQueue(self._workers, self._cv, 1, "serving-manager")
        self._loads = (
            WorkQueue(self._workers, self._cv, num_load_threads, "serving-load")
            if num_load_threads > 0
            else own_thread
        )
        self._unloads = (
            WorkQueue(self._workers, self._cv, num_unload_threads, "serving-unload")
            if num_unload_threads > 0
            else own_thread
        )
        # Until the first config's models are in, loads use a larger pool, as TF Serving's.
        self._load_pool = WorkQueue(
            self._workers, self._cv, num_initial_load_threads, "serving-initial-load"
        )
        self._held_for_unload = 0  # versions whose unload waits for requests to release them
        self._stopping = False

    def subscribe(self, listener: Callable[[str, int, int], None]) -> None:
        """Adds a listener called with (model, version, state) after every state change."""
        with self._cv:
            self._listeners.append(listener)

    # ---- configuration ----

    def reload_config(
        self, config, timeout: float | None = None, on_applied: Callable[[], None] | None = None
    ) -> None:
        """Makes the manager serve exactly the models of a `ModelServerConfig`.

        Unlike TF Serving, which holds its config lock until the new models are available (for
        ever when a base path does not exist), the lock covers only the config change, and the
        wait for the new models ends after `timeout`. Loads still running go on.

        Args:
            config: A `ModelServerConfig` holding a `model_config_list`.
            timeout: Seconds to wait for the newly added models; None waits until they settle.
            on_applied: Called once the config is accepted and in force, before the wait
                (the request loggers switch then, with the model list); it must not raise.

        Raises:
            ServingError: TF Serving's validation errors (nothing changes then); UNKNOWN, TF
                Serving's "did not become available" text, when a newly added model failed to
                load or was not available in time; DEADLINE_EXCEEDED when another reload held
                the config for all of `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if not self._reload_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Timed out waiting for another config reload to be applied",
            )
        try:
            with self._cv:
                if self._stopping:
                    raise ServingError(grpc.StatusCode.CANCELLED, "Model manager is stopping")
                first = self._config is None
                config_checks.validate_config(config, self._config)
                available = {name: set(self._ready(model)) for name, model in self._models.items()}
                labels = config_checks.label_map(
                    config, available, self._labels, self._allow_unavailable_labels
                )
                added = self._apply_config(config)
                self._labels = labels
                self._config = type(config)()
                self._config.CopyFrom(config)
                if on_applied is not None:
                    on_applied()
            self._poll_all()
            if first and self._poll_wait > 0:
                self._workers.spawn(self._poll_loop, "serving-fs-poll")
        finally:
            self._reload_lock.release()
        try:
            self._wait_until_available(added, first, deadline)
        finally:
            if first:
                with self._cv:
                    self._load_pool = self._loads

    def _apply_config(self, config) -> list[ManagedModel]:
        old, self._models, added = self._models, {}, []
        for model_config in config.model_config_list.config:
            policy = versions.policy_from_proto(model_config.model_version_policy)
            model = old.pop(model_config.name, None)
            if model is None:
                logger.info("(Re-)adding model: %s", model_config.name)
                model = ManagedModel(model_config.name, model_config.base_path, policy)
                added.append(model)
            model.base_path, model.policy = model_config.base_path, policy
            self._models[model.name] = model
        for model in old.values():
            # No longer configured: un-aspire everything so it unloads.
            model.retired = True
            self._set_aspired(model, {})
        return added

    def _wait_until_available(
        self, models: list[ManagedModel], first: bool, deadline: float | None
    ) -> None:
        with self._cv:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            self._cv.wait_for(
                lambda: self._stopping or all(map(self._settled, models)), timeout=timeout
            )
            if self._stopping:
                raise ServingError(grpc.StatusCode.CANCELLED, "Model manager is stopping")
            failures = list(filter(None, map(self._unavailable, models)))
        if failures:
            raise unknown(versions.not_available_message(failures, first))

    @staticmethod
    def _settled(model: ManagedModel) -> bool:
        if model.retired:  # a later reload removed it: no longer awaited
            return True
        aspired = any(v.aspired for v in model.versions.values())
        return model.found and aspired and versions.is_settled(model.snapshots())

    def _unavailable(self, model: ManagedModel) -> tuple[str, ServingError | None] | None:
        """Why a model awaited by a reload is not available: (servable id, error), or None."""
        if model.retired or self._ready(model):
            return None
        aspired = [v for v in model.versions.values() if v.aspired]
        if not aspired:
            return versions.latest_request(model.name), model.source_error
        failed = [v for v in aspired if v.state == versions.FAILED]
        worst = max(failed or aspired, key=lambda v: v.number)
        return versions.servable_id(model.name, worst.number), worst.error

    # ---- file-system polling ----

    def _poll_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopping, timeout=self._poll_wait)
                if self._stopping:
                    return
            try:
                self._poll_all()
            except Exception:  # a poll must never kill the poller
                logger.exception("File-system poll failed")

    def _poll_all(self) -> None:
        with self._poll_lock:
            with self._cv:
                models = list(self._models.values())
            for model in models:
                # List outside the lock (file systems can be slow), decide under it.
                base_path = model.base_path
                try:
                    children = os.listdir(base_path)
                except OSError as error:
                    message = versions.base_path_message(model.name, base_path, error)
                    line = versions.base_path_error(model.name, base_path, error)
                    with self._cv:
                        self._report(model, invalid_argument(message), [(logging.ERROR, line)])
                    continue
                with self._cv:
                    if not model.retired and not self._stopping:
                        self._apply_listing(model, children)

    @staticmethod
    def _report(
        model: ManagedModel, error: ServingError | None, lines: list[tuple[int, str]]
    ) -> None:
        """Keeps why a poll found no version to serve, and logs what a poll found once.

        TF Serving logs on every poll; here a line comes back only when the findings change,
        so a config naming thousands of missing paths does not flood the log every second.
        """
        model.source_error = error
        if lines != model.reported:
            for level, line in lines:
                logger.log(level, line)
            model.reported = lines

    def _apply_listing(self, model: ManagedModel, children: list[str]) -> None:
        by_version, warnings = versions.index_children(children)
        aspired = versions.aspired_versions(by_version, model.policy)
        warnings += versions.policy_warnings(model.name, model.base_path, by_version, model.policy)
        error = None
        if not aspired:
            error = not_found(versions.no_version_message(model.name, model.base_path))
        self._report(model, error, [(logging.WARNING, warning) for warning in warnings])
        paths = {number: str(Path(model.base_path) / child) for number, child in aspired.items()}
        self._set_aspired(model, paths)

    # ---- the state machine (all under self._cv) ----

    def _set_aspired(self, model: ManagedModel, paths: dict[int, str]) -> None:
        model.found = model.found or bool(paths)
        for version in model.versions.values():
            version.aspired = version.number in paths
        for number, path in paths.items():
            if number not in model.versions:
                model.versions[number] = ManagedVersion(number, path)
                self._record(model, number, State.START)
        self._reconcile(model)

    def _reconcile(self, model: ManagedModel) -> None:
        while (action := versions.next_action(model.snapshots())) is not None:
            version = model.versions[action.version]
            if action.kind == versions.DROP:
                del model.versions[action.version]
                if version.state in (versions.NEW, versions.QUEUED):
                    self._record(model, version.number, State.END)
            elif action.kind == versions.LOAD:
                version.state = versions.QUEUED
                self._load_pool.submit(lambda v=version: self._load(model, v))
            else:
                self._transition(model, version, versions.UNLOADING)
                self._unloads.submit(lambda v=version: self._unload(model, v))
        self._cv.notify_all()

    def _transition(self, model: ManagedModel, version: ManagedVersion, state: str) -> None:
        version.state = state
        self._record(model, version.number, PUBLIC_STATE[state])

    def _record(
        self, model: ManagedModel, number: int, state: int, error: ServingError | None = None
    ):
        name = model.name
        if model.retired and name in self._models:
            return  # a removed model's late events must not overwrite its re-added successor's
        self._history.setdefault(name, {})[number] = (state, error)
        for listener in self._listeners:
            try:
                listener(name, number, state)
            except Exception:
                logger.exception("Servable state listener failed")

    def _may_retry(self, version: ManagedVersion) -> bool:
        return version.aspired and not self._stopping

    def _load(self, model: ManagedModel, version: ManagedVersion) -> None:
        with self._cv:
            if model.versions.get(version.number) is not version or self._stopping:
                return  # dropped (un-aspired) while its load was queued
            self._transition(model, version, versions.LOADING)
        servable, error = self._version_loader.load(
            model.name, version.number, version.path, self._cv, lambda: self._may_retry(version)
        )
        with self._cv:
            if error is None:
                version.servable = servable
                self._transition(model, version, versions.READY)
                sid = versions.servable_id(model.name, version.number)
                logger.info("Successfully loaded servable version %s", sid)
            else:
                version.state, version.error = versions.FAILED, error
                self._record(model, version.number, State.END, error)
            self._reconcile(model)

    def _unload(self, model: ManagedModel, version: ManagedVersion) -> None:
        sid = versions.servable_id(model.name, version.number)
        with self._cv:
            if version.refs:
                # In-flight requests keep their handle; the last one to let go queues the
                # unload again, so no unload thread waits for a request.
                version.unload_on_release = True
                self._held_for_unload += 1
                return
        logger.info("Unloading servable version %s", sid)
        version.servable.close()
        with self._cv:
            version.servable = None
            model.versions.pop(version.number, None)
            self._record(model, version.number, State.END)
            logger.info("Done unloading servable version %s", sid)
            if version.aspired and not model.retired and not self._stopping:
                # Re-aspired while it was unloading: start over as a new version.
                model.versions[version.number] = ManagedVersion(version.number, version.path)
                self._record(model, version.number, State.START)
            self._reconcile(model)

    @staticmethod
    def _ready(model: ManagedModel) -> list[int]:
        return sorted(v.number for v in model.versions.values() if v.state == versions.READY)

    # ---- queries ----

    @contextlib.contextmanager
    def handle(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """Holds a servable for the length of a `with` block; unloading waits for it.

        Args:
            name: The model name.
            version: A specific version; with neither version nor label, the highest AVAILABLE.
            label: A version label from the config.

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown label, NOT_FOUND (`Servable not found
                for request: ...`) when no such version is AVAILABLE.
        """
        with self._cv:
            if label is not None:
                version = self._labels.get(name, {}).get(label)
                if version is None:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
            model = self._models.get(name)
            ready = self._ready(model) if model is not None else []
            number = version if version is not None else (ready[-1] if ready else None)
            if number not in ready:
                raise servable_not_found(name, version)
            held = model.versions[number]
            held.refs += 1
        try:
            yield held.servable
        finally:
            with self._cv:
                held.refs -= 1
                if held.refs == 0 and held.unload_on_release:
                    held.unload_on_release = False
                    self._unloads.submit(lambda: self._unload(model, held))
                    self._held_for_unload -= 1
                    self._cv.notify_all()

    def status(
        self, name: str, version: int | None = None
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        """GetModelStatus: every version ever seen (END included), highest version first.

        Raises:
            ServingError: NOT_FOUND with TF Serving's texts for unknown models or versions.
        """
        with self._cv:
            seen = dict(self._history.get(name, {}))
        return version_statuses(name, version, seen)

    def available_versions(self, name: str) -> list[int]:
        """The AVAILABLE versions of a model, ascending ([] for unknown models)."""
        with self._cv:
            model = self._models.get(name)
            return self._ready(model) if model is not None else []

    def version_states(self) -> list[tuple[str, int, tuple[str, ...], str]]:
        """Every version of each configured model, as the version-state metric reports it.

        Returns:
            (model, version, the config's labels pointing at it, GetModelStatus state name) per
            version ever seen (END included, as GetModelStatus reports it). A model a reload
            removed is left out, so the metric's labels stay within the configured models.
        """
        with self._cv:
            rows = []
            for name in self._models:
                labels: dict[int, list[str]] = {}
                for label, number in self._labels.get(name, {}).items():
                    labels.setdefault(number, []).append(label)
                for number, (state, _) in self._history.get(name, {}).items():
                    rows.append((name, number, tuple(labels.get(number, ())), State.Name(state)))
            return rows

    def model_names(self) -> list[str]:
        """The configured model names, in config order."""
        with self._cv:
            return list(self._models)

    def stop(self) -> None:
        """Stops polling, waits for in-flight handles and loads, and unloads every version."""
        with self._cv:
            if self._stopping and not self._workers.busy():
                return
            self._stopping = True
            models, self._models = list(self._models.values()), {}
            for model in models:
                model.retired = True
                self._set_aspired(model, {})
            self._cv.notify_all()
        self._workers.join_all()
        with self._cv:
            self._cv.wait_for(lambda: self._held_for_unload == 0)
        self._workers.join_all()
