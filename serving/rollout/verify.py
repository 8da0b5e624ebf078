"""Verification of a canary: the golden set sent to `stable` and `canary` in turn, timed, compared.

Only TF Serving's public surface is used: Predict and GetModelMetadata through the slim client
(labels `stable` and `canary`), the config file for the labels and for the canary's warmup
requests on disk, and the Prometheus endpoint for the server's error counts.

Example:
    result = verify(tool, "127.0.0.1:8500", None, "unet", Options())
    result.passed, [row.gate for row in result.failed]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from client.api import ServingClient
from client.canary.comparisons import COMPARISONS, Comparison, comparison
from client.canary.shadow import read_records, summarize
from client.errors import ClientError
from client.transports.grpc import GrpcTransport
from client.transports.served_contract import contract_from_metadata
from client.transports.tls import TLSFiles
from serving.rollout import config_edit as rc
from serving.rollout import golden as gold
from serving.rollout import metrics, prometheus
from serving.rollout.control import State
from serving.rollout.gates import Gates, GatesError, Row, evaluate, load_gates
from serving.rollout.scores import Scores, latency, score

LABELS = (rc.STABLE, rc.CANARY)


@dataclass(frozen=True)
class Options:
    """What `verify`, `promote` and `auto` take beyond the model.

    Attributes:
        kind: the model's registry kind when its name is not one (`unet-eu` is a `unet`).
        golden: a golden folder instead of the built-in set.
        gates: a gates file overriding the defaults.
        monitoring_config: the server's --monitoring_config_file (enables the server row).
        rest_port: the server's REST port, where the metrics are served.
        shadow: a shadow-mode record file (`client.canary.shadow`) to summarise.
        replay: a folder of the server's request logs: their newest Predict requests for the
            model are the golden set (`golden.load_replay`).
        out: a folder for the report picture.
        prometheus: a Prometheus server's URL: the latency gates read each version's latency
            from the embedded server's per-version histogram there, not from the tool's timings.
    """

    kind: str | None = None
    golden: str | None = None
    gates: str | None = None
    monitoring_config: str | None = None
    rest_port: int = 8501
    shadow: str | None = None
    out: str | None = None
    replay: str | None = None
    prometheus: str | None = None


class TimedTransport:
    """A transport wrapper that times every Predict by label (the gRPC round trip only)."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds: dict[str | None, list[float]] = {}

    def predict(self, model, inputs, *, label=None, **spec):
        start = time.perf_counter()
        answer = self.inner.predict(model, inputs, label=label, **spec)
        self.seconds.setdefault(label, []).append(time.perf_counter() - start)
        return answer

    def __getattr__(self, name):
        return getattr(self.inner, name)


@dataclass
class Verification:
    """A verification's outcome: the gate rows and what they were computed from."""

    model: str
    kind: str
    versions: dict[str, int]
    golden: gold.GoldenSet
    gates: Gates
    rows: list[Row]
    scores: Scores
    answers: dict[str, list]
    per_item: list[dict | None]
    latency_s: dict[str, list[float]]
    rounds: int
    seconds: float
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failed

    def first_failure(self) -> str:
        """`gate agreement dice 0.4121 (>= 0.97)`, plus how many more failed."""
        if not self.failed:
            return ""
        row = self.failed[0]
        more = f" (+{len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
        return f"gate {row.gate} {row.value} ({row.rule}){more}"


