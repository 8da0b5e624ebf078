"""A real server of the shipped slim U-Net for the gate-service and --prometheus tests: version 1
labelled `stable`, version 2 (an exact copy) labelled `canary`, and bad canaries on disk.

Exporting the shipped run takes about 5 s, where the tiny runs of `tiny_runs` train all three
models first.
"""

from __future__ import annotations

from pathlib import Path

from tests.serving.rollout.canaries import copy_version, export_untrained, write_slow_twin
from tests.support import ROOT, ServerProcess

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


def write_versions(root: Path, slow: int | None = None, untrained: int | None = None) -> Path:
    """`root/models/unet/{1,2}` (the shipped run and its copy), plus a slow twin of 1 (`slow`:
    (version, spin rounds)) and an untrained export (`untrained`: its version), if asked.

    Returns:
        The models folder.
    """
    from export import publish

    base = root / "models"
    publish.export_run("unet", SHIPPED_UNET, base, 1)
    copy_version(base / "unet", 1, 2)
    if slow is not None:
        write_slow_twin(base / "unet", 1, *slow)
    if untrained is not None:
        export_untrained(SHIPPED_UNET, base / "unet", untrained, root)
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
