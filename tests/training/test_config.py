"""Presets, `--set` overrides and config validation."""

import dataclasses

import pytest

from training import config as cfg
from training.errors import ConfigError
from training.unet import PRESETS, UNetConfig


def test_overrides_convert_to_field_types():
    out = cfg.apply_overrides(
        PRESETS["tiny"],
        ["image_size=64", "batch_norm=false", "learning_rate=3e-4", "steps_per_epoch=none"],
    )
    assert out.image_size == 64
    assert out.batch_norm is False
    assert out.learning_rate == pytest.approx(3e-4)
    assert out.steps_per_epoch is None
    # The original preset is untouched (configs are frozen values).
    assert PRESETS["tiny"].image_size == 32


def test_unknown_key_lists_valid_keys():
    expected = r"unknown config key 'imagesize'.*valid keys: image_size"
    with pytest.raises(ConfigError, match=expected):
        cfg.apply_overrides(PRESETS["tiny"], ["imagesize=64"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("image_size", "expects key=value"),
        ("image_size=abc", "expected int"),
        ("batch_norm=maybe", "expected bool"),
        ("image_size=100", "not a positive multiple of 16"),
        ("loss=dice", "choose one of: bce, bce_dice"),
        ("val_fraction=1.5", "between 0 and 1"),
    ],
)
def test_bad_overrides_are_clear(item, message):
    with pytest.raises(ConfigError, match=message):
        cfg.apply_overrides(PRESETS["tiny"], [item])


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ConfigError, match="valid presets: seed, slim, tiny"):
        cfg.pick_preset(PRESETS, "huge", "unet")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["slim"].image_size = 64  # type: ignore[misc]


def test_json_round_trip(tmp_path):
    path = tmp_path / "config.json"
    cfg.save_json(PRESETS["seed"], path, model="unet")
    import json

    saved = json.loads(path.read_text())
    assert saved["model"] == "unet"
    assert cfg.from_dict(UNetConfig, saved["config"]) == PRESETS["seed"]
    with pytest.raises(ConfigError, match="no keys"):
        cfg.from_dict(UNetConfig, {**saved["config"], "colour": "red"})
