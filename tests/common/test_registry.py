"""Each stage's per-model registry names exactly the models of the contract registry."""

import re
import tomllib
from pathlib import Path

import pytest

from client.canary.comparisons import COMPARISONS
from client.models import IMAGE_MODELS
from common.contract import MODEL_NAMES, model_contract
from export.models import EXPORTS, export_module
from training import tasks
from training.tasks import get_task

SERVING = Path(__file__).resolve().parents[2] / "serving"


def test_every_stage_registers_every_model():
    # Equality, not a subset: a fourth model added to the contracts but missing from any stage
    # (or left in one stage after it is removed) fails here, naming the registry.
    names = set(MODEL_NAMES)
    assert MODEL_NAMES == ("unet", "localizer", "generator")
    assert set(tasks._FACTORIES) == names, "training/tasks.py _FACTORIES"
    assert set(EXPORTS) == names, "export/models EXPORTS"
    assert set(COMPARISONS) == names, "client/canary/comparisons.py COMPARISONS"
    image_models = {name for name, c in COMPARISONS.items() if c.inputs == "images"}
    assert set(IMAGE_MODELS) == image_models, "client/models.py IMAGE_MODELS (the image models)"
    served = re.findall(r'name: "([^"]+)"', (SERVING / "models.config").read_text())
    assert sorted(served) == sorted(names), "serving/models.config"
    gates = tomllib.loads((SERVING / "rollout" / "gates.toml").read_text())
    assert set(gates) - {"service"} == names, "serving/rollout/gates.toml"
    golden = {p.name for p in (SERVING / "rollout" / "golden").iterdir() if p.is_dir()}
    assert golden == names, "serving/rollout/golden/"
    for name in MODEL_NAMES:
        task = get_task(name)
        assert task.name == name
        # The contract a run's config gives is the registry's, at the config's sizes.
        contract = task.contract(task.presets["tiny"])
        assert contract.model_name == name
        assert export_module(name).input_kinds


def test_unknown_models_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid models: unet, localizer, generator"):
        model_contract("resnet")
    with pytest.raises(ValueError, match="valid models and inputs: unet: image, image_bytes"):
        export_module("resnet")


def test_served_shapes_rebuild_the_contract():
    shapes = {
        ("serving_default", "inputs", "image"): [-1, 96, 96, 3],
        ("serving_default", "outputs", "class_probs"): [-1, 5],
        ("serving_default", "inputs", "z"): [-1, 32],
        ("serving_default", "outputs", "images"): [-1, 28, 28, 1],
    }

    def shape_of(signature, side, alias):
        return shapes[(signature, side, alias)]

    assert model_contract("unet").served(shape_of).preprocessing.size == (96, 96)
    localizer = model_contract("localizer").served(shape_of)
    assert localizer.class_names == tuple(f"class_{i}" for i in range(5))
    assert model_contract("generator").served(shape_of).latent_dim == 32
