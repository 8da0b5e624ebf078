"""docker/healthcheck.sh probes the models that models.config names; the containers rely on it.

The readiness of a pod (k8s), of the compose service and of the image's HEALTHCHECK all run the
script without HEALTH_MODELS, so the model list is whatever the server's models.config names.
Here a real `python -m serving` serves models whose names need %-encoding in a URL path, and the
probe is pointed at config files written in the ways text-format protobuf allows.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.known_models import write_known_model
from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.integration

DOCKER = ROOT / "docker"
HEALTHCHECK = DOCKER / "healthcheck.sh"
BASH = shutil.which("bash")
# A space, a colon and a non-ASCII letter: a raw name in the request line would split it, be read
# as a `:predict`-style verb, or be sent as bytes the server cannot route.
ODD = "half plus:two é"


def _config(root: Path, names: list[str], one_line: bool = False) -> str:
    entries = [
        f'config {{ name: "{name}" base_path: "{root / str(i)}" model_platform: "tensorflow" }}'
        for i, name in enumerate(names)
    ]
    if one_line:
        return "model_config_list { " + " ".join(entries) + " }\n"
    return "model_config_list {\n" + "".join(f"  {e}\n" for e in entries) + "}\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(root, REST port) of a server over two models, one of them named ODD."""
    root = tmp_path_factory.mktemp("health-config")
    for i in range(2):
        write_known_model(root / str(i), 1)
    config = root / "models.config"
    config.write_text(_config(root, ["half", ODD]))
    with ServerProcess(f"--model_config_file={config}", log_path=root / "server.log") as server:
        yield root, server.rest_port


def probe(port: int, config: Path) -> subprocess.CompletedProcess:
    # No HEALTH_MODELS: the names come from the config, as in the containers.
    return subprocess.run(
        [BASH, str(HEALTHCHECK)],
        env={"PATH": "/usr/bin:/bin", "HEALTH_PORT": str(port), "HEALTH_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("one_line", [False, True], ids=["one-per-line", "all-on-one-line"])
def test_probes_every_model_the_config_names_url_encoded(served, tmp_path, one_line):
    """Catches a name sent raw in the request line (400 or 404) and a parser that only sees a
    `name:` at the start of a line."""
    root, port = served
    config = tmp_path / "models.config"
    config.write_text('# name: "commented_out"\n' + _config(root, ["half", ODD], one_line))
    result = probe(port, config)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"healthy: half {ODD}\n"


def test_a_configured_model_the_server_lacks_is_unhealthy(served, tmp_path):
    """The list is the config's, not a built-in one: a model added there is waited for."""
    root, port = served
    config = tmp_path / "models.config"
    config.write_text(_config(root, ["half", ODD, "new model"]))
    result = probe(port, config)
    assert result.returncode == 1
    assert result.stderr == "unhealthy: new model: HTTP/1.1 404 Not Found\n"


def test_a_config_naming_no_model_is_unhealthy(served, tmp_path):
    """An empty list would otherwise pass with nothing probed."""
    _, port = served
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n}\n")
    result = probe(port, config)
    assert result.returncode == 1
    assert result.stderr == f'unhealthy: {config} names no model (no `name: "..."` field)\n'


def _server_config_path() -> str:
    """The --model_config_file the server runs with (compose's `command:`, which
    test_docker.py holds equal to the image's CMD), after checking the image has the file there."""
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]["serving"]
    (flag,) = [f for f in compose["command"] if f.startswith("--model_config_file=")]
    path = flag.partition("=")[2]
    copied = "COPY serving/models.config serving/batching.config serving/monitoring.config"
    assert f"{copied} {Path(path).parent}/" in (DOCKER / "serving.Dockerfile").read_text()
    return path


def test_container_probes_read_the_servers_own_config():
    """The image, compose and k8s probes run the script with no HEALTH_MODELS or HEALTH_CONFIG,
    so it reads its default path, which must be the file the server is started with."""
    script = HEALTHCHECK.read_text()
    assert 'config="${HEALTH_CONFIG:-' + _server_config_path() + '}"' in script

    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]["serving"]
    assert compose["healthcheck"]["test"] == ["CMD", "/usr/local/bin/healthcheck.sh"]
    assert "environment" not in compose

    manifest = yaml.safe_load_all((DOCKER / "k8s" / "serving.yaml").read_text())
    (deployment,) = [d for d in manifest if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "args" not in container and "command" not in container  # the image's CMD
    for probe_name in ("startupProbe", "readinessProbe"):
        assert container[probe_name]["exec"]["command"] == ["/usr/local/bin/healthcheck.sh"]
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"HEALTH_MODELS", "HEALTH_CONFIG"}
