"""Lesson 05's CPU default run, measured: training time, mIoU on the embedded val set, images/s, peak memory.

Target (the embedded set's property P6, data/README.md): the CPU default (``TrainConfig()``: LargeFOV
at width 0.25 with BatchNorm, looks-linear initialisation, no dropout, AdamW, 128 px crops, batch 8,
2,000 iterations) reaches mean IoU >= 0.55 on the embedded val set (100 whole 192x256 images) from
random weights. The training time is measured and reported (with an idle-machine estimate), not a target.

The machine may be busy: the script prints the load average before and after, the process CPU
time, and an estimate for an idle machine (CPU seconds spent in training / threads, i.e. what the
wall clock would show if every thread had a core to itself). Run::

    python benchmarks/train_cpu.py                 # the default run (threads: torch's default)
    python benchmarks/train_cpu.py --threads 1 --iters 100
    python benchmarks/train_cpu.py --baseline      # also the same run from He init with dropout 0.5

``--baseline`` is the reference: the same budget from the usual He initialisation with the
papers' dropout, which is where a from-scratch LargeFOV stands without the looks-linear start.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import torch

from deeplab_lessons import config
from deeplab_lessons.train import TrainConfig, train

TARGET_MIOU = 0.55


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--iters", type=int, default=None, help="override the default number of iterations")
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N iterations")
    parser.add_argument("--baseline", action="store_true",
                        help="also train the reference: He init and dropout 0.5, same budget")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    overrides = {"iterations": args.iters} if args.iters else {}
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(out=out, progress=False, eval_every=args.eval_every, **overrides)
        config.voc_root()                                   # generate the embedded set outside the timing
        load_before = os.getloadavg()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = train(cfg)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        load_after = os.getloadavg()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    eval_seconds = wall - result.train_seconds
    train_cpu = cpu * result.train_seconds / wall
    idle_estimate = train_cpu / threads
    miou = result.metrics["mean_iou"]
    print(f"config: model={cfg.model} width={cfg.width} norm={cfg.norm} crop={cfg.crop_size} batch={cfg.batch_size} "
          f"iterations={cfg.iterations} optimizer={cfg.optimizer} lr={cfg.lr} init={cfg.init} dropout={cfg.dropout}")
    print(f"torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPU(s); "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"training: {result.train_seconds:.1f} s wall ({result.train_seconds / cfg.iterations:.3f} s/iteration), "
          f"{result.images_per_second:.1f} training images/s (crops of {cfg.crop_size} px)")
    print(f"evaluation: {eval_seconds:.1f} s wall for the val split(s)")
    print(f"process CPU time: {cpu:.1f} s; training share {train_cpu:.1f} s; "
          f"idle-machine estimate {idle_estimate:.1f} s of training")
    print(f"peak memory (max RSS): {peak_mib:.0f} MiB")
    for it, value in zip(result.history["eval_iteration"], result.history["mean_iou"]):
        print(f"  iteration {it:5d}: mean IoU {value:.4f}")
    print(f"mean IoU on the embedded val set: {miou:.4f} (pixel accuracy {result.metrics['pixel_accuracy']:.4f})")
    ok_miou = miou >= TARGET_MIOU
    print(f"target mIoU >= {TARGET_MIOU} after {cfg.iterations} iterations: {'met' if ok_miou else 'NOT met'}; "
          f"training took {result.train_seconds:.0f} s here, estimated {idle_estimate:.0f} s on an idle machine")
    if args.baseline:
        base = train(TrainConfig(progress=False, init="he", dropout=None, **overrides))
        ref = base.metrics["mean_iou"]
        print(f"reference (init=he, dropout 0.5, same budget): mean IoU {ref:.4f} in {base.train_seconds:.1f} s; "
              f"looks-linear / reference = {miou / max(ref, 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
