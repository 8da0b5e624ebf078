"""The server's Prometheus endpoint: request counts by status for the error-rate gate.

TF Serving (and the embedded server) serve `:tensorflow:serving:request_count{model_name,status}`
on the REST port at the path of `--monitoring_config_file`. It carries the model name but no
version, so it gives the model's error rate over a window (both versions, every client), not the
canary's: the tool counts its own requests per version for that.

Example:
    url = metrics_url("127.0.0.1:8500", 8501, "serving/monitoring.config", tls=None)
    before = request_counts(scrape(url), "unet")
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from client.transports.tls import TLSFiles
from serving.config.files import ConfigError, prometheus_path, read_monitoring_config

REQUEST_COUNT = ":tensorflow:serving:request_count"
_SAMPLE = re.compile(r"^(?P<name>[^{\s]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class MetricsError(Exception):
    """The metrics endpoint could not be read."""


def metrics_url(server: str, rest_port: int, monitoring_config: str, tls: TLSFiles | None) -> str:
    """The URL of the Prometheus endpoint: the gRPC host, the REST port, the config's path.

    Raises:
        MetricsError: the monitoring config cannot be read or does not enable Prometheus.
    """
    try:
        path = prometheus_path(read_monitoring_config(monitoring_config))
    except ConfigError as error:
        raise MetricsError(f"--monitoring_config_file: {error}") from None
    if path is None:
        raise MetricsError(f"{monitoring_config} does not enable prometheus_config")
    host = server.rsplit(":", 1)[0]
    scheme = "http" if tls is None else "https"
    return f"{scheme}://{host}:{rest_port}{path}"


def scrape(url: str, tls: TLSFiles | None = None, timeout: float = 10.0) -> str:
    """The endpoint's text.

    Raises:
        MetricsError: it cannot be fetched.
    """
    context = None if tls is None else tls.ssl_context()
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as error:
        raise MetricsError(f"cannot read metrics at {url}: {error}") from None


def request_counts(text: str, model: str) -> dict[str, float]:
    """Status -> request_count of `model` (every API and version together)."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != REQUEST_COUNT:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        if labels.get("model_name") != model:
            continue
        status = labels.get("status", "")
        counts[status] = counts.get(status, 0.0) + float(match["value"])
    return counts


def window(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """{"requests", "errors"} between two readings; a counter that went down was reset.

    Raises:
        MetricsError: the server restarted within the window (a counter went down).
    """
    delta = {s: after.get(s, 0.0) - before.get(s, 0.0) for s in set(before) | set(after)}
    if any(value < 0 for value in delta.values()):
        raise MetricsError("request_count went down: the server restarted during the window")
    total = sum(delta.values())
    errors = sum(value for status, value in delta.items() if status != "OK")
    return {"requests": int(total), "errors": int(errors)}
