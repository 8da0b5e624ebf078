"""Shared test set-up: quiet TensorFlow logs and keep thread use stable on the 2-core machines."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

# The shared known-answer server: `half` (y = 0.5x + 2, one version, warmup file) and `triple`
# (y = 3x + v - 1 for versions 1 and 2, policy `all`, labels stable -> 1 and canary -> 2).
KNOWN_CONFIG = """
model_config_list {{
  config {{ name: "half" base_path: "{root}/half" model_platform: "tensorflow" }}
  config {{
    name: "triple" base_path: "{root}/triple" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""


@pytest.fixture(scope="session")
def known_server(tmp_path_factory):
    """One real `python -m serving` process over the known-answer models, for read-only tests."""
    from tests.known_models import write_known_model
    from tests.support import ServerProcess

    root = tmp_path_factory.mktemp("known")
    write_known_model(root / "models" / "half", 1, a=0.5, b=2.0, warmup="good")
    write_known_model(root / "models" / "triple", 1, a=3.0, b=0.0)
    write_known_model(root / "models" / "triple", 2, a=3.0, b=1.0)
    config = root / "models.config"
    config.write_text(KNOWN_CONFIG.format(root=root / "models"))
    (root / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    )
    server = ServerProcess(
        f"--model_config_file={config}",
        # The space-separated form must work as well as --flag=value.
        "--monitoring_config_file",
        str(root / "monitoring.config"),
        "--allow_version_labels_for_unavailable_models",
        "--rest_api_timeout_in_ms=20000",
        # Tests here send tensors of millions of items; the items cap has its own tests
        # (tests/serving/reliability/test_admission_limits.py).
        "--max_request_items=100000000",
        log_path=root / "server.log",
    )
    server.start()
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def shared_builds(tmp_path_factory):
    """Folders built once per run and shared by the xdist workers (`tests.support.SharedBuilds`)."""
    from tests.support import SharedBuilds

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base folder sits in the run's own folder, which all workers
    # share; without xdist the base folder is the run's own.
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return SharedBuilds(run / "shared-builds")


@pytest.fixture(scope="session")
def tiny_runs(shared_builds):
    """A finished tiny training run per model: {model name: run folder}. Read-only: the runs
    are trained once per test run and shared by every worker."""
    from common.contract import MODEL_NAMES
    from training.runner import train
    from training.tasks import get_task

    def build(model):
        task = get_task(model)
        return lambda run_dir: train(task, task.presets["tiny"], out=run_dir, seed=1, preset="tiny")

    # Side by side: a worker that finds one model in training elsewhere trains another.
    runs = shared_builds.folders({f"tiny-run-{model}": build(model) for model in MODEL_NAMES})
    return {model: runs[f"tiny-run-{model}"] for model in MODEL_NAMES}


class TinyExports:
    """The tiny runs exported as version 1, once per test run; `put` copies one into a base
    path of the caller's (the shared export itself stays untouched)."""

    def __init__(self, shared_builds, tiny_runs):
        self._builds = shared_builds
        self._runs = tiny_runs

    def put(self, model: str, base: Path) -> Path:
        """`base/<model>/1`, an export of the model's tiny run; returns that version folder."""
        from export import publish

        run = self._runs[model]
        shared = self._builds.folder(
            f"tiny-export-{model}", lambda folder: publish.export_run(model, run, folder, 1)
        )
        version = base / model / "1"
        shutil.copytree(shared / model / "1", version)
        return version


@pytest.fixture(scope="session")
def tiny_exports(shared_builds, tiny_runs) -> TinyExports:
    """`tiny_exports.put(model, base)`: the tiny run of `model` as `base/<model>/1`."""
    return TinyExports(shared_builds, tiny_runs)


@pytest.fixture(scope="session")
def tiny_server(tiny_exports, tmp_path_factory):
    """The three tiny runs exported as version 1 and served as `make serve` does (the shipped
    model, monitoring and batching configs), for tests that only call it; yields
    (server, {model: version folder}).

    Files that use it carry `pytest.mark.xdist_group(tests.support.TINY_SERVER)`, so that
    they run on one worker and start it once.
    """
    from tests.support import ROOT, ServerProcess

    root = tmp_path_factory.mktemp("tiny-server")
    models = root / "models"
    versions = {m: tiny_exports.put(m, models) for m in ("unet", "localizer", "generator")}
    serving = ROOT / "serving"
    server = ServerProcess(
        # The shipped config files, exactly as docker compose uses them.
        f"--model_config_file={serving / 'models.config'}",
        # The shipped config labels version 1 `stable` before it has loaded.
        "--allow_version_labels_for_unavailable_models",
        f"--monitoring_config_file={serving / 'monitoring.config'}",
        "--enable_batching",
        f"--batching_parameters_file={serving / 'batching.config'}",
        f"--base_path_map=/models={models}",
        log_path=root / "server.log",
    )
    with server:
        yield server, versions


def pytest_collection_modifyitems(config, items):
    from tests.scheduling import check_groups

    check_groups(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist=loadfile` keeps grouped files together (`tests/scheduling.py`)."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.scheduling import GroupedFileScheduling

    return GroupedFileScheduling(config, log)
