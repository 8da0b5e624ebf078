"""The KEDA, Argo Rollouts, Flagger and KServe manifests against their projects' CRD schemas, and
tied to what they name: the Deployment, HPA, PVC and Services of serving.yaml, the gate service,
the rollout CLI's own parser and the TF Serving release the stack pins.

kubernetes-validate and checkov know only Kubernetes' own kinds (the gate's Deployment, Service
and NetworkPolicy are theirs, in tests/docker/test_static_tools.py), so each custom kind is
validated with jsonschema against the CRD vendored in schemas/ (README.md there names the release).
"""

from __future__ import annotations

import copy
import re
import shlex
from urllib.parse import urlsplit

import pytest
import yaml

from common.contract import MODEL_NAMES
from tests.operations.crds import crd_validator, load_crd, schema_errors
from tests.support import ROOT

K8S = ROOT / "docker" / "k8s"
# Manifest (under docker/k8s/) -> (kind, vendored CRD file, version) of its custom resources.
CUSTOM = {
    "autoscaling-keda.yaml": ("ScaledObject", "keda.sh_scaledobjects.yaml", "v1alpha1"),
    "rollouts/analysis-template.yaml": (
        "AnalysisTemplate",
        "argoproj.io_analysistemplates.yaml",
        "v1alpha1",
    ),
    "rollouts/flagger-canary.yaml": ("Canary", "flagger.app_crds.yaml", "v1beta1"),
    "rollouts/kserve.yaml": (
        "InferenceService",
        "serving.kserve.io_inferenceservices.yaml.gz",
        "v1beta1",
    ),
}


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _one(name: str, kind: str, metadata_name: str | None = None) -> dict:
    found = [
        d
        for d in _documents(name)
        if d["kind"] == kind and metadata_name in (None, d["metadata"]["name"])
    ]
    assert len(found) == 1, f"{name}: expected one {kind} {metadata_name or ''}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def validators() -> dict[str, object]:
    return {
        manifest: crd_validator(load_crd(file, kind), version)
        for manifest, (kind, file, version) in CUSTOM.items()
    }


@pytest.mark.parametrize("manifest", sorted(CUSTOM))
def test_manifest_matches_its_crd_schema(validators, manifest):
    kind, file, version = CUSTOM[manifest]
    crd = load_crd(file, kind)
    documents = _documents(manifest)
    assert documents, f"{manifest} holds no document"
    for document in documents:
        assert document["kind"] == kind
        assert document["apiVersion"] == f"{crd['spec']['group']}/{version}"
        # Same namespace as serving.yaml's resources, which they name.
        assert document["metadata"]["namespace"] == "tfserving"
        assert schema_errors(validators[manifest], document) == [], document["metadata"]["name"]


# (manifest, path to a value, the wrong value): each is refused by the schema alone.
BROKEN = [
    # A misspelt field, and a count that is not an integer.
    ("autoscaling-keda.yaml", ("spec", "minReplicaCont"), 2),
    ("autoscaling-keda.yaml", ("spec", "fallback", "replicas"), "four"),
    # A Job field misspelt inside the embedded JobSpec.
    (
        "rollouts/analysis-template.yaml",
        ("spec", "metrics", 0, "provider", "job", "spec", "backofLimit"),
        0,
    ),
    # A webhook type Flagger does not know, and a timeout not in its pattern.
    ("rollouts/flagger-canary.yaml", ("spec", "analysis", "webhooks", 0, "type"), "pre-rolout"),
    (
        "rollouts/flagger-canary.yaml",
        ("spec", "analysis", "webhooks", 0, "timeout"),
        "five minutes",
    ),
    # A percentage written as text, and storageUri misspelt.
    ("rollouts/kserve.yaml", ("spec", "predictor", "canaryTrafficPercent"), "10%"),
    ("rollouts/kserve.yaml", ("spec", "predictor", "model", "storageURI"), "pvc://x/y"),
]


