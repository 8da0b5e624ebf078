"""The training CLI end to end: real tiny runs, run folders, resume, seeds and bad input.

The run folders are the shared tiny runs (`tiny_runs`, trained once per test run); the CLI
trains one more itself, and resumes a copy of one.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from training.cli import main
from training.runner import load_run

MODELS = ["unet", "localizer", "generator"]
PLAIN_METRICS = {
    "unet": {"dice", "iou"},
    "localizer": {"accuracy", "f1", "mean_iou"},
    "generator": {"cfid", "classifier_score", "cfid_untrained", "cfid_real"},
}


def check_run_folder(out, model: str, seed: int) -> None:
    """A finished tiny run: config, finite metrics, pictures, weights, checkpoint and logs."""
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == model and saved["preset"] == "tiny" and saved["seed"] == seed
    metrics = json.loads((out / "metrics.json").read_text())
    assert PLAIN_METRICS[model] <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert metrics["train_images_per_second"] > 0 and metrics["train_gflops_per_second"] > 0
    assert metrics["train_cpu_seconds"] > 0
    picture = "samples.png" if model == "generator" else "predictions.png"
    for name in ("curves.png", picture, "model.weights.h5", "history.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "checkpoints").glob("ckpt-1.index"))
    assert list((out / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("model", MODELS)
def test_tiny_run_writes_a_complete_run_folder(tiny_runs, model):
    """The shared tiny runs (`tests/conftest.py`: `train()`, seed 1, which the CLI calls; the
    CLI's own run is checked the same way in test_the_cli_run_repeats_the_same_seed_exactly)."""
    check_run_folder(tiny_runs[model], model, seed=1)


@pytest.mark.parametrize("model", MODELS)
def test_run_folder_rebuilds_the_model(tiny_runs, model):
    task, config, rebuilt = load_run(tiny_runs[model])
    sig = task.contract(config).signature()
    assert rebuilt.input_shape[1:] == sig.inputs[0].shape[1:]


def test_resume_continues_from_the_checkpoint(tiny_runs, tmp_path, capsys):
    # A copy of the shared finished one-epoch run: the shared run itself stays untouched.
    out = tmp_path / "run"
    shutil.copytree(tiny_runs["unet"], out)
    assert main(["unet", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "resumed from" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2
    assert (out / "checkpoints" / "ckpt-2.index").exists()


def test_the_cli_run_repeats_the_same_seed_exactly(tiny_runs, tmp_path):
    """A real CLI run with the seed of the shared unet run (1) writes a complete run folder with
    the same weights: the CLI passes preset and seed through, and a seed repeats exactly."""
    out = tmp_path / "again"
    assert main(["unet", "--preset", "tiny", "--out", str(out), "--seed", "1"]) == 0
    check_run_folder(out, "unet", seed=1)
    weights = [load_run(run)[2].get_weights() for run in (tiny_runs["unet"], out)]
    assert all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))


@pytest.mark.parametrize("model", MODELS)
def test_summary_prints_total_params(model, capsys):
    assert main([model, "--preset", "tiny", "--summary"]) == 0
    assert "Total params" in capsys.readouterr().out


def _fails_with(argv, capsys, *expected):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_unknown_preset(capsys):
    _fails_with(["unet", "--preset", "huge"], capsys, "'huge'", "seed, slim, tiny")


def test_unknown_set_key(capsys):
    _fails_with(
        ["localizer", "--preset", "tiny", "--set", "colour=red"], capsys, "'colour'", "valid keys"
    )


def test_size_not_multiple_of_16(capsys):
    _fails_with(["unet", "--set", "image_size=100"], capsys, "image_size=100", "multiple of 16")


def test_missing_data_folder(tmp_path, capsys):
    _fails_with(
        [
            "unet",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
        "nope",
        "does not exist",
    )


def test_image_without_mask(tmp_path, capsys):
    from training.data.cars import write_carvana_layout

    root = write_carvana_layout(tmp_path / "carvana", 3, 2, 32, 48, seed=0)
    orphan = sorted((root / "train_masks").iterdir())[0]
    orphan.unlink()
    _fails_with(
        ["unet", "--preset", "tiny", "--data", str(root), "--out", str(tmp_path / "r")],
        capsys,
        orphan.name.replace("_mask.gif", ".jpg"),
    )


def test_corrupt_image(tmp_path, capsys):
    from training.data.cars import write_carvana_layout

    root = write_carvana_layout(tmp_path / "carvana", 3, 2, 32, 48, seed=0)
    broken = sorted((root / "train").iterdir())[1]
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    _fails_with(
        ["unet", "--preset", "tiny", "--data", str(root), "--out", str(tmp_path / "r")],
        capsys,
        broken.name,
    )


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    _fails_with(["unet", "--preset", "tiny", "--out", str(out)], capsys, "already holds a run")


def _python_m_training(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.integration
def test_cli_error_is_one_line_without_traceback():
    proc = _python_m_training("unet", "--preset", "huge")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m training: error: unknown preset 'huge'")


@pytest.mark.integration
# The localizer stands for the supervised models (the U-Net, on the same path at twice the cost,
# runs with the slow tests), the generator for the custom GAN step.
@pytest.mark.parametrize(
    "model", ["localizer", "generator", pytest.param("unet", marks=pytest.mark.slow)]
)
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, model):
    out = tmp_path / "run"
    proc = _python_m_training(model, "--preset", "tiny", "--cpu-devices", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MirroredStrategy over 2 devices" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images_per_second"] > 0
