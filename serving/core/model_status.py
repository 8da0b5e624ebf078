"""The version manager's per-version records and how GetModelStatus reports them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tensorflow_serving.apis import get_model_status_pb2

from serving.core import versions
from serving.errors import ServingError, not_found
from serving.servables.saved_model import Servable

State = get_model_status_pb2.ModelVersionStatus.State
# The manager's version states as GetModelStatus names them (FAILED is reported as END).
PUBLIC_STATE = {
    versions.NEW: State.START,
    versions.QUEUED: State.START,
    versions.LOADING: State.LOADING,
    versions.READY: State.AVAILABLE,
    versions.UNLOADING: State.UNLOADING,
}
# Version -> (last public state, its error) of one model, END included.
VersionHistory = Mapping[int, tuple[int, ServingError | None]]


@dataclass(eq=False)
class ManagedVersion:
    """One version of a model, as the manager tracks it."""

    number: int
    path: str
    state: str = versions.NEW
    aspired: bool = True
    servable: Servable | None = None
    refs: int = 0
    error: ServingError | None = None
    unload_on_release: bool = False  # UNLOADING while requests still hold it


@dataclass(eq=False)
class ManagedModel:
    """One configured model and the versions the manager tracks for it."""

    name: str
    base_path: str
    policy: versions.VersionPolicy
    versions: dict[int, ManagedVersion] = field(default_factory=dict)
    found: bool = False  # a poll has aspired at least one version
    retired: bool = False  # dropped from the config (or the manager stopped)
    # Why the last poll aspired no version (TF Serving's storage path source error), if so.
    source_error: ServingError | None = None
    reported: list[tuple[int, str]] = field(default_factory=list)  # the last poll's log lines

    def snapshots(self) -> list[versions.VersionSnapshot]:
        return [
            versions.VersionSnapshot(v.number, v.state, v.aspired) for v in self.versions.values()
        ]


def version_statuses(
    name: str, version: int | None, seen: VersionHistory
) -> list[get_model_status_pb2.ModelVersionStatus]:
    """GetModelStatus: every version ever seen (END included), highest version first.

    Args:
        name: The model name.
        version: One version to report, or None for all of them.
        seen: The model's history (empty for a model never seen).

    Raises:
        ServingError: NOT_FOUND with TF Serving's texts for unknown models or versions.
    """
    if version is not None:
        if version not in seen:
            raise not_found(f"Could not find version {version} of model {name}")
        seen = {version: seen[version]}
    elif not seen:
        raise not_found(f"Could not find any versions of model {name}")
    result = []
    for number in sorted(seen, reverse=True):
        state, error = seen[number]
        entry = get_model_status_pb2.ModelVersionStatus(version=number, state=state)
        # TF Serving always sends a status, {error_code: OK, error_message: ""} when healthy.
        entry.status.SetInParent()
        if error is not None:
            entry.status.error_code = error.code.value[0]
            entry.status.error_message = error.message
        result.append(entry)
    return result
