"""Pure decisions of the version manager: aspired versions, load/unload order, messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Lifecycle of a version inside the manager (TF Serving's LoaderHarness states, simplified).
NEW = "new"  # aspired, not yet loading
QUEUED = "queued"  # its load waits for a thread of the load pool (still START to clients)
LOADING = "loading"
READY = "ready"  # AVAILABLE: serving requests
UNLOADING = "unloading"
FAILED = "failed"  # load failed for good; kept (not retried) while it stays aspired

LOAD = "load"
UNLOAD = "unload"
# Forget a version that never served: un-aspired before its load started, or failed for good.
DROP = "drop"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# `strings::safe_strto64`: optional surrounding whitespace and sign, then decimal digits only.
_VERSION_RE = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def servable_id(name: str, version: int) -> str:
    """`ServableId::DebugString()`: `{name: X version: 1}`."""
    return f"{{name: {name} version: {version}}}"


@dataclass(frozen=True)
class VersionPolicy:
    """A `ServableVersionPolicy`: kind is "latest", "all" or "specific"."""

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class VersionSnapshot:
    """What the load/unload decision needs to know about one managed version."""

    version: int
    state: str
    aspired: bool


@dataclass(frozen=True)
class Action:
    """One step for the manager: LOAD, UNLOAD or DROP a version."""

    kind: str
    version: int


def policy_from_proto(policy) -> VersionPolicy:
    """Reads a `FileSystemStoragePathSourceConfig.ServableVersionPolicy` message.

    Args:
        policy: The `model_version_policy` field of a `ModelConfig` (duck-typed, so this module
            needs no protobuf imports).

    Returns:
        The policy; unset means latest{1}, and num_versions is clamped to at least 1.
    """
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    num = policy.latest.num_versions if choice == "latest" else 1
    return VersionPolicy("latest", num_versions=max(num, 1))


def parse_version(name: str) -> int | None:
    """Returns the version number a directory name stands for, or None if it is not one.

    Args:
        name: A child name of a model's base path, e.g. "7", "0007", "tmp".

    Returns:
        The int64 it parses as ("0007" -> 7), else None.
    """
    if not _VERSION_RE.fullmatch(name):
        return None
    value = int(name)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def index_children(children: Iterable[str]) -> tuple[dict[int, str], list[str]]:
    """Maps version numbers to directory names, TF Serving style.

    Args:
        children: Names of the base path's children.

    Returns:
        (version -> child name, warnings). Of duplicates such as "1" and "001", the name that
        sorts last wins, as TF Serving's sorted scan does.
    """
    by_version: dict[int, str] = {}
    warnings = []
    for child in sorted(set(children)):
        version = parse_version(child)
        if version is None:
            continue
        if version in by_version:
            warnings.append(
                f"Duplicate version directories detected. Version {version} will be loaded "
                f"from {child}, {by_version[version]} will be ignored."
            )
        by_version[version] = child
    return by_version, warnings


def aspired_versions(by_version: dict[int, str], policy: VersionPolicy) -> dict[int, str]:
    """Picks the versions the policy wants served from those found on disk.

    Args:
        by_version: Version -> directory name, from `index_children`.
        policy: The model's version policy.

    Returns:
        The aspired subset of `by_version`.
    """
    if policy.kind == "all":
        return dict(by_version)
    if policy.kind == "specific":
        return {v: child for v, child in by_version.items() if v in policy.versions}
    newest = sorted(by_version, reverse=True)[: max(policy.num_versions, 1)]
    return {v: by_version[v] for v in newest}


def policy_warnings(
    name: str, base_path: str, by_version: dict[int, str], policy: VersionPolicy
) -> list[str]:
    """TF Serving's warnings for a poll: missing `specific` versions, or no versions at all."""
    warnings = []
    if policy.kind == "specific":
        for version in sorted(v for v in policy.versions if v not in by_version):
            warnings.append(
                f"Version {version} of servable {name}, which was requested to be served as a "
                "'specific' version in the servable's version policy, was not found in the file "
                "system"
            )
    if not aspired_versions(by_version, policy):
        warnings.append(
            f"No versions of servable {name} found under base path {base_path}. Did you forget "
            "to name your leaf directory as a number (eg. '/1/')?"
        )
    return warnings


def base_path_message(name: str, base_path: str, error: OSError) -> str:
    """The INVALID_ARGUMENT text of TF Serving's storage path source for an unlistable base path."""
    code = "NOT_FOUND" if isinstance(error, FileNotFoundError) else "UNKNOWN"
    return (
        f"Could not find base path {base_path} for servable {name} with error {code}: "
        f"{base_path}; {error.strerror}"
    )


def base_path_error(name: str, base_path: str, error: OSError) -> str:
    """The log line for a base path that cannot be listed."""
    return (
        "FileSystemStoragePathSource encountered a filesystem access error: "
        + base_path_message(name, base_path, error)
    )


def no_version_message(name: str, base_path: str) -> str:
    """TF Serving's NOT_FOUND text for a base path that holds no version directory."""
    return f"Unable to find a numerical version path for servable {name} at: {base_path}"


def latest_request(name: str) -> str:
    """`ServableRequest::DebugString()` of a request for a model's latest version."""
    return f"Latest({name})"


def not_available_message(failures: Sequence[tuple[str, object | None]], first: bool) -> str:
    """The UNKNOWN text when models do not become available while the manager waits for them.

    Args:
        failures: (servable id or request text, ServingError or None) per model that did not
            become available; None (still loading) leaves out the "due to error" part.
        first: True at start-up (`load_servables_fast.cc` counts servables), False on a reload
            (`server_core.cc` counts models).
    """
    noun = "servable(s)" if first else "model(s)"
    entries = "".join(
        f"{{{sid}}}, " if error is None else f"{{{sid} due to error: {error.to_string()}}}, "
        for sid, error in failures
    )
    return f"{len(failures)} {noun} did not become available: {{{entries}}}"


def next_action(snapshots: Sequence[VersionSnapshot]) -> Action | None:
    """The next step under TF Serving's AvailabilityPreservingPolicy, or None if settled.

    The manager applies the action (which changes that version's state) and asks again.

    Args:
        snapshots: Every version the manager currently manages for one model.

    Returns:
        DROP an un-aspired version that is neither serving nor loading (a QUEUED load is
        abandoned); else UNLOAD the lowest un-aspired READY version, unless it is the only one
        serving while an aspired version is still on its way; else LOAD the highest NEW aspired
        version.
    """
    for snap in sorted(snapshots, key=lambda s: s.version):
        if not snap.aspired and snap.state in (NEW, QUEUED, FAILED):
            return Action(DROP, snap.version)
    has_aspired = any(s.aspired for s in snapshots)
    has_aspired_serving = any(s.aspired and s.state == READY for s in snapshots)
    unaspired_serving = sorted(s.version for s in snapshots if not s.aspired and s.state == READY)
    if unaspired_serving and (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
        return Action(UNLOAD, unaspired_serving[0])
    new = [s.version for s in snapshots if s.aspired and s.state == NEW]
    if new:
        return Action(LOAD, max(new))
    return None


def is_settled(snapshots: Sequence[VersionSnapshot]) -> bool:
    """True when no aspired version is still waiting for or in the middle of its load."""
    return all(s.state in (READY, FAILED) for s in snapshots if s.aspired)
