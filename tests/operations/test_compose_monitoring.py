"""The compose profile `monitoring`: what Prometheus and Grafana read is what the server serves.

Static, since no Docker engine runs here (docs/architecture.md); tests/docker checks the whole
compose file against the Compose schema. These checks tie the profile to the files it mounts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from serving.config import files as config_lib
from tests.support import ROOT

DOCKER = ROOT / "docker"
PROFILE_SERVICES = ("prometheus", "grafana")


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())["services"]


def _bind_mounts(service: dict) -> list[tuple[Path, str, str]]:
    """(host path, container path, mode) of the service's bind mounts (named volumes left out)."""
    mounts = []
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("."):
            mounts.append((DOCKER / source, target, mode[0] if mode else "rw"))
    return mounts


@pytest.mark.parametrize("name", PROFILE_SERVICES)
def test_profile_service_is_pinned_and_mounts_its_files_read_only(services, name):
    """Catches a floating image tag, a writable config mount, or a mount of a missing file."""
    service = services[name]
    assert service["profiles"] == ["monitoring"]
    image, _, tag = service["image"].partition(":")
    assert image in ("prom/prometheus", "grafana/grafana"), image
    # A full release version: never `latest`, nor a major or minor line that moves.
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), service["image"]
    mounts = _bind_mounts(service)
    assert mounts
    for source, target, mode in mounts:
        assert source.exists(), f"{name} mounts {source}, which does not exist"
        assert mode == "ro", f"{name} mounts {target} writable"


def test_prometheus_scrapes_the_serving_port_and_path(services):
    """The scrape target is the serving service's REST port, at monitoring.config's path."""
    prometheus = yaml.safe_load((DOCKER / "monitoring" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    monitoring = config_lib.read_monitoring_config(ROOT / "serving" / "monitoring.config")
    assert monitoring.prometheus_config.enable
    assert job["metrics_path"] == monitoring.prometheus_config.path
    (target,) = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert host == "serving"
    assert f"--rest_api_port={port}" in services["serving"]["command"]
    # The rule file named in the config is the one mounted beside it.
    mounted = {target: source for source, target, _ in _bind_mounts(services["prometheus"])}
    for rule_file in prometheus["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounted, rule_file


def test_grafana_provisions_the_dashboard_and_its_datasource(services):
    """The dashboard's datasource uid is the provisioned one, and the provider path is mounted."""
    mounted = {target: source for source, target, _ in _bind_mounts(services["grafana"])}
    provisioning = mounted["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "serving.yml").read_text())[
        "providers"
    ]
    dashboards = mounted[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "serving.json").read_text())
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}
