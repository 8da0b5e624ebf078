"""The monitoring files, checked by the real tools: promtool, and a real Prometheus scraping the
embedded server under traffic, through which every dashboard and alert query must return data.

Needs Debian's `prometheus` package (`/usr/bin/prometheus`, `/usr/bin/promtool`); without it the
tests skip and say so. Prometheus scrapes every second, so the whole module takes seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import yaml
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.tensors import from_numpy
from tests.known_models import write_known_model
from tests.prometheus import Prometheus, binary
from tests.support import ROOT, ServerProcess

MONITORING = ROOT / "docker" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "serving.json"
RULES = MONITORING / "alerts.yml"
MODEL = "half"
# Grafana's variables in the dashboard's queries, as Grafana would expand them here: one model,
# and a rate window of several 1 s scrapes (Grafana's $__rate_interval is at least 4 scrapes).
GRAFANA_VARIABLES = {"$model": MODEL, "$__rate_interval": "10s"}
# The comparison that ends an alert expression, e.g. `> 0.05` or `== 0`.
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*[0-9.e+]+\s*$")
# One request in ERROR_EVERY fails (NOT_FOUND): errors show on the dashboard, yet the error
# ratio stays under the alert's 5%.
ERROR_EVERY = 40
QUERY_DEADLINE_S = 40.0


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_compose_prometheus_config():
    """Catches a config Prometheus would refuse at start-up (its rule file included)."""
    result = _run(binary("promtool"), "check", "config", str(MONITORING / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout, result.stdout


def test_promtool_accepts_the_alert_rules():
    result = _run(binary("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target in the dashboard, Grafana variables expanded."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unexpanded variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _traffic(channel, stop: threading.Event) -> None:
    """Predicts on the stable and canary versions; one in ERROR_EVERY names a missing version."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    sent = 0
    while not stop.is_set():
        sent += 1
        spec = model_pb2.ModelSpec(name=MODEL)
        if sent % ERROR_EVERY == 0:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=99))
        else:
            spec.version_label = "canary" if sent % 2 else "stable"
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.inputs["x"].CopyFrom(from_numpy(np.array([1.0, 2.0], np.float32)))
        try:
            stub.Predict(request, timeout=30)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.005)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Prometheus scraping the embedded server (stable and canary, batching, warmup) under load."""
    binary("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    base = root / "models" / MODEL
    write_known_model(base, 1, a=0.5, b=2.0, warmup="good")
    write_known_model(base, 2, a=1.0, b=0.0, warmup="good")
    config = root / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base}" '
        'model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }'
    )
    server = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={ROOT / 'serving' / 'monitoring.config'}",
        "--enable_batching",
        f"--batching_parameters_file={ROOT / 'serving' / 'batching.config'}",
        "--allow_version_labels_for_unavailable_models",
        log_path=root / "server.log",
    ).start()
    stop = threading.Event()
    senders = [
        threading.Thread(target=_traffic, args=(server.channel, stop), daemon=True)
        for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    prom = Prometheus(root, f"127.0.0.1:{server.rest_port}", rule_files=[RULES])
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()
        stop.set()
        for sender in senders:
            sender.join(30)
        assert server.stop() == 0, server.log()


def _wait_for_data(prom: Prometheus, expr: str, what: str) -> list[dict]:
    """The query's result once it is non-empty (scrapes and rate windows take a few seconds)."""
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while not (result := prom.query(expr)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: no data after {QUERY_DEADLINE_S} s for\n  {expr}")
        time.sleep(0.5)
    return result


def test_every_dashboard_query_returns_data(prometheus):
    """Catches a panel whose metric or label name is misspelt, or that the server never exports."""
    queries = _dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        _wait_for_data(prometheus, expr, f"panel {title!r}")


def test_the_dashboard_model_variable_lists_the_served_model(prometheus):
    """The `$model` drop-down's query (label_values(metric, label)) finds the configured model."""
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    match = re.fullmatch(r"label_values\((\S+), (\w+)\)", variable["query"]["query"])
    assert match, variable["query"]
    metric, label = match.groups()
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while MODEL not in prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric}):
        assert time.monotonic() < deadline, f"{MODEL} never appeared in {variable['query']}"
        time.sleep(0.5)


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_expression_has_data_and_stays_quiet_on_a_healthy_server(prometheus, rule):
    """Each alert's expression without its threshold returns data (so the alert can fire), and
    with it returns none while the server is healthy (so it does not fire for nothing).

    Healthy here: every version AVAILABLE, none loading, errors at 1 in ERROR_EVERY (under the
    5% of ServingHighErrorRatio), latencies in milliseconds (under ServingPredictLatencyP99High's
    0.5 s) and the target up. Catches a misspelt metric or label, and an inverted comparison.
    """
    expr = rule["expr"].strip()
    inner = THRESHOLD.sub("", expr)
    assert inner != expr, f"{rule['alert']}: no trailing threshold comparison in {expr}"
    _wait_for_data(prometheus, inner, f"alert {rule['alert']} (threshold removed)")
    assert prometheus.query(expr) == [], f"{rule['alert']} would fire on a healthy server"


def test_prometheus_loaded_every_rule_without_errors(prometheus):
    """The rules run inside Prometheus too: each is evaluated there without an error."""
    expected = {rule["alert"] for rule in _alerts()}
    deadline = time.monotonic() + QUERY_DEADLINE_S
    while True:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        evaluated = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules.values())
        if set(rules) == expected and evaluated:
            break
        assert time.monotonic() < deadline, f"rules loaded: {sorted(rules)}"
        time.sleep(0.5)
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"


def _scaler_queries() -> list[tuple[str, str]]:
    """(trigger name, PromQL) of every Prometheus trigger of the KEDA ScaledObject."""
    scaled = yaml.safe_load((ROOT / "docker" / "k8s" / "autoscaling-keda.yaml").read_text())
    return [
        (trigger["name"], trigger["metadata"]["query"])
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "prometheus"
    ]


@pytest.mark.parametrize(("name", "expr"), _scaler_queries())
def test_the_autoscaler_query_returns_one_request_rate(prometheus, name, expr):
    """KEDA's Prometheus scaler needs exactly one series (it refuses several, and with
    ignoreNullValues off an empty answer is an error): catches a misspelt metric or job label,
    and a query that forgot its sum() and yields one series per status or model."""
    result = _wait_for_data(prometheus, expr, f"ScaledObject trigger {name!r}")
    assert len(result) == 1, result
    # Under the fixture's traffic the rate is well above zero requests per second.
    assert float(result[0]["value"][1]) > 1.0, result