def verify(
    tool,
    server: str,
    tls: TLSFiles | None,
    model: str,
    options: Options,
    timeout: float = 60.0,
    verb: str = "verify",
) -> Verification:
    """Runs the golden set against both labels and applies the gates.

    Args:
        tool: the `control.Rollout` of the server (config file, statuses, version folders).
        server: gRPC HOST:PORT.
        tls: TLS files for gRPC (and HTTPS metrics), or None.
        model: the served model name.
        options: see `Options`.
        timeout: seconds per request.
        verb: the command, for messages.

    Raises:
        rc.RefusalError: a usage problem (no canary, unknown kind, a bad golden folder, gates
            or shadow file) found before any request is sent.
        rc.ServerError: a label's version is not AVAILABLE.
    """
    started = time.monotonic()
    config = rc.read_config(tool.config_path)
    labels = rc.labels_of(config, model)
    missing = [label for label in LABELS if label not in labels]
    if missing:
        raise rc.RefusalError(f"{verb}: {model} has no {missing[0]} label; run `canary` first")
    kind, compare, gates, golden, shadow, url = check_options(model, options, server, tls)
    versions = {label: labels[label] for label in LABELS}
    for label, version in versions.items():
        states = {s.version: s.state for s in tool.statuses(model, version)}
        if states.get(version) != State.AVAILABLE:
            raise rc.ServerError(f"{verb}: {label} version {version} of {model} is not AVAILABLE")

    transport = TimedTransport(GrpcTransport(server, timeout=timeout, retries=0, tls=tls))
    with ServingClient(transport, fallback="never") as client:
        contract = contract_from_metadata(kind, client.metadata(model, label=rc.CANARY))
        if golden.requests:  # --replay: logged requests become items in the served contract
            try:
                gold.resolve_replay(golden, compare, contract)
            except gold.GoldenError as error:
                raise rc.RefusalError(str(error)) from None
        canary_dir = tool.version_dir(config, model, versions[rc.CANARY])
        warmup = gold.warmup_items(canary_dir, compare, contract)
        golden.items += warmup
        golden.notes.append(
            f"warmup of version {versions[rc.CANARY]}: {len(warmup)} items"
            if warmup
            else f"no warmup requests at {canary_dir / gold.WARMUP_FILE}"
        )
        before = _read_counts(url, tls, model)
        rounds = max(1, math.ceil(gates.service["requests"] / len(golden.items)))
        sent_from = time.time()
        answers, errors, requests = _send(client, compare, model, kind, golden, rounds)
        scores, per_item = score(compare, golden, answers, transport.seconds, errors, requests)
        _latency_from(options.prometheus, scores, model, versions, sent_from, timeout)
        if any(
            row.gate.startswith("latency") and row.passed is False
            for row in evaluate(scores, gates, kind)
        ):
            # A latency gate fails only when a second timed pass confirms it: on a shared
            # machine one pass's tail can be another process's doing.
            scores.latency_first = scores.latency_ms
            transport.seconds.clear()
            sent_from = time.time()
            _, more_errors, more_requests = _send(client, compare, model, kind, golden, rounds)
            for label in LABELS:
                errors[label] += more_errors[label]
                requests[label] += more_requests[label]
                scores.failures[label] = len(errors[label])
            scores.latency_ms = latency(transport.seconds)
            _latency_from(options.prometheus, scores, model, versions, sent_from, timeout)
        after = _read_counts(url, tls, model)
    scores.server, scores.server_note, scores.server_failed = _window(url, before, after)
    if shadow is not None:
        scores.shadow = summarize(shadow, model, versions[rc.CANARY])
    return Verification(
        model=model,
        kind=kind,
        versions=versions,
        golden=golden,
        gates=gates,
        rows=evaluate(scores, gates, kind),
        scores=scores,
        answers=answers,
        per_item=per_item,
        latency_s={label: transport.seconds.get(label, []) for label in LABELS},
        rounds=rounds,
        seconds=time.monotonic() - started,
        errors=errors,
    )


def _no_gates(model: str, kind: str) -> str:
    return (
        f"no gates for model kind {kind!r} (gates exist for {', '.join(COMPARISONS)}); pass "
        f"--kind KIND if {model} is one of them, or --force to promote without gates"
    )


