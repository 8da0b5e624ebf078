"""`python -m serving.rollout` with --ca/--cert/--key against a server under mutual TLS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving.rollout import cli as rollout
from tests.known_models import write_known_model
from tests.support import ROOT, ServerProcess, TLSCertificates

CONFIG = """
model_config_list {{
  config {{
    name: "half" base_path: "{base}/half" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> TLSCertificates:
    return TLSCertificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def served(certs, tmp_path_factory):
    """A mutual-TLS server of `half` version 1 (labelled stable); version 2 waits on disk."""
    root = tmp_path_factory.mktemp("rollout-tls")
    write_known_model(root / "half", 1, a=0.5, b=2.0)
    write_known_model(root / "half", 2, a=0.5, b=3.0)
    config = root / "models.config"
    config.write_text(CONFIG.format(base=root))
    server = ServerProcess(
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models",
        f"--ssl_config_file={certs.ssl_config(client_verify=True)}",
        log_path=root / "server.log",
        rest=False,
        credentials=certs.credentials(client="client"),
    )
    with server:
        yield server, config


def tool_flags(server, config, certs, client: str | None = "client") -> list[str]:
    flags = ["--server", f"127.0.0.1:{server.port}", "--config", str(config)]
    flags += ["--ca", str(certs.path("server-ca.pem"))]
    if client is not None:
        flags += ["--cert", str(certs.path(f"{client}.pem"))]
        flags += ["--key", str(certs.path(f"{client}.key"))]
    return flags


@pytest.mark.integration
def test_status_and_canary_over_mutual_tls(served, certs, capsys):
    server, config = served
    # The real `python -m serving.rollout` process, as an operator runs it.
    argv = [*tool_flags(server, config, certs), "--json", "status", "half"]
    result = subprocess.run(
        [sys.executable, "-m", "serving.rollout", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["half"]
    assert [(v["version"], v["state"]) for v in report["versions"]] == [(1, "AVAILABLE")]

    # A rollout step (HandleReloadConfigRequest, then status polls) over the same TLS options.
    assert rollout.main([*tool_flags(server, config, certs), "canary", "half", "2"]) == 0
    assert "canary: half stable=1 canary=2" in capsys.readouterr().out
    assert rollout.main([*tool_flags(server, config, certs), "--json", "status"]) == 0
    labels = json.loads(capsys.readouterr().out)["half"]["labels"]
    assert labels == {"stable": 1, "canary": 2}


@pytest.mark.integration
@pytest.mark.parametrize("client", [None, "rogue-client"])
def test_without_a_trusted_client_certificate_the_tool_fails_in_one_line(
    served, certs, capsys, client
):
    server, config = served
    argv = [*tool_flags(server, config, certs, client), "--timeout", "5", "status"]
    assert rollout.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m serving.rollout: UNAVAILABLE: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ca", "/nowhere/ca.pem"], "TLS ca file /nowhere/ca.pem does not exist"),
        (["--key", "client.key"], "TLS key given without cert"),
    ],
)
def test_tls_option_mistakes_are_usage_errors(tmp_path, capsys, argv, message):
    config = tmp_path / "models.config"
    config.write_text(CONFIG.format(base=tmp_path))
    flags = ["--server", "127.0.0.1:1", "--config", str(config), *argv, "status"]
    assert rollout.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m serving.rollout: error: {message}")
    assert err.count("\n") == 1
