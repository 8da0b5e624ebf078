"""A real Prometheus for tests (Debian's `prometheus` package): started on loopback, scraping the
embedded server every second, and asked through its HTTP API.

TensorFlow-free. Without the package the calling test skips, naming it.

Example:
    prom = Prometheus(tmp_path, f"127.0.0.1:{server.rest_port}")
    prom.wait_ready()
    prom.query("up")
    prom.stop()
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from tests.operations.exposition import METRICS_PATH
from tests.support import free_port


def binary(name: str) -> str:
    """The path of a tool of Debian's `prometheus` package; skips the test when it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed: install Debian's `prometheus` package")
    return path


class Prometheus:
    """A real Prometheus on loopback, scraping one target every second."""

    def __init__(
        self,
        root: Path,
        target: str,
        rule_files: Sequence[Path] = (),
        job_name: str = "tfserving",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    # The shipped alert rules select on job="tfserving".
                    "job_name": job_name,
                    "metrics_path": METRICS_PATH,
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = root / "prometheus.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready:\n{self.log_path.read_text()}")

    def wait_scraping(self, timeout: float = 30.0) -> None:
        """Until the target has been scraped (Prometheus applies new targets every 5 s, so the
        first scrape comes seconds after it is ready)."""
        deadline = time.monotonic() + timeout
        while not any(s["value"][1] == "1" for s in self.query("up")):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prometheus never scraped its target:\n{self.log_path.read_text()}"
                )
            time.sleep(0.2)

    def query(self, expr: str) -> list[dict]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()
