"""A real server of the shipped slim U-Net for the gate-service and --prometheus tests: version 1
labelled `stable`, version 2 (an exact copy) labelled `canary`, and bad canaries on disk.

Exporting the shipped run takes about 7 s, where the tiny runs of `tiny_runs` train all three
models first; the exports are made once per test run and copied (`tests.support.SharedBuilds`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.serving.rollout.canaries import copy_version, export_untrained, write_slow_twin
from tests.support import ROOT, ServerProcess, SharedBuilds

SHIPPED_UNET = ROOT / "shipped-runs" / "unet"
CONFIG = """
model_config_list {{
  config {{
    name: "unet" base_path: "{base}/unet" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
"""
# Fewer timed requests than the shipped 200 per version keep each verification to seconds.
GATES = "[service]\nrequests = 48\n"


def shipped_unet(builds: SharedBuilds) -> Path:
    """Version 1 of the shipped run, exported once per test run: read-only, copy it."""
    from export import publish

    folder = builds.folder("unet-shipped", lambda d: publish.export_run("unet", SHIPPED_UNET, d, 1))
    return folder / "unet" / "1"


def untrained_unet(builds: SharedBuilds) -> Path:
    """An export of the shipped run's config with its initial weights, made once per test run."""
    folder = builds.folder(
        "unet-untrained", lambda d: export_untrained(SHIPPED_UNET, d / "unet", 1, d / "work")
    )
    return folder / "unet" / "1"


def write_versions(
    root: Path, builds: SharedBuilds, slow: int | None = None, untrained: int | None = None
) -> Path:
    """`root/models/unet/{1,2}` (the shipped run and its copy), plus a slow twin of 1 (`slow`:
    (version, spin rounds)) and an untrained export (`untrained`: its version), if asked.

    Returns:
        The models folder.
    """
    base = root / "models"
    shutil.copytree(shipped_unet(builds), base / "unet" / "1")
    copy_version(base / "unet", 1, 2)
    if slow is not None:
        write_slow_twin(base / "unet", 1, *slow)
    if untrained is not None:
        shutil.copytree(untrained_unet(builds), base / "unet" / str(untrained))
    return base


def start_server(root: Path, base: Path) -> tuple[ServerProcess, Path, Path]:
    """The server (with its Prometheus page on), its config file and a gates file. The server
    opens its ports once the configured versions are loaded, so both are AVAILABLE."""
    config = root / "models.config"
    config.write_text(CONFIG.format(base=base))
    monitoring = root / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
    )
    gates = root / "gates.toml"
    gates.write_text(GATES)
    server = ServerProcess(
        f"--model_config_file={config}",
        f"--monitoring_config_file={monitoring}",
        "--allow_version_labels_for_unavailable_models",
        "--max_num_load_retries=0",
        log_path=root / "server.log",
    ).start()
    return server, config, gates
