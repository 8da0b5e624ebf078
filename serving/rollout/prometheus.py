"""Per-version latency read from a Prometheus server: the latency gates' source with --prometheus.

The embedded server (`python -m serving`) exports a histogram TF Serving lacks,
`serving_embedded_version_request_latency{model_name,version,API}` in microseconds, one series
set per version that answered. A Prometheus that scrapes the server holds it, so the gates can
take p50 and p99 per version from the server's own clock (the time inside the server, without
the network) instead of the tool's timed round trips. Real TF Serving has no such metric: its
latency histograms carry the model name only, so against it the tool's own timings remain the
one per-version source.

The verification's window is cut from scrape timestamps: from the last sample at or before the
first golden request to the first sample after the last one, so the rate covers every request
the tool sent (plus what other clients sent the same versions meanwhile). A version with no
sample before the first request (a new canary: the server creates its series on its first
answer) counts from zero. Scrapes that fail in between (a loaded server can miss a short
scrape_timeout) change nothing: only the two ends count.

Example:
    url = check_url("http://127.0.0.1:9090")
    ping(url, timeout=10)
    start = time.time(); ...send...; end = time.time()
    latency = version_latency(url, "unet", {"stable": 1, "canary": 2}, start, end, timeout=60)
    latency["canary"]["p99"]   # ms
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request

HISTOGRAM = "serving_embedded_version_request_latency"
API = "Predict"
# A query answer is a handful of samples; anything bigger is not Prometheus answering.
MAX_ANSWER_BYTES = 1 << 20
POLL_S = 0.5


class PrometheusError(Exception):
    """Prometheus could not be asked, or had no answer for the verification's window."""


def check_url(url: str) -> str:
    """The Prometheus server's base URL, without a trailing slash.

    Raises:
        PrometheusError: not an http(s)://HOST[:PORT][/prefix] URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as error:
        raise PrometheusError(f"--prometheus {url!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise PrometheusError(
            f"--prometheus {url!r}: expected the Prometheus server's base URL, "
            "http(s)://HOST:PORT (e.g. http://prometheus:9090), with no query"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _selector(metric: str, model: str, version: int) -> str:
    labels = f"model_name={_quote(model)},version={_quote(str(version))},API={_quote(API)}"
    return f"{metric}{{{labels}}}"


def query(url: str, expr: str, at: float, timeout: float) -> list[dict]:
    """The instant vector of `expr` evaluated at unix time `at` (`/api/v1/query`).

    Raises:
        PrometheusError: Prometheus unreachable, slow, refusing the query, or not answering as
            Prometheus does.
    """
    params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    address = f"{url}/api/v1/query?{params}"
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            body = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        # Prometheus answers a bad query with 400 and a JSON body naming the problem.
        detail = _error_of(error.read(MAX_ANSWER_BYTES)) or error.reason
        raise PrometheusError(
            f"Prometheus at {url} answered HTTP {error.code} to {expr}: {detail}"
        ) from None
    except TimeoutError:
        raise PrometheusError(f"Prometheus at {url} did not answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PrometheusError(f"cannot reach Prometheus at {url}: {reason}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise PrometheusError(f"{url} answered over {MAX_ANSWER_BYTES} bytes: not Prometheus?")
    try:
        answer = json.loads(body)
        if answer["status"] != "success":
            raise PrometheusError(f"Prometheus at {url} refused {expr}: {answer.get('error')}")
        data = answer["data"]
        if data["resultType"] != "vector":
            raise PrometheusError(f"Prometheus at {url}: {expr} is not an instant vector")
        return data["result"]
    except (ValueError, KeyError, TypeError):
        raise PrometheusError(
            f"{url} did not answer /api/v1/query as Prometheus does: is it the Prometheus "
            "server (not the model server's metrics page)?"
        ) from None


def _error_of(body: bytes) -> str | None:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return None


def ping(url: str, timeout: float) -> None:
    """Asks Prometheus a constant query, so a wrong URL is refused before anything changes.

    Raises:
        PrometheusError: as `query`.
    """
    query(url, "vector(1)", time.time(), timeout)


def _value(result: list[dict]) -> float | None:
    if not result:
        return None
    return float(result[0]["value"][1])


def _latest(url: str, model: str, version: int, at: float, timeout: float) -> float | None:
    """Unix time of the latest sample of the version's histogram at or before `at` (within
    Prometheus' lookback), or None when it has none."""
    expr = f"max(timestamp({_selector(HISTOGRAM + '_count', model, version)}))"
    return _value(query(url, expr, at, timeout))