def check_options(model: str, options: Options, server: str, tls: TLSFiles | None):
    """Everything that can be refused before a request is sent (or a canary loaded).

    Returns:
        (kind, its Comparison, the Gates, the GoldenSet, shadow records or None, metrics URL or
        None).

    Raises:
        rc.RefusalError: an unknown kind, or a bad gates file, golden folder, shadow file or
            monitoring config.
    """
    kind = options.kind or model
    try:
        compare = comparison(kind)
    except ValueError:
        raise rc.RefusalError(_no_gates(model, kind)) from None
    try:
        gates = load_gates(options.gates)
        if options.replay is not None and options.golden is not None:
            raise rc.RefusalError("--golden and --replay both name the golden set; give one")
        if options.replay is not None:
            golden = gold.load_replay(options.replay, model)
        elif options.golden is None:
            golden = gold.load_folder(gold.built_in_folder(kind), compare, f"built-in {kind}")
        else:
            golden = gold.load_folder(options.golden, compare)
    except (GatesError, gold.GoldenError) as error:
        raise rc.RefusalError(str(error)) from None
    shadow = None
    if options.shadow is not None:
        try:
            shadow = read_records(options.shadow)
        except OSError as error:
            raise rc.RefusalError(f"cannot read --shadow {options.shadow}: {error}") from None
    if options.prometheus is not None:
        try:
            prometheus.ping(prometheus.check_url(options.prometheus), timeout=10.0)
        except prometheus.PrometheusError as error:
            raise rc.RefusalError(str(error)) from None
    url = None
    if options.monitoring_config is not None:
        try:
            url = metrics.metrics_url(server, options.rest_port, options.monitoring_config, tls)
        except metrics.MetricsError as error:
            raise rc.RefusalError(str(error)) from None
    return kind, compare, gates, golden, shadow, url


def _latency_from(url, scores, model, versions, start, timeout) -> None:
    """With --prometheus, each version's latency over the pass that started at `start`, read
    from Prometheus in place of the tool's timings.

    Raises:
        rc.ServerError: Prometheus has no answer for the window (the message says why).
    """
    if url is None:
        return
    try:
        scores.latency_ms = prometheus.version_latency(
            prometheus.check_url(url), model, versions, start, time.time(), timeout
        )
    except prometheus.PrometheusError as error:
        raise rc.ServerError(f"--prometheus: {error}") from None
    scores.latency_source = "prometheus"


def _read_counts(url, tls, model):
    if url is None:
        return None
    try:
        return metrics.request_counts(metrics.scrape(url, tls), model)
    except metrics.MetricsError as error:
        return error


def _window(url, before, after) -> tuple[dict | None, str, bool]:
    if url is None:
        return None, "not measured: pass --monitoring_config_file (and --rest_api_port)", False
    for reading in (before, after):
        if isinstance(reading, Exception):
            return None, str(reading), True
    try:
        return metrics.window(before, after), "", False
    except metrics.MetricsError as error:
        return None, str(error), True


def _ask(client: ServingClient, compare: Comparison, model: str, kind: str, item, label: str):
    """One golden item to one label, through the slim client's public API."""
    if compare.inputs == "images":
        return client.predict_images(item.value, kind=kind, model=model, version_label=label)[0]
    if isinstance(item.value, int):
        return client.generate(seeds=[item.value], model=model, version_label=label)
    return client.generate(latents=item.value[np.newaxis], model=model, version_label=label)


def _send(client, compare, model, kind, golden, rounds):
    """Every item to both labels, `rounds` times, alternating which label goes first."""
    answers = {label: [None] * len(golden.items) for label in LABELS}
    errors: dict[str, list[str]] = {label: [] for label in LABELS}
    requests = dict.fromkeys(LABELS, 0)
    for r in range(rounds):
        for i, item in enumerate(golden.items):
            order = LABELS if (r + i) % 2 == 0 else LABELS[::-1]
            for label in order:
                requests[label] += 1
                try:
                    answer = _ask(client, compare, model, kind, item, label)
                except ClientError as error:
                    errors[label].append(f"{item.name}: {error.code}: {error.message}")
                    continue
                if answers[label][i] is None:
                    answers[label][i] = answer
    return answers, errors, requests


def image_of(item) -> np.ndarray | None:
    """The item's image, for pictures (None for seeds and latents)."""
    value = item.value
    return value if isinstance(value, np.ndarray) and value.ndim == 3 else None
