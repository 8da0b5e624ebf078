"""Reading the embedded server's Prometheus page in tests: scrape it and pick out samples."""

from __future__ import annotations

import http.client
import re

METRICS_PATH = "/monitoring/prometheus/metrics"
# One sample line of the text exposition: name, optional {labels}, value.
_SAMPLE = re.compile(r"^(?P<name>[^\s{]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def page(rest_port: int) -> str:
    """GET the metrics page of a server on loopback; anything but 200 fails the test."""
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
    try:
        connection.request("GET", METRICS_PATH)
        response = connection.getresponse()
        body = response.read().decode("utf-8")
    finally:
        connection.close()
    if response.status != 200:
        raise AssertionError(f"GET {METRICS_PATH} answered {response.status}: {body[:200]}")
    return body


def samples(text: str, name: str) -> dict[frozenset, float]:
    """The samples of one series name, keyed by their label set as (label, value) pairs."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            labels = frozenset(_LABEL.findall(match["labels"] or ""))
            found[labels] = float(match["value"])
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` with exactly these labels, or None if absent."""
    return samples(text, name).get(frozenset(labels.items()))
