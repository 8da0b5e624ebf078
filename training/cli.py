"""Command line for training: `python -m training MODEL [options]`.

Example:
    python -m training unet --preset slim --out runs/unet/slim
    python -m training generator --preset tiny --set latent_dim=32 --summary
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.cli import Parser, fail, parse_args
from common.contract import MODEL_NAMES

PROG = "python -m training"


def build_parser() -> argparse.ArgumentParser:
    """The training CLI's argument parser."""
    p = Parser(prog=PROG, description="Train one of the served models into a run folder.")
    p.add_argument("model", choices=MODEL_NAMES, help="which model to train")
    p.add_argument("--preset", default="slim", help="seed, slim or tiny (default: slim)")
    p.add_argument(
        "--data",
        default=None,
        help="'synthetic' or omitted: built-in data; unet: a Carvana folder (train/, "
        "train_masks/); localizer: an annotation CSV; generator: a folder of images",
    )
    p.add_argument("--epochs", type=int, help="total epochs (overrides the preset)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: the data)")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--out", type=Path, help="run folder (default: runs/MODEL/PRESET-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field; repeatable (e.g. --set image_size=256)",
    )
    p.add_argument("--summary", action="store_true", help="print the model summary and exit")
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help="split the CPU into N logical devices (trains under MirroredStrategy when N > 1)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the training CLI; returns the process exit code."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    from training.errors import UserError

    try:
        return _run(args)
    except UserError as exc:
        return fail(PROG, exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with --resume --out RUN_DIR", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from common.quiet import import_tensorflow

    tf = import_tensorflow()

    from training import config as cfg
    from training.errors import ConfigError, DataError
    from training.runner import read_run_config, train
    from training.tasks import get_task

    if args.cpu_devices is not None:
        _split_cpu(tf, args.cpu_devices)
    task = get_task(args.model)
    data = None if args.data in (None, "synthetic") else args.data
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        saved = read_run_config(args.out)
        if saved.get("model") != task.name:
            raise ConfigError(f"{args.out} holds a {saved.get('model')!r} run, not {task.name!r}")
        config = cfg.from_dict(task.config_cls, saved["config"])
        if args.overrides or args.batch_size or args.steps_per_epoch:
            raise ConfigError("a resumed run keeps its config; only --epochs may change")
        preset, data = saved.get("preset"), saved.get("data")
    else:
        preset = args.preset
        base = cfg.pick_preset(task.presets, preset, task.name)
        config = cfg.apply_overrides(base, args.overrides)
    flags = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
    }
    config = cfg.replace(config, **{k: v for k, v in flags.items() if v is not None})

    if args.summary:
        for model in [task.build(config), *task.extra_summaries(config)]:
            model.summary()
        return 0
    if data is not None and not Path(data).exists():
        raise DataError(f"data path {data} does not exist")
    out = args.out or Path("runs") / task.name / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = train(
            task, config, out=out, data=data, seed=args.seed, resume=args.resume, preset=preset
        )
    except tf.errors.InvalidArgumentError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        source = data or "built-in data"
        raise DataError(f"corrupt or unreadable data in {source}: {first}") from None
    shown = ", ".join(
        f"{k}={v:.4g}" for k, v in result.metrics.items() if isinstance(v, float | int)
    )
    print(f"[{task.name}] run folder: {result.run_dir}")
    print(f"[{task.name}] metrics: {shown}")
    return 0


def _split_cpu(tf, count: int) -> None:
    from training.errors import ConfigError

    if count < 1:
        raise ConfigError(f"--cpu-devices={count} must be at least 1")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
