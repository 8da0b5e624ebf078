"""Pure ModelServerConfig edits for canary rollouts, and the tool's errors.

Example:
    config = read_config("serving/models.config")
    step = canary_load(config, "half", 2, stable=1)  # policy specific [1, 2], no canary label yet
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format

from common.quiet import import_tensorflow

import_tensorflow()  # tensorflow_serving's protos import TensorFlow: keep its banner off stderr
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
STABLE, CANARY = "stable", "canary"


class RefusalError(Exception):
    """A request the tool refuses before touching anything (exit 2)."""


class ServerError(Exception):
    """The server failed or rejected a step (exit 1)."""


class InDoubtError(Exception):
    """A step the server may still be applying after a time-out: the file keeps it (exit 3)."""


def parse_config(text: str, where: str | os.PathLike) -> ModelServerConfig:
    """Parses a text-format ModelServerConfig holding a model_config_list.

    Raises:
        RefusalError: `text` is unparsable or not a model_config_list (`where` names it).
    """
    try:
        config = text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as error:
        raise RefusalError(f"cannot parse {where}: {error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise RefusalError(f"{where} holds no model_config_list")
    return config


def read_config(path: str | os.PathLike) -> ModelServerConfig:
    """Reads and parses `path` (see `parse_config`).

    Raises:
        RefusalError: The file is missing, unreadable, unparsable, or not a model_config_list.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RefusalError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise RefusalError(f"cannot parse {path}: {error}") from None
    return parse_config(text, path)


def model_config(config: ModelServerConfig, name: str):
    """The ModelConfig called `name`.

    Raises:
        RefusalError: No such model in the config.
    """
    models = config.model_config_list.config
    for model in models:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in models) or "none"
    raise RefusalError(f"unknown model {name!r} (the config has: {known})")


def labels_of(config: ModelServerConfig, name: str) -> dict[str, int]:
    """Label -> version of one model."""
    return dict(model_config(config, name).version_labels)


def describe_policy(config: ModelServerConfig, name: str) -> str:
    """`latest`, `all` or `specific [1, 2]` (TF Serving's default is latest 1)."""
    policy = model_config(config, name).model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return f"specific {sorted(policy.specific.versions)}"
    if kind == "latest":
        return f"latest {policy.latest.num_versions or 1}"
    return kind or "latest 1"


def edited(
    config: ModelServerConfig,
    name: str,
    *,
    versions: set[int] | None = None,
    labels: dict[str, int] | None = None,
) -> ModelServerConfig:
    """A copy of `config` with one model's policy set to `specific` and/or its labels replaced."""
    new = ModelServerConfig()
    new.CopyFrom(config)
    model = model_config(new, name)
    if versions is not None:
        model.model_version_policy.specific.versions[:] = sorted(versions)
    if labels is not None:
        model.version_labels.clear()
        for label in sorted(labels):
            model.version_labels[label] = labels[label]
    return new


def canary_load(config: ModelServerConfig, name: str, version: int, stable: int):
    """Step 1 of a canary: load `version` beside `stable`; no label points at it yet.

    The `stable` label is set (it is AVAILABLE), and an older canary keeps its label and its
    version until the new one is AVAILABLE.

    Raises:
        RefusalError: `version` is already the stable or the canary version.
    """
    labels = labels_of(config, name)
    if version == stable:
        raise RefusalError(f"canary: version {version} of {name} is already the stable version")
    if labels.get(CANARY) == version:
        raise RefusalError(f"canary: version {version} of {name} is already the canary")
    labels[STABLE] = stable
    return edited(config, name, versions={version, *labels.values()}, labels=labels)


def with_label(config: ModelServerConfig, name: str, label: str, version: int):
    """Points `label` at `version`; the policy is unchanged."""
    return edited(config, name, labels={**labels_of(config, name), label: version})


def prune(config: ModelServerConfig, name: str) -> ModelServerConfig:
    """Keeps loaded only the versions a label points at."""
    return edited(config, name, versions=set(labels_of(config, name).values()))


def promote_labels(config: ModelServerConfig, name: str) -> tuple[ModelServerConfig, int | None]:
    """Moves `stable` to the canary's version and drops the `canary` label; policy unchanged.

    Returns:
        The new config and the previous stable version (None if there was no stable label).

    Raises:
        RefusalError: The model has no canary label.
    """
    labels = labels_of(config, name)
    if CANARY not in labels:
        raise RefusalError(f"promote: {name} has no canary label to promote")
    previous = labels.get(STABLE)
    labels[STABLE] = labels.pop(CANARY)
    return edited(config, name, labels=labels), previous


def drop_label(config: ModelServerConfig, name: str, label: str) -> tuple[ModelServerConfig, int]:
    """Removes `label`; the policy is unchanged, so its version stays loaded until a prune.

    Returns:
        The new config and the version the label pointed at.

    Raises:
        RefusalError: The model has no such label.
    """
    labels = labels_of(config, name)
    if label not in labels:
        raise RefusalError(f"{name} has no {label} label")
    version = labels.pop(label)
    return edited(config, name, labels=labels), version


def rollback_load(config: ModelServerConfig, name: str, previous: int) -> ModelServerConfig:
    """Step 1 of a rollback: load `previous` beside what the labels point at.

    Raises:
        RefusalError: No stable label, or `previous` is already the stable version.
    """
    labels = labels_of(config, name)
    if STABLE not in labels:
        raise RefusalError(f"rollback: {name} has no stable label")
    if labels[STABLE] == previous:
        raise RefusalError(
            f"rollback: {name} is already at version {previous}; nothing to roll back"
        )
    return edited(config, name, versions={previous, *labels.values()})