def _absent(url: str, model: str, version: int, timeout: float) -> PrometheusError:
    """The error for a version whose histogram Prometheus does not hold, saying why it may be."""
    served = query(url, f"count by (model_name, version) ({HISTOGRAM}_count)", time.time(), timeout)
    if not served:
        return PrometheusError(
            f"Prometheus at {url} has no {HISTOGRAM} series: that per-version histogram exists "
            "only on the embedded server (python -m serving); real TF Serving does not export "
            "it. Check that Prometheus scrapes this server, or drop --prometheus to time the "
            "golden requests instead"
        )
    seen = sorted(f"{s['metric'].get('model_name')}/{s['metric'].get('version')}" for s in served)
    return PrometheusError(
        f"Prometheus at {url} has no {HISTOGRAM} samples of {model} version {version} "
        f"(API {API}); it has {', '.join(seen[:10])}: does it scrape the server that was verified?"
    )


def _wait_for_scrape(url: str, model: str, version: int, end: float, timeout: float) -> float:
    """The first scrape timestamp at or after `end`, waiting up to `timeout` s for it."""
    deadline = time.monotonic() + timeout
    while True:
        latest = _latest(url, model, version, time.time(), timeout)
        if latest is not None and latest >= end:
            return latest
        if time.monotonic() >= deadline:
            if latest is None:
                raise _absent(url, model, version, timeout)
            raise PrometheusError(
                f"Prometheus at {url} has not scraped {model} version {version} since the "
                f"golden requests ended (its latest sample is {end - latest:.1f} s older) "
                f"after {timeout:g} s: is the server still a target, and its scrape_interval "
                "shorter than --timeout?"
            )
        time.sleep(POLL_S)


def version_latency(
    url: str, model: str, versions: dict[str, int], start: float, end: float, timeout: float
) -> dict[str, dict[str, float]]:
    """Label -> {"p50", "p99" (ms), "n", "window_s"} of each version over [start, end].

    Args:
        url: the Prometheus server (see `check_url`).
        model: the model name.
        versions: label -> version.
        start, end: unix times of the first and last golden request.
        timeout: seconds per query, and to wait for a scrape after `end`.

    Raises:
        PrometheusError: see `query`; and no series (real TF Serving, or another server), no
            scrape after `end`, or no request of a version in the window.
    """
    out = {}
    for label, version in versions.items():
        last = _wait_for_scrape(url, model, version, end, timeout)
        first = _latest(url, model, version, start, timeout)
        bucket = _selector(HISTOGRAM + "_bucket", model, version)
        count = _selector(HISTOGRAM + "_count", model, version)
        if first is None:
            # No sample before the first request: the version's series appeared with it (the
            # server creates them on a version's first answer), so its counters start at zero.
            # Scrapes that time out under load make this the common case for a new canary.
            since, buckets, count = start, f"sum by (le) ({bucket})", f"sum({count})"
        else:
            # From the last sample before the first request, one millisecond wider so that
            # sample is inside the window.
            since = first
            window = f"{max(1, math.ceil((last - since) * 1000) + 1)}ms"
            buckets = f"sum by (le) (rate({bucket}[{window}]))"
            count = f"sum(increase({count}[{window}]))"
        n = _value(query(url, count, last, timeout))
        if not n or not math.isfinite(n):
            raise PrometheusError(
                f"Prometheus at {url} counts no {API} request of {model} version {version} "
                f"between {since:.3f} and {last:.3f} (unix time): were the golden requests "
                "answered by the server it scrapes?"
            )
        row: dict[str, float] = {"n": round(n), "window_s": round(last - since, 3)}
        for pct, q in (("p50", 0.5), ("p99", 0.99)):
            value = _value(query(url, f"histogram_quantile({q}, {buckets})", last, timeout))
            if value is None or not math.isfinite(value):
                raise PrometheusError(
                    f"Prometheus at {url} gives no {pct} for {model} version {version} "
                    f"between {since:.3f} and {last:.3f} ({value})"
                )
            row[pct] = value / 1000.0  # the histogram is in microseconds
        out[label] = row
    return out