@pytest.mark.parametrize(("manifest", "path", "bad"), BROKEN)
def test_the_schema_check_refuses_a_broken_manifest(validators, manifest, path, bad):
    """Proves each CRD's validation can fail: one mistake alone is reported."""
    broken = copy.deepcopy(_documents(manifest)[0])
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad
    where = ".".join(map(str, path))
    assert schema_errors(validators[manifest], broken), f"{where}={bad!r} was accepted"


def test_scaled_object_takes_over_the_cpu_hpa():
    """Catches a second HPA on the Deployment (KEDA's own name, no ownership transfer), other
    bounds than the HPA's, and a CPU trigger that drifted from the HPA's target."""
    scaled = _one("autoscaling-keda.yaml", "ScaledObject")
    hpa = _one("serving.yaml", "HorizontalPodAutoscaler")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    _one("serving.yaml", "Deployment", spec["scaleTargetRef"]["name"])
    assert (
        scaled["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] == hpa["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert triggers["cpu"]["metricType"] == "Utilization"
    assert (
        int(triggers["cpu"]["metadata"]["value"]) == cpu["resource"]["target"]["averageUtilization"]
    )


def test_scaled_object_query_counts_requests_of_the_scraped_job():
    """The query's job is the one the ServiceMonitor produces (its kept Service's name), and the
    query is a sum (KEDA refuses a result with several series)."""
    (trigger,) = [
        t
        for t in _one("autoscaling-keda.yaml", "ScaledObject")["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    query = trigger["metadata"]["query"]
    assert query.startswith("sum(")
    assert ":tensorflow:serving:request_count" in query
    monitor = _one("servicemonitor.yaml", "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    (keep,) = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert f'job="{keep["regex"]}"' in query
    assert float(trigger["metadata"]["threshold"]) > 0
    # Fallback needs a trigger that is not cpu or memory with an AverageValue target: the
    # Prometheus trigger's default.
    assert trigger.get("metricType", "AverageValue") == "AverageValue"


def _rollout_args(argv: list[str]):
    """The rollout CLI's parse of `argv` (after `python -m serving.rollout`)."""
    from common.cli import parse_args
    from serving.rollout.cli import build_parser

    parsed = parse_args(build_parser(), argv)
    assert not isinstance(parsed, int), f"the rollout CLI refuses {shlex.join(argv)}"
    return parsed


def _command(container: dict) -> list[str]:
    command = container["command"]
    assert command[:3] == ["python", "-m", "serving.rollout"], command
    return command[3:]


def _config_volume(pod: dict, container: dict, path: str) -> dict:
    """The volume that holds `path` in the container."""
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def _check_gate_pod(pod: dict, container: dict, args) -> None:
    """What the gates read is where the pod mounts it: the ConfigMap serving.yaml's header
    generates, and the model volume at the paths models.config names."""
    assert _config_volume(pod, container, args.config)["configMap"]["name"] == "tfserving-config"
    claim = _one("serving.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    models = _config_volume(pod, container, "/models/unet")
    assert models["persistentVolumeClaim"]["claimName"] == claim
    # The image with serving.rollout and TensorFlow in it: the trainer's (its Dockerfile copies
    # serving/ and installs `.[train]`).
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["trainer"]["image"]
    dockerfile = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert "COPY serving/ serving/" in dockerfile and '".[train]"' in dockerfile


def test_analysis_template_runs_verify_with_a_real_command_line():
    """Catches a command the rollout CLI refuses (a misplaced option, a misspelt flag), an
    argument that is never substituted, and a Job Argo would retry after a failed gate."""
    template = _one("rollouts/analysis-template.yaml", "AnalysisTemplate")
    defaults = {a["name"]: a["value"] for a in template["spec"]["args"]}
    assert defaults["model"] in MODEL_NAMES
    (metric,) = template["spec"]["metrics"]
    assert metric["failureLimit"] == 0 and metric.get("count", 1) == 1
    job = metric["provider"]["job"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    argv = _command(container)
    used = set(re.findall(r"\{\{args\.(\w+)\}\}", " ".join(argv)))
    assert used == set(defaults), f"args used {used}, declared {set(defaults)}"
    filled = [re.sub(r"\{\{args\.(\w+)\}\}", lambda m: defaults[m[1]], a) for a in argv]
    args = _rollout_args(filled)
    assert args.command == "verify" and args.model == defaults["model"]
    assert args.monitoring_config_file.startswith("/config/")
    _check_gate_pod(pod, container, args)


def test_flagger_webhook_reaches_the_gate_service():
    """The Canary's webhook URL names the gate Service, its port and the gate's path, and the
    service behind it listens where the Service sends it."""
    canary = _one("rollouts/flagger-canary.yaml", "Canary")
    spec = canary["spec"]
    _one("serving.yaml", "Deployment", spec["targetRef"]["name"])
    _one("serving.yaml", "HorizontalPodAutoscaler", spec["autoscalerRef"]["name"])
    (hook,) = spec["analysis"]["webhooks"]
    assert hook["metadata"]["model"] in MODEL_NAMES
    url = urlsplit(hook["url"])
    assert (url.scheme, url.path) == ("http", "/gate")
    service_name, namespace = url.hostname.split(".")[:2]
    service = _one("rollouts/gate.yaml", "Service", service_name)
    assert service["metadata"]["namespace"] == namespace
    (port,) = service["spec"]["ports"]
    assert port["port"] == (url.port or 80)
    deployment = _one("rollouts/gate.yaml", "Deployment", service_name)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port["targetPort"]] == 8080
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["targetPort"]}
    argv = _command(container)
    assert f"--listen=0.0.0.0:{ports[port['targetPort']]}" in argv[argv.index("webhook") :]
    assert "--server=tfserving-canary.tfserving.svc.cluster.local:8500" in argv


def test_gate_service_command_line_parses():
    """The gate's command line, through the rollout CLI's parser (once it has `webhook`)."""
    from serving.rollout.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    if "webhook" not in commands.choices:
        pytest.skip("serving.rollout has no `webhook` sub-command in this checkout yet")
    deployment = _one("rollouts/gate.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = _rollout_args(_command(container))
    assert args.command == "webhook"
    assert args.monitoring_config_file.startswith("/config/")
    _check_gate_pod(pod, container, args)


def _serving_api_pin() -> str:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = {
        d.partition("==")[2]
        for deps in project["optional-dependencies"].values()
        for d in deps
        if d.startswith("tensorflow-serving-api==")
    }
    return pin


def test_kserve_serves_the_three_models_from_the_shared_volume():
    """One InferenceService per model, read from its base path on serving.yaml's PVC, on the TF
    Serving release the stack pins, with a canary share that is neither none nor all."""
    services = _documents("rollouts/kserve.yaml")
    assert sorted(s["metadata"]["name"] for s in services) == sorted(MODEL_NAMES)
    claim = _one("serving.yaml", "PersistentVolumeClaim")["metadata"]["name"]
    for service in services:
        name, predictor = service["metadata"]["name"], service["spec"]["predictor"]
        assert 0 < predictor["canaryTrafficPercent"] < 100
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        model = predictor["model"]
        assert model["modelFormat"]["name"] == "tensorflow"
        assert model["storageUri"] == f"pvc://{claim}/{name}"
        assert model["runtimeVersion"] == _serving_api_pin()


def test_every_vendored_schema_names_its_source():
    """A CRD file added without its README row (project, tag, commit), or a row left behind."""
    from tests.operations.crds import SCHEMAS

    readme = (SCHEMAS / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    files = {p.name for p in SCHEMAS.iterdir() if p.name != "README.md"}
    assert rows == files
    assert {file for _, file, _ in CUSTOM.values()} <= files
