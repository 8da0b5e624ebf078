"""Static checks of docker/k8s/serving.yaml (no cluster: parse with PyYAML and check essentials)."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "docker" / "k8s" / "serving.yaml"
HEALTHCHECK = "/usr/local/bin/healthcheck.sh"


@pytest.fixture(scope="module")
def docs():
    loaded = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    assert loaded, "serving.yaml holds no documents"
    return loaded


def _one(docs, kind, name=None):
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(docs):
    return _one(docs, "Deployment", "tfserving")


@pytest.fixture(scope="module")
def pod(deployment):
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod):
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def _sec(pod, container, key):
    """The effective security setting: the container's overrides the pod's."""
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


def test_kinds_present(docs):
    kinds = [d["kind"] for d in docs]
    for kind in (
        "Namespace",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
    ):
        assert kind in kinds, kind
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {
        "tfserving",
        "tfserving-headless",
    }
    assert _one(docs, "Service", "tfserving-headless")["spec"]["clusterIP"] == "None"
    assert _one(docs, "Service", "tfserving")["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_everything_in_one_restricted_namespace(docs):
    namespace = _one(docs, "Namespace")
    name = namespace["metadata"]["name"]
    # The API server itself refuses pods that break the "restricted" Pod Security Standard.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The Namespace comes first, so `kubectl apply -f` creates it before what goes in it.
    assert docs[0] is namespace
    for doc in docs[1:]:
        assert doc["metadata"].get("namespace") == name, doc["metadata"]["name"]


def test_network_policy_admits_only_serving_ports(docs, deployment, container):
    policy = _one(docs, "NetworkPolicy")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    # Ingress only to gRPC and REST; with Egress listed and no egress rule, nothing goes out.
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert not policy.get("egress")
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {p["name"] for p in container["ports"]}


def test_container_ports(container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


@pytest.mark.parametrize("name", ["tfserving", "tfserving-headless"])
def test_service_ports_match_container(docs, container, name):
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    svc = _one(docs, "Service", name)
    ports = svc["spec"]["ports"]
    assert {p["name"] for p in ports} == {"grpc", "http"}
    for p in ports:
        target = p.get("targetPort", p["port"])
        # A named targetPort must name a container port; a numbered one must equal it.
        resolved = by_name.get(target) if isinstance(target, str) else target
        assert resolved == by_name[p["name"]], p
        assert p["port"] == by_name[p["name"]], p


@pytest.mark.parametrize("name", ["tfserving", "tfserving-headless"])
def test_service_selector_matches_pod_labels(docs, deployment, name):
    selector = _one(docs, "Service", name)["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector
    assert selector.items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_pdb_selects_the_pods(docs, deployment):
    pdb = _one(docs, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_probes(container):
    assert container["readinessProbe"]["exec"]["command"][0] == HEALTHCHECK
    startup = container["startupProbe"]
    assert startup["exec"]["command"][0] == HEALTHCHECK
    # Allow about ten minutes for the initial model load.
    assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 600
    liveness = container["livenessProbe"]
    assert liveness["tcpSocket"]["port"] in ("grpc", 8500)
    assert liveness.get("initialDelaySeconds", 0) >= 60


def test_models_volume_read_only(pod, container):
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    assert len(mounts) == 1
    assert mounts[0].get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    claim = volume["persistentVolumeClaim"]
    assert claim["claimName"] == "tfserving-models"
    assert claim.get("readOnly") is True


def test_pvc_read_only_many(docs):
    pvc = _one(docs, "PersistentVolumeClaim", "tfserving-models")
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_tmp_is_writable_emptydir(pod, container):
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    assert not mount.get("readOnly", False)


def test_security_context(pod, container):
    assert _sec(pod, container, "runAsNonRoot") is True
    assert _sec(pod, container, "runAsUser") == 10001
    sec = container["securityContext"]
    assert sec.get("readOnlyRootFilesystem") is True
    assert sec.get("allowPrivilegeEscalation") is False
    assert sec.get("capabilities", {}).get("drop") == ["ALL"]


def test_resources(container):
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key], key
        assert resources["limits"][key], key


def test_prometheus_annotations(deployment):
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == "/monitoring/prometheus/metrics"
    assert notes["prometheus.io/port"] == "8501"


def test_hpa_targets_deployment(docs, deployment):
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    assert spec["minReplicas"] <= deployment["spec"]["replicas"] <= spec["maxReplicas"]
    cpu = [m for m in spec["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert len(cpu) == 1
    assert cpu[0]["resource"]["target"]["averageUtilization"] == 70


def test_image_tag_matches_serving_api_pin(container):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        deps.extend(extra)
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"tensorflow-serving-api==(\S+)", d))]
    assert len(set(pins)) == 1, f"expected one tensorflow-serving-api pin, found {pins}"
    repo, _, tag = container["image"].rpartition(":")
    assert repo == "tfserving-stack/serving"
    assert tag == pins[0]


# Seconds the kubelet needs to close the container once the drain is over: the embedded server's
# last steps (gRPC's final wait and the unload, up to ~2 s) with room to spare.
CLOSE_MARGIN_S = 3
# Endpoint removal reaches kube-proxy, ingresses and DNS within seconds; less than this pause and
# calls still routed to the pod would find it stopped.
MIN_PRESTOP_S = 5


def _prestop_seconds(container) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    # Kubernetes' own sleep action: no `sleep` binary needed in the image.
    assert set(pre_stop) == {"sleep"}, pre_stop
    return pre_stop["sleep"]["seconds"]


def test_prestop_pauses_for_endpoint_removal(container):
    assert _prestop_seconds(container) >= MIN_PRESTOP_S


def test_grace_period_covers_prestop_and_the_drain(pod, container):
    """Catches a grace period at which the kubelet kills the embedded server mid-drain (the
    30 s default was below 10 s preStop + 30 s --drain_seconds)."""
    from serving.model_servers.flags import Options

    # No args in the manifest: the server runs with its default --drain_seconds.
    assert "args" not in container and "command" not in container
    drain = Options().drain_seconds
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= _prestop_seconds(container) + drain + CLOSE_MARGIN_S
