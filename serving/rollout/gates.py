"""The gates file (`gates.toml`, overridable with --gates) and the pass/fail rows it gives.

Example:
    gates = load_gates(None)                        # the shipped defaults
    rows = evaluate(scores, gates, "unet")          # [Row("agreement dice", ...), ...]
    failed = [row for row in rows if row.passed is False]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from client.canary.comparisons import COMPARISONS
from serving.rollout.scores import LABELS, Scores

DEFAULTS = Path(__file__).resolve().parent / "gates.toml"
FAMILIES = ("agreement", "truth", "quality")
SERVICE_KEYS = ("requests", "p50_ratio", "p99_ratio", "slack_ms", "error_rate")


class GatesError(Exception):
    """A gates file that cannot be used (a usage error: exit 2)."""


@dataclass(frozen=True)
class Gates:
    """Thresholds: service ones, and per model kind, family and measure (None: report only)."""

    service: dict[str, float]
    models: dict[str, dict[str, dict[str, float | None]]]
    source: str


@dataclass
class Row:
    """One gate's outcome: passed True/False, or None for a row that is reported only."""

    gate: str
    stable: str
    canary: str
    value: str
    rule: str
    passed: bool | None
    note: str = ""

    @property
    def result(self) -> str:
        return {True: "pass", False: "FAIL", None: "-"}[self.passed]


def load_gates(path: str | Path | None) -> Gates:
    """The shipped defaults, overridden key by key by the file at `path` (if given).

    Raises:
        GatesError: an unreadable file, an unknown key, or a value that is not a number >= 0.
    """
    gates = _parse(DEFAULTS)
    source = "defaults"
    if path is not None:
        user = _parse(Path(path))
        _merge(gates, user, str(path))
        source = str(path)
    return Gates(
        service={k: float(v) for k, v in gates.get("service", {}).items()},
        models={kind: gates.get(kind, {}) for kind in COMPARISONS},
        source=source,
    )


