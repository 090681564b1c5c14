"""``python -m deeplab_lessons.experiments``: run experiments of the suite, or list them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from deeplab_lessons import config

from .properties import data_properties, properties_markdown, write_table
from .results import format_table, summary
from deeplab_lessons.train import TrainingInterrupted

from .runner import command, run_experiment
from .suite import DEFAULT_SEEDS, EXPERIMENTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_lessons.experiments", allow_abbrev=False,
        description="Run the DeepLab papers' experiments on the embedded set; each (arm, seed) is recorded in "
                    "results/NAME.json as it finishes, and a rerun skips what is recorded.")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="experiments to run: " + ", ".join(EXPERIMENTS) + "; 'all' for every one, 'list' to list "
                             "them, 'properties' for the data set's table P1-P6 from the recorded results")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="seeds of every arm")
    parser.add_argument("--data", default=None, help="VOC2012 folder (default: the embedded set)")
    parser.add_argument("--results-dir", default=None,
                        help="where results files go (default: results/ for the full budget on the embedded set; "
                             "runs/experiments/results-smoke[-<hash>] for --smoke, runs/experiments/results-<hash> for "
                             "other --data: the committed results are never written by those)")
    parser.add_argument("--runs-dir", default=None, help="where trained weights are cached (default: runs/experiments)")
    parser.add_argument("--smoke", action="store_true", help="tiny budget, 4 validation images: checks the code paths")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a results file recorded with another budget or data set (refused without it)")
    parser.add_argument("--write", action="store_true", help="with 'properties': write the table into data/README.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.names == ["list"]:
        for exp in EXPERIMENTS.values():
            print(f"{exp.name:<18} {exp.title} ({exp.source}); {len(exp.arms)} arms; {command(exp.name)}")
        return 0
    if args.names == ["properties"]:
        voc = Path(args.data) if args.data else config.voc_root()
        try:
            table = properties_markdown(data_properties(voc, args.results_dir))
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(table)
        if args.write:
            write_table(config.REPO_ROOT / "data" / "README.md", table)
        return 0
    names = list(EXPERIMENTS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        print(f"error: unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)} (or 'all', 'list')",
              file=sys.stderr)
        return 2
    try:
        for name in names:
            results = run_experiment(name, args.seeds, smoke=args.smoke, data=args.data, results_dir=args.results_dir,
                                     runs_dir=args.runs_dir, overwrite=args.overwrite)
            if EXPERIMENTS[name].kind == "train":
                print(format_table(summary(results)))
    except TrainingInterrupted as stop:
        print(f"interrupted: {stop}; every run recorded so far is kept, and a rerun of the same command continues",
              file=sys.stderr)
        return 128 + stop.signum
    except (OSError, ValueError, TypeError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
