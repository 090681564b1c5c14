"""``python -m deeplab_lessons.train``: the command line over :class:`TrainConfig` and the engine.

Every :class:`TrainConfig` field is an option (``--help`` lists them with their defaults);
``--paper`` starts from the model's published recipe, ``--profile gpu`` (or smoke, cpu, paper) from a
lesson profile's run, instead of the CPU lesson run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

from deeplab_lessons import config
from deeplab_lessons.data.palette import VOC_CLASSES

from .checkpoint import load_checkpoint
from .engine import TrainingInterrupted, dist_env, train
from .recipe import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m deeplab_lessons.train`` argument parser (one option per :class:`TrainConfig` field)."""
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_lessons.train", allow_abbrev=False,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=30),
        description="Train a DeepLab model on PASCAL VOC 2012 (or the embedded VOC-layout set), then report mean "
                    "IoU on the validation split. Defaults are the CPU lesson run (BatchNorm, a looks-linear start, "
                    "AdamW, poly learning rate, 10x LR on the classifier, cross-entropy ignoring label 255; about "
                    "ten minutes on 2 cores); --paper starts from the model's published recipe instead (SGD from "
                    "ImageNet weights), and --dry-run shows the resolved settings without training. With --out the "
                    "run checkpoints every --checkpoint-every iterations and on Ctrl-C or SIGTERM; --resume "
                    "continues it bit for bit. An --out that already holds a run is refused unless --resume or "
                    "--overwrite is given.",
        epilog="Examples:\n"
               "  python -m deeplab_lessons.train --model largefov --iters 600 --out runs/cpu\n"
               "  python -m deeplab_lessons.train --paper --data ~/VOCdevkit/VOC2012 --train-split trainaug "
               "--model aspp-l --out runs/aspp-l\n"
               "  python -m deeplab_lessons.train --profile gpu --out runs/gpu   # lesson 05's GPU run (minutes)\n"
               "  python -m deeplab_lessons.train --paper --model v3 --dry-run   # what it would run, as JSON\n"
               "  python -m deeplab_lessons.train --out runs/cpu --resume      # continue after Ctrl-C (settings from last.pt)\n"
               "  torchrun --nproc_per_node 2 -m deeplab_lessons.train --out runs/ddp   # one process per GPU/CPU share")
    parser.add_argument("--paper", action="store_true",
                        help="start from the model's published recipe (TrainConfig.paper: v1's step schedule, "
                             "v2's poly at crop 321 / batch 10, v3's crop 513 / batch 16 / lr 0.007 / output "
                             "stride 16 -> 8; full width, ImageNet weights) instead of the CPU lesson run")
    parser.add_argument("--profile", choices=list(config.PROFILES), default=None,
                        help="start from a lesson profile's run (TrainConfig.from_settings: smoke, cpu, gpu, "
                             "paper) instead of the CPU lesson run; options given alongside override it")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved settings as JSON and exit without training")
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif f.type in ("bool | None",):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text + "; --no-... forces off")
        elif f.name in ("eval_scales", "msc_scales"):
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str, "str | None": str, "int | None": int,
                    "float | None": float}[f.type]
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a :class:`TrainConfig` (unset options keep their defaults)."""
    return config_from_namespace(build_parser().parse_args(argv))


def config_from_namespace(namespace: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments (``--paper`` and ``--dry-run`` are not fields)."""
    args = dict(vars(namespace))
    paper, profile = args.pop("paper"), args.pop("profile")
    args.pop("dry_run")
    given = {k: v for k, v in args.items() if v is not None}
    if paper and profile:
        raise ValueError("give --paper or --profile, not both (--profile paper is the published recipe at the "
                         "paper profile's sizes)")
    if given.get("resume") and given.get("out") and not (paper or profile):
        last = Path(given["out"]) / "last.pt"
        if last.is_file():          # the interrupted run's own settings; options given here override them
            return TrainConfig.from_dict({**load_checkpoint(last)["config"], "stop_at": None, **given})
    if profile:
        return TrainConfig.from_settings(config.PROFILES[profile], **given)
    if paper:
        return TrainConfig.paper(given.pop("model", "largefov"), **given)
    return TrainConfig(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: train, print the final scores (per-class IoU table on rank 0).

    ``--dry-run`` prints the resolved :class:`TrainConfig` as JSON and returns 0 without training.
    """
    namespace = build_parser().parse_args(argv)
    try:
        cfg = config_from_namespace(namespace)
        if namespace.dry_run:
            print(json.dumps(cfg.as_dict(), indent=1))
            return 0
        result = train(cfg)
    except TrainingInterrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except (OSError, ValueError, TypeError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if dist_env()[0] == 0 and result.metrics:
        m = result.metrics
        print(f"iterations {result.iteration}  train {result.train_seconds:.1f} s  "
              f"{result.images_per_second:.1f} images/s")
        print(f"mean IoU {m['mean_iou']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}  "
              f"mean accuracy {m['mean_accuracy']:.4f}")
        for name, iou in zip(VOC_CLASSES, m["iou"]):
            print(f"  {name:<12s} {iou:.4f}")
        if result.checkpoint is not None:
            print(f"model: {result.checkpoint}")
    return 0
