"""docker/k8s/servicemonitor.yaml against the Prometheus Operator's ServiceMonitor CRD schema.

kubernetes-validate (tests/docker/test_static_tools.py) knows only Kubernetes' own kinds, so the
CRD is vendored (schemas/README.md names its source and version) and the manifest is validated
with jsonschema (tests/operations/crds.py). Then the manifest is tied to what it scrapes: the
Service in serving.yaml and the metrics path in serving/monitoring.config.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml

from serving.config import files as config_lib
from tests.operations.crds import crd_validator, load_crd, schema_errors
from tests.support import ROOT

MANIFEST = ROOT / "docker" / "k8s" / "servicemonitor.yaml"
SERVING = ROOT / "docker" / "k8s" / "serving.yaml"
CRD = "monitoring.coreos.com_servicemonitors.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return crd_validator(load_crd(CRD, "ServiceMonitor"), "v1")


@pytest.fixture(scope="module")
def monitor() -> dict:
    (document,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    return document


def test_manifest_matches_the_crd_schema(validator, monitor):
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert schema_errors(validator, monitor) == []


@pytest.mark.parametrize(
    ("path", "bad_value"),
    [
        (("spec", "endpoints", 0, "intervall"), "15s"),  # a misspelt field
        (("spec", "endpoints", 0, "scheme"), "ftp"),  # not in the enum
        (("spec", "endpoints", 0, "interval"), "15 seconds"),  # not a Prometheus duration
    ],
)
def test_the_schema_check_refuses_a_broken_manifest(validator, monitor, path, bad_value):
    """Proves the validation above can fail: each mistake alone is reported."""
    broken = copy.deepcopy(monitor)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad_value
    where = ".".join(map(str, path))
    assert schema_errors(validator, broken), f"{where}={bad_value!r} was accepted"


def test_monitor_selects_the_cluster_ip_service_port_and_path(monitor):
    """Catches a selector that matches no Service, a port name the Service lacks, a path other
    than monitoring.config's, or both Services scraped (every pod twice)."""
    services = [
        d for d in yaml.safe_load_all(SERVING.read_text()) if d and d.get("kind") == "Service"
    ]
    namespace = monitor["metadata"]["namespace"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [namespace]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in services
        if s["metadata"]["namespace"] == namespace
        and wanted.items() <= s["metadata"].get("labels", {}).items()
    ]
    assert selected, f"no Service in {namespace} has the labels {wanted}"
    monitoring = config_lib.read_monitoring_config(ROOT / "serving" / "monitoring.config")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == monitoring.prometheus_config.path
    # The relabelling keeps exactly one of the selected Services.
    (keep,) = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert keep["sourceLabels"] == ["__meta_kubernetes_service_name"]
    kept = [s for s in selected if re.fullmatch(keep["regex"], s["metadata"]["name"])]
    assert len(kept) == 1, [s["metadata"]["name"] for s in kept]
    assert endpoint["port"] in {p["name"] for p in kept[0]["spec"]["ports"]}
    # Its name becomes the job label, which the alert rules select on.
    rules = (ROOT / "docker" / "monitoring" / "alerts.yml").read_text()
    assert f'job="{kept[0]["metadata"]["name"]}"' in rules
