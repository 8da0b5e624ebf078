"""The reliability suite: every test in this folder carries the `reliability` marker.

Run it alone with `pytest -m reliability` (it is part of `make test`). Tests elsewhere that
cover one of its categories carry the marker too.
"""

from pathlib import Path

import pytest

VISION_MODELS = ("unet", "localizer")
VISION_CONFIG = """model_config_list {{
  config {{ name: "unet" base_path: "{root}/unet" model_platform: "tensorflow" }}
  config {{ name: "localizer" base_path: "{root}/localizer" model_platform: "tensorflow" }}
}}
"""


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def vision_models(tiny_exports, tmp_path_factory) -> Path:
    """The tiny unet and localizer exported (pixel budget in their graphs and manifests), and a
    `models.config` serving both: a folder holding `models/` and `models.config`."""
    root = tmp_path_factory.mktemp("vision")
    for model in VISION_MODELS:
        tiny_exports.put(model, root / "models")
    (root / "models.config").write_text(VISION_CONFIG.format(root=root / "models"))
    return root


@pytest.fixture(scope="session")
def vision_server(vision_models):
    """One server of `vision_models` (gRPC and REST), shared by the tests that only call it."""
    from tests.support import ServerProcess

    server = ServerProcess(
        f"--model_config_file={vision_models / 'models.config'}", log_path=vision_models / "log"
    )
    with server:
        yield server
