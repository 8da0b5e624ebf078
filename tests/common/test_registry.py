"""Each stage's per-model registry names exactly the models of the contract registry."""

import pytest

from client.models import IMAGE_MODELS
from common.contract import CONTRACTS, MODEL_NAMES, model_contract
from export.models import EXPORTS, export_module
from training.tasks import get_task


def test_every_stage_registers_every_model():
    assert MODEL_NAMES == ("unet", "localizer", "generator")
    assert set(EXPORTS) == set(CONTRACTS)
    assert set(IMAGE_MODELS) <= set(CONTRACTS)
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