def _parse(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise GatesError(f"cannot read gates file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise GatesError(f"gates file {path} is not TOML: {error}") from None


def _merge(gates: dict, user: dict, where: str) -> None:
    for table, values in user.items():
        if table == "service":
            _check_keys(values, SERVICE_KEYS, f"{where} [service]")
            for key, value in values.items():
                gates["service"][key] = _number(value, f"{where} [service] {key}", allow_off=False)
            continue
        if table not in COMPARISONS:
            valid = ", ".join(["service", *COMPARISONS])
            raise GatesError(f"{where}: unknown table [{table}]; valid: {valid}")
        if not isinstance(values, dict):
            raise GatesError(f"{where}: [{table}] must be a table of families")
        measures = COMPARISONS[table].measures
        _check_keys(values, tuple(measures), f"{where} [{table}]")
        for family, thresholds in values.items():
            _check_keys(thresholds, measures[family], f"{where} [{table}.{family}]")
            target = gates.setdefault(table, {}).setdefault(family, {})
            for key, value in thresholds.items():
                target[key] = _number(value, f"{where} [{table}.{family}] {key}")


def _check_keys(values, valid: tuple[str, ...], where: str) -> None:
    if not isinstance(values, dict):
        raise GatesError(f"{where} must be a table")
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise GatesError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")


def _number(value, where: str, allow_off: bool = True):
    if value is False and allow_off:
        return False
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        off = " or false (report only)" if allow_off else ""
        raise GatesError(f"{where} = {value!r}: expected a number >= 0{off}")
    return float(value)


def threshold(gates: Gates, kind: str, family: str, measure: str) -> float | None:
    """The threshold of one measure, or None when it is report-only or not set."""
    value = gates.models.get(kind, {}).get(family, {}).get(measure)
    return None if value is False or value is None else float(value)


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def evaluate(scores: Scores, gates: Gates, kind: str) -> list[Row]:
    """Every gate's row for a model kind, quality first, then service, then shadow."""
    rows = []
    for measure in COMPARISONS[kind].measures.get("agreement", ()):
        value = scores.agreement.get(measure)
        limit = threshold(gates, kind, "agreement", measure)
        passed = None if limit is None else (value is not None and value >= limit)
        rule = "report only" if limit is None else f">= {limit:g}"
        note = "" if value is not None else "no item answered by both"
        rows.append(Row(f"agreement {measure}", "-", "-", _f(value), rule, passed, note))
    for family in ("truth", "quality"):
        rows += _drop_rows(scores, gates, kind, family)
    rows += _service_rows(scores, gates)
    rows += _shadow_rows(scores, gates, kind)
    return rows


def _drop_rows(scores: Scores, gates: Gates, kind: str, family: str) -> list[Row]:
    values = getattr(scores, family)
    rows = []
    for measure in COMPARISONS[kind].measures.get(family, ()):
        stable = values.get("stable", {}).get(measure)
        canary = values.get("canary", {}).get(measure)
        limit = threshold(gates, kind, family, measure)
        name = f"{family} {measure}"
        if stable is None or canary is None:
            note = "no ground truth in the golden set" if family == "truth" else "not measured"
            rows.append(Row(name, _f(stable), _f(canary), "-", "-", None, note))
            continue
        change = canary - stable
        rule = "report only" if limit is None else f"canary >= stable - {limit:g}"
        passed = None if limit is None else canary >= stable - limit - 1e-12
        rows.append(Row(name, _f(stable), _f(canary), f"{change:+.4f}", rule, passed))
    return rows


def latency_source(scores: Scores) -> str:
    """Where the latency rows' figures came from, for their note."""
    n = "/".join(str(scores.latency_ms.get(label, {}).get("n", 0)) for label in LABELS)
    if scores.latency_source == "prometheus":
        window = max(scores.latency_ms.get(label, {}).get("window_s", 0) for label in LABELS)
        return f"Prometheus: in-server, {n} requests in {window:.0f} s"
    return f"timed by the tool: gRPC round trip, {n} requests"


def _service_rows(scores: Scores, gates: Gates) -> list[Row]:
    rows = []
    slack = gates.service["slack_ms"]
    for pct in ("p50", "p99"):
        stable = scores.latency_ms.get("stable", {}).get(pct)
        canary = scores.latency_ms.get("canary", {}).get(pct)
        ratio_max = gates.service[f"{pct}_ratio"]
        rule = f"<= {ratio_max:g}x stable + {slack:g} ms"
        name = f"latency {pct} (ms)"
        if stable is None or canary is None:
            rows.append(Row(name, _f(stable, 1), _f(canary, 1), "-", rule, False, "no timings"))
            continue
        passed = canary <= ratio_max * stable + slack
        ratio = canary / stable if stable > 0 else float("inf")
        note = latency_source(scores)
        if scores.latency_first is not None:
            first = {label: scores.latency_first.get(label, {}).get(pct) for label in LABELS}
            if None not in first.values() and first["stable"] > 0:
                ratio_first = first["canary"] / first["stable"]
                note += f"; second timed pass, the first gave {ratio_first:.2f}x"
        rows.append(
            Row(name, f"{stable:.1f}", f"{canary:.1f}", f"{ratio:.2f}x", rule, passed, note)
        )
    limit = gates.service["error_rate"]
    sent, failed = scores.requests.get("canary", 0), scores.failures.get("canary", 0)
    stable_text = f"{scores.failures.get('stable', 0)}/{scores.requests.get('stable', 0)}"
    rate = failed / sent if sent else 1.0
    rows.append(
        Row(
            "errors, canary golden",
            stable_text,
            f"{failed}/{sent}",
            f"{rate:.2%}",
            f"<= {limit:.0%}",
            sent > 0 and rate <= limit,
            "the tool's own requests, per version",
        )
    )
    if scores.server is None:
        passed = False if scores.server_failed else None
        rows.append(
            Row("errors, server", "-", "-", "-", f"<= {limit:.0%}", passed, scores.server_note)
        )
    else:
        errors, total = scores.server["errors"], scores.server["requests"]
        rate = errors / total if total else 0.0
        rows.append(
            Row(
                "errors, server",
                "-",
                "-",
                f"{rate:.2%}",
                f"<= {limit:.0%}",
                rate <= limit,
                f"{errors}/{total} requests to the model in the window, both versions "
                "(request_count has no version label)",
            )
        )
    return rows


def _shadow_rows(scores: Scores, gates: Gates, kind: str) -> list[Row]:
    if scores.shadow is None:
        return []
    summary = scores.shadow
    calls, errors = summary["calls"], summary["errors"]
    rows = []
    for measure in COMPARISONS[kind].measures.get("agreement", ()):
        value = summary["mean"].get(measure)
        limit = threshold(gates, kind, "agreement", measure)
        passed = None if limit is None or value is None else value >= limit
        rule = "report only" if limit is None else f">= {limit:g}"
        note = f"{calls} mirrored calls" if calls else "no mirrored calls to this canary"
        rows.append(Row(f"shadow {measure}", "-", "-", _f(value), rule, passed, note))
    limit = gates.service["error_rate"]
    total = calls + errors
    rate = errors / total if total else 0.0
    passed = None if not total else rate <= limit
    rows.append(
        Row("shadow errors", "-", f"{errors}/{total}", f"{rate:.2%}", f"<= {limit:.0%}", passed)
    )
    return rows
