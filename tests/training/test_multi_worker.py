"""MultiWorkerMirroredStrategy for real: two `python -m training` workers on loopback.

Each worker is its own process with its own `TF_CONFIG`, as on two machines; they talk over
gRPC on free loopback ports. The chief (index 0) must end with the same kind of run folder as a
single-worker run, and both workers with the same weights (the replicas stay in sync).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT, free_port
from training.cli import main
from training.runner import load_run

pytestmark = pytest.mark.integration

# A supervised model (Keras's own train step and its (image, target) batches) and the GAN (a
# custom train step with two optimizers and a weight average). The U-Net takes the same path as
# the localizer at about twice the cost, so it runs with the slow tests only.
MODELS = ["localizer", "generator", pytest.param("unet", marks=pytest.mark.slow)]
RUN_FILES = {"config.json", "metrics.json", "history.json", "model.weights.h5", "curves.png"}


def _start_workers(model: str, tmp_path, extra: list[str]) -> list[tuple[subprocess.Popen, object]]:
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config)}
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 (closed below)
        out = tmp_path / f"worker{index}"
        command = [sys.executable, "-m", "training", model, "--preset", "tiny", "--out", str(out)]
        proc = subprocess.Popen(
            [*command, *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        workers.append((proc, log))
    return workers


def _wait(workers, timeout: float) -> list[int]:
    try:
        return [proc.wait(timeout=timeout) for proc, _ in workers]
    finally:
        for proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.mark.parametrize("model", MODELS)
def test_two_workers_train_one_model(tmp_path, model):
    # Prepare: the generator also keeps a weight average, which must survive the strategy.
    extra = ["--set", "ema_momentum=0.5"] if model == "generator" else []

    # Send: both workers at once; neither can start training without the other.
    codes = _wait(_start_workers(model, tmp_path, extra), timeout=240)

    # Verify: both finished, the chief says which strategy it trained under...
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log[-3000:]
    assert "MultiWorkerMirroredStrategy over 2 devices" in logs[0]
    chief, other = tmp_path / "worker0", tmp_path / "worker1"

    # ...its run folder has what a single-worker run's has, and rebuilds the servable model...
    single = tmp_path / "single"
    assert main([model, "--preset", "tiny", "--out", str(single), *extra]) == 0
    assert {p.name for p in chief.iterdir()} >= RUN_FILES
    assert {p.name for p in single.iterdir()} == {p.name for p in chief.iterdir()}
    chief_config = json.loads((chief / "config.json").read_text())
    assert chief_config == json.loads((single / "config.json").read_text())
    metrics = json.loads((chief / "metrics.json").read_text())
    assert set(metrics) == set(json.loads((single / "metrics.json").read_text()))
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    task, config, served = load_run(chief)
    _, _, served_single = load_run(single)
    assert [w.shape for w in served.weights] == [w.shape for w in served_single.weights]
    assert served.input_shape[1:] == task.contract(config).signature().inputs[0].shape[1:]

    # ...and the two workers ended with the same weights: the steps really were shared, and
    # the batch-norm statistics (each worker's own during training) were averaged at the end.
    _, _, served_other = load_run(other)
    for a, b in zip(served.get_weights(), served_other.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
