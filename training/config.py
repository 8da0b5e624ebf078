"""Config machinery shared by the three models: presets, `key=value` overrides, JSON round trip.

Each model's frozen config dataclass and its `PRESETS` (`seed`, `slim`, `tiny`) live beside its
model factory; this module only knows how to pick, override and save them.

Example:
    >>> from training.unet import PRESETS
    >>> cfg = apply_overrides(PRESETS["tiny"], ["image_size=64", "loss=bce"])
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from training.errors import ConfigError

C = TypeVar("C")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def pick_preset(presets: Mapping[str, C], name: str, model: str) -> C:
    """Returns the preset `name`, or raises a ConfigError listing the valid presets."""
    if name not in presets:
        raise ConfigError(
            f"unknown preset {name!r} for {model}; valid presets: {', '.join(presets)}"
        )
    return presets[name]


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    """Raises a ConfigError listing the valid values when `value` is not one of them."""
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """Returns `config` with each `key=value` applied, converted to the field's type.

    Raises:
        ConfigError: on a malformed item, an unknown key (the valid keys are listed) or a value
            that does not convert or fails the config's own validation.
    """
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key not in names:
            raise ConfigError(
                f"unknown config key {key!r} for {type(config).__name__}; "
                f"valid keys: {', '.join(names)}"
            )
        changes[key] = _convert(raw.strip(), hints[key], key)
    return replace(config, **changes)


def replace(config: C, **changes: Any) -> C:
    """`dataclasses.replace` that reports validation failures as ConfigError."""
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuilds a config of type `cls` from `to_dict` output, ignoring no key silently."""
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no keys {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from None


def save_json(config: Any, path: Path, **extra: Any) -> None:
    """Writes `{"model": ..., "config": {...}}` plus `extra` keys to `path`."""
    payload = {**extra, "config": to_dict(config)}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _convert(raw: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw.lower() in {"none", "null", ""}:
            return None
        return _convert(raw, args[0], key)
    if origin is tuple:
        item_type = args[0] if args else str
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        return tuple(_convert(p, item_type, key) for p in parts)
    try:
        if hint is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if hint in (int, float, str):
            return hint(raw)
    except ValueError:
        raise ConfigError(
            f"--set {key}={raw!r}: expected {getattr(hint, '__name__', hint)}"
        ) from None
    return raw
