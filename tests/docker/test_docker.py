"""Checks on docker/: lint, Compose schema, static security properties, and command-line parity.

No Docker engine is needed. The images are linted with hadolint and the Compose file is
validated against the Compose Specification schema; the parity test runs the embedded
`python -m serving` with exactly the serving service's `command:` flags (container paths mapped
onto this checkout) and checks docker/healthcheck.sh against it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from common.contract import MODEL_NAMES

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILES = ["serving.Dockerfile", "trainer.Dockerfile", "client.Dockerfile"]
MODELS = MODEL_NAMES
HEALTHCHECK = DOCKER / "healthcheck.sh"


def _tool(name: str) -> str:
    """A console script from PATH or from this interpreter's venv (the dev extras install it)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed; `make venv` installs it with the dev extras")
    return found


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _serving_command() -> list[str]:
    return [str(flag) for flag in _compose()["services"]["serving"]["command"]]


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    text = (DOCKER / dockerfile).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _pinned_serving_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["optional-dependencies"]["train"]:
        name, _, version = requirement.partition("==")
        if name.strip() == "tensorflow-serving-api":
            return version.strip()
    raise AssertionError("tensorflow-serving-api is not pinned in pyproject.toml")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_clean(dockerfile):
    hadolint = _tool("hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_matches_compose_spec_schema():
    checker = _tool("check-jsonschema")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_runs_as_non_root(dockerfile):
    users = [args for keyword, args in _instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile} has no USER"
    # The last USER is the one the container runs as.
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile} runs as {user}"


def test_serving_image_matches_pinned_serving_api():
    version = _pinned_serving_version()
    froms = [args for keyword, args in _instructions("serving.Dockerfile") if keyword == "FROM"]
    assert froms == [f"tensorflow/serving:{version}"]
    assert _compose()["services"]["serving"]["image"].endswith(f":{version}")


def test_compose_stop_grace_period_covers_the_drain():
    """Catches compose's default 10 s stop timeout, which kills the server mid-drain."""
    from serving.model_servers.flags import Options

    assert "--drain_seconds" not in " ".join(_serving_command())  # so the default applies
    grace = _compose()["services"]["serving"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
    assert seconds > Options().drain_seconds


def test_serving_command_ages_grpc_connections():
    """Clients balancing over a DNS name see new replicas only when a connection ends."""
    assert "--grpc_channel_arguments=grpc.max_connection_age_ms=60000" in _serving_command()


def test_serving_image_defaults_match_compose_command():
    """The image's CMD and compose's `command:` are the same production command line."""
    steps = dict(_instructions("serving.Dockerfile"))
    assert json.loads(steps["ENTRYPOINT"]) == ["tensorflow_model_server"]
    assert json.loads(steps["CMD"]) == _serving_command()
    assert "HEALTHCHECK" in steps and "/usr/local/bin/healthcheck.sh" in steps["HEALTHCHECK"]


def test_serving_service_is_hardened():
    services = _compose()["services"]
    serving = services["serving"]
    # Models are mounted read-only and the root filesystem is read-only too.
    assert "../models:/models:ro" in serving["volumes"]
    assert serving["read_only"] is True
    assert serving["restart"] == "unless-stopped"
    limits = serving["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    assert serving["healthcheck"]["test"] == ["CMD", "/usr/local/bin/healthcheck.sh"]
    assert {"8500:8500", "8501:8501"} <= set(serving["ports"])
    # The client waits for a healthy server; serving waits for a trainer only if there is one.
    assert services["client"]["depends_on"]["serving"]["condition"] == "service_healthy"
    trainer_dependency = serving["depends_on"]["trainer"]
    assert trainer_dependency["condition"] == "service_completed_successfully"
    assert trainer_dependency["required"] is False


def _map_to_checkout(flag: str) -> str:
    """`/config/X` (COPY'd from serving/X in serving.Dockerfile) -> this checkout's serving/X."""
    name, _, value = flag.partition("=")
    if value.startswith("/config/"):
        value = str(ROOT / "serving" / value.removeprefix("/config/"))
        return f"{name}={value}"
    return flag


def _run_healthcheck(port: int, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(HEALTHCHECK)],
        # The image's /config/models.config is the checkout's serving/models.config.
        env={
            "PATH": "/usr/bin:/bin",
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(port),
            "HEALTH_CONFIG": str(ROOT / "serving" / "models.config"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
def test_compose_command_serves_all_models(tiny_runs, tmp_path):
    """The serving service's flags, run by the embedded server, serve all three models."""
    from urllib.request import urlopen

    from export.publish import export_run
    from tests.support import ServerProcess, free_port, wait_for

    models = tmp_path / "models"
    for model in MODELS:
        export_run(model, tiny_runs[model], models)

    command = _serving_command()
    # ServerProcess chooses free ports and puts its own --port *before* the given flags, where
    # compose's --port=8500 would override it; so compose's two port flags are checked here and
    # left out, and every other flag goes through unchanged.
    assert "--port=8500" in command and "--rest_api_port=8501" in command
    flags = [_map_to_checkout(f) for f in command if not f.startswith(("--port=", "--rest_api"))]
    flags.append(f"--base_path_map=/models={models}")

    with ServerProcess(*flags, log_path=tmp_path / "server.log") as server:

        def available(model: str) -> bool:
            with urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/{model}") as response:
                body = json.load(response)
            return any(v["state"] == "AVAILABLE" for v in body["model_version_status"])

        for model in MODELS:
            wait_for(lambda m=model: available(m), timeout=60, message=f"{model} AVAILABLE")

        healthy = _run_healthcheck(server.rest_port)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        # A model the server does not have (404) makes the probe fail.
        missing = _run_healthcheck(server.rest_port, HEALTH_MODELS="unet not_served")
        assert missing.returncode != 0, missing.stdout
        assert "not_served" in missing.stderr

    # Nothing listening: the connection is refused and the probe fails.
    refused = _run_healthcheck(free_port())
    assert refused.returncode != 0
    assert "cannot connect" in refused.stderr


# Entry module of each Python image -> what it runs (`python -m ...` in the image).
IMAGE_ENTRIES = {
    "trainer.Dockerfile": ("training.cli", "export.cli"),
    "client.Dockerfile": ("client.demo", "client.cli"),
}


@pytest.mark.parametrize("dockerfile", sorted(IMAGE_ENTRIES))
def test_images_copy_every_package_their_commands_import(dockerfile):
    """A package the entry points import (directly or not) but the image lacks fails at run time."""
    import grimp

    copied = {
        source.rstrip("/")
        for keyword, args in _instructions(dockerfile)
        if keyword == "COPY"
        for source in args.split()[:-1]
        if source.endswith("/") and not source.startswith("--")
    }
    graph = grimp.build_graph("common", "client", "training", "export", "serving")
    needed = set()
    for entry in IMAGE_ENTRIES[dockerfile]:
        for module in graph.find_upstream_modules(entry) | {entry}:
            needed.add(module.split(".")[0])
    assert needed <= copied, f"{dockerfile} lacks {sorted(needed - copied)}"
