"""Prometheus metrics under TF Serving's metric names (`:tensorflow:serving:request_count`, ...).

TF Serving exports TF monitoring metrics with every non-alphanumeric character of the name turned
into `:`, and its counters carry no `_total` suffix. The exposition is written here rather than with
`prometheus_client`, whose counters always append `_total`, so dashboards built for the real
server work unchanged.

Labels are bounded: `model_name` is a configured model or `UNKNOWN_MODEL`, never a name a client
made up (TF Serving keeps one series per name any client sends). A model that a reload removes
keeps its series, since counters must not go down while the process lives; requests naming it
afterwards are unknown. The other labels come from the server: the API, the entrypoint, a status
code name, a model path, a thread pool name.

Two metric families exist only on this embedded server, since TF Serving's metrics carry no
version: `serving_embedded_version_state` (one series per configured model, version and state,
1 for the version's current state) and `serving_embedded_version_request_latency` (the latency of
the requests each version answered). Their names do not start with `:tensorflow:` so that no
dashboard mistakes them for TF Serving's.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

# The `model_name` of requests naming no configured model (or none at all).
UNKNOWN_MODEL = "(unknown)"

# TF Serving's latency histograms: exponential buckets from 10 us by a factor 1.8 (33 of them).
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    pairs = []
    for name, value in zip(names, values, strict=True):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        pairs.append(f'{name}="{text}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Histogram:
    """Observations in fixed buckets, exported as `_bucket`, `_sum` and `_count`."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str], buckets=LATENCY_BUCKETS_US
    ):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.buckets = tuple(buckets)
        self._series: dict[tuple[str, ...], list] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            counts, total = self._series.setdefault(labels, [[0] * (len(self.buckets) + 1), 0.0])
            index = next(
                (i for i, edge in enumerate(self.buckets) if value <= edge), len(self.buckets)
            )
            counts[index] += 1
            self._series[labels][1] = total + value

    def count(self, *labels: str) -> int:
        with self._lock:
            series = self._series.get(labels)
            return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(v[0]), v[1])) for k, v in self._series.items())
        lines = []
        for labels, (counts, total) in items:
            running = 0
            names = (*self.label_names, "le")
            for edge, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                lines.append(
                    f"{self.name}_bucket{_labels(names, (*labels, _number(edge)))} {running}"
                )
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {running}")
        return lines


# GetModelStatus's states, in lifecycle order: every version has one series per state.
VERSION_STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")

# (model, version, its labels, its state) for every version of a configured model.
VersionRow = tuple[str, int, Sequence[str], str]


class VersionStateGauge:
    """The state of every version, read from the version manager when the metrics are scraped.

    A version has one series per state in `VERSION_STATES`, valued 1 for its current state and 0
    for the others, so `== 1` selects versions in a state and a version that leaves a state
    shows up as a 0 rather than as a series that vanishes. The `label` label holds the version
    labels (`stable`, `canary`) that point at it, sorted and comma-separated, or "".
    """

    kind = "gauge"
    label_names = ("model_name", "version", "label", "state")

    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._source: Callable[[], Sequence[VersionRow]] = tuple

    def watch(self, source: Callable[[], Sequence[VersionRow]]) -> None:
        """Reads versions from `source` (e.g. `ModelManager.version_states`) from now on."""
        self._source = source

    def samples(self) -> list[str]:
        lines = []
        for model, version, labels, state in sorted(self._source()):
            if state not in VERSION_STATES:
                raise ValueError(f"unknown version state {state!r}; valid: {VERSION_STATES}")
            label = ",".join(sorted(labels))
            for name in VERSION_STATES:
                values = (model, str(version), label, name)
                lines.append(f"{self.name}{_labels(self.label_names, values)} {int(name == state)}")
        return lines


class Metrics:
    """The server's metrics, named as TF Serving names them."""

    def __init__(self):
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
        )
        self.model_warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
        )
        self.batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing.",
            ("model_name", "op_name"),
            buckets=tuple(2**i for i in range(11)),
        )
        # TensorFlow's SavedModel loader counts these (loader.cc), and TF Serving exports them.
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
        )
        self.load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
        )
        # TF Serving's RequestLogger counts each sampled request by the status of handing it to
        # its LogCollector; here that is the record's outcome (written, dropped, failed).
        self.request_log_count = Counter(
            ":tensorflow:serving:request_log_count",
            "The total number of requests logged from the model server sliced down by "
            "model_name and status code.",
            ("model_name", "status_code"),
        )
        # Embedded-only (see the module docstring).
        self.version_state = VersionStateGauge(
            "serving_embedded_version_state",
            "State of each version of a configured model (1 for its current state).",
        )
        self.version_request_latency = Histogram(
            "serving_embedded_version_request_latency",
            "Distribution of wall time (in microseconds) of the requests each version answered.",
            ("model_name", "version", "API"),
        )
        self._all = (
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.model_warmup_latency,
            self.queuing_latency,
            self.batch_size,
            self.load_attempt_count,
            self.load_latency,
            self.request_log_count,
            self.version_state,
            self.version_request_latency,
        )

    def measure_loads(self, loader: Callable):
        """Wraps a version loader `(name, version, path) -> servable` to count its attempts
        (`success` or `fail`) and add the time of each successful one, by version path.

        Warmup runs after the loader and is timed apart (`model_warmup_latency`), as in TF
        Serving, where the SavedModel loader's metrics end before warmup starts.
        """

        def load(name: str, version: int, path: str):
            start = time.perf_counter()
            try:
                servable = loader(name, version, path)
            except BaseException:
                self.load_attempt_count.inc(str(path), "fail")
                raise
            self.load_attempt_count.inc(str(path), "success")
            self.load_latency.inc(str(path), amount=(time.perf_counter() - start) * 1e6)
            return servable

        return load

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines = []
        for metric in self._all:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
