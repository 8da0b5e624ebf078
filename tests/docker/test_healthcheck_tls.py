"""docker/healthcheck.sh over HTTPS (HEALTHCHECK_CA/CERT/KEY), through curl or openssl.

TF Serving's REST port speaks no TLS; the embedded server's does with `--ssl_config_file`, so the
HTTPS port here is a real `python -m serving` under mutual TLS over the known-answer models.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.known_models import write_known_model
from tests.support import ServerProcess, TLSCertificates, free_port

pytestmark = pytest.mark.integration

HEALTHCHECK = os.path.join(os.path.dirname(__file__), "..", "..", "docker", "healthcheck.sh")
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_port(certs, tmp_path_factory):
    """The REST port of a server under mutual TLS that serves `half` and `triple`."""
    root = tmp_path_factory.mktemp("https-health")
    write_known_model(root / "half", 1)
    write_known_model(root / "triple", 1, a=3.0, b=0.0)
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
            for m in ("half", "triple")
        )
        + "}\n"
    )
    server = ServerProcess(
        f"--model_config_file={config}",
        f"--ssl_config_file={certs.ssl_config(client_verify=True)}",
        log_path=root / "server.log",
        credentials=certs.credentials(client="client"),
    )
    with server:
        yield server.rest_port


def only_tools(folder, *names: str) -> str:
    """A PATH with nothing but `names` (symlinked from this machine), to pick the TLS tool."""
    folder.mkdir(exist_ok=True)
    for name in names:
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed here")
        (folder / name).symlink_to(found)
    return str(folder)


def healthcheck(port: int, path: str = "/usr/bin:/bin", **env: str):
    return subprocess.run(
        [BASH, HEALTHCHECK],
        env={"PATH": path, "HEALTH_PORT": str(port), "HEALTH_MODELS": "half triple", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def tls_env(certs, ca: str = "server", client: str | None = "client") -> dict[str, str]:
    env = {"HEALTHCHECK_CA": str(certs.path(f"{ca}-ca.pem"))}
    if client is not None:
        env["HEALTHCHECK_CERT"] = str(certs.path(f"{client}.pem"))
        env["HEALTHCHECK_KEY"] = str(certs.path(f"{client}.key"))
    return env


def test_plain_http_is_unchanged(known_server):
    result = healthcheck(known_server.rest_port)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "healthy: half triple\n"
    missing = healthcheck(known_server.rest_port, HEALTH_MODELS="half not_served")
    assert missing.returncode == 1
    assert missing.stderr.startswith("unhealthy: not_served: HTTP/1.1 404")
    refused = healthcheck(free_port())
    assert refused.returncode == 1 and "unhealthy: cannot connect to" in refused.stderr


@pytest.mark.parametrize("tool", ["curl", "openssl"])
def test_https_with_a_client_certificate_is_healthy(https_port, certs, tmp_path, tool):
    path = only_tools(tmp_path / "bin", tool, "timeout")
    result = healthcheck(https_port, path, **tls_env(certs))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "healthy: half triple\n"


@pytest.mark.parametrize("tool", ["curl", "openssl"])
@pytest.mark.parametrize("mistake", ["no client certificate", "another CA"])
def test_https_that_fails_tls_is_unhealthy(https_port, certs, tmp_path, tool, mistake):
    env = {
        "no client certificate": tls_env(certs, client=None),
        "another CA": tls_env(certs, ca="rogue"),
    }[mistake]
    result = healthcheck(https_port, only_tools(tmp_path / "bin", tool, "timeout"), **env)
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: half: ") and result.stderr.count("\n") == 1


def test_https_without_curl_or_openssl_says_so(https_port, certs, tmp_path):
    result = healthcheck(https_port, only_tools(tmp_path / "bin"), **tls_env(certs))
    assert result.returncode == 1
    assert "neither curl nor openssl is installed to speak TLS" in result.stderr


def test_cert_without_key_says_so(https_port, certs):
    env = tls_env(certs)
    del env["HEALTHCHECK_KEY"]
    result = healthcheck(https_port, **env)
    assert result.returncode == 1
    assert "HEALTHCHECK_CERT and HEALTHCHECK_KEY go together" in result.stderr
