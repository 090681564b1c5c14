"""Parameters, multiply-accumulates and forward time of the VGG16 DeepLab models at width 1.

Reference (DeepLab v1, arXiv 1412.7062, Table 2): DeepLab-CRF-7x7 134.3M parameters,
LargeFOV 20.5M and 3.36x faster (Caffe, GPU, 321 x 321 training crops). Prints each model's
numbers and the measured 7x7 / LargeFOV time ratio beside the paper's.

    python benchmarks/model_cost.py [--size 321] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from deeplab_lessons import config
from deeplab_lessons.models import conv_macs, deeplab_v1, deeplab_v2

PAPER_SPEEDUP = 3.36


@torch.no_grad()
def forward_seconds(model: torch.nn.Module, size: int, repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` forward passes of one ``size x size`` image (after one warm-up)."""
    model = model.to(device).eval()
    x = torch.randn(1, 3, size, size, device=device)
    model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=321, help="square input size in pixels (paper: 321)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = config.device()
    print(f"device {device}, {torch.get_num_threads()} CPU threads, input {args.size}x{args.size}, batch 1")
    builders = {
        "v1 DeepLab-7x7": lambda: deeplab_v1(fov="7x7"),
        "v1 DeepLab-4x4": lambda: deeplab_v1(fov="4x4"),
        "v1 LargeFOV": lambda: deeplab_v1(fov="largefov"),
        "v2 ASPP-S": lambda: deeplab_v2(aspp="S"),
        "v2 ASPP-L": lambda: deeplab_v2(aspp="L"),
    }
    seconds = {}
    print(f"{'model':<16} {'params (M)':>10} {'GMACs':>8} {'forward (s)':>12}")
    for name, build in builders.items():
        torch.manual_seed(0)
        model = build()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        gmacs = sum(conv_macs(model, args.size).values()) / 1e9
        seconds[name] = forward_seconds(model, args.size, args.repeats, device)
        print(f"{name:<16} {params:>10.1f} {gmacs:>8.1f} {seconds[name]:>12.3f}")
        del model
    ratio = seconds["v1 DeepLab-7x7"] / seconds["v1 LargeFOV"]
    print(f"7x7 / LargeFOV forward time: {ratio:.2f}x (paper, Caffe on a GPU: {PAPER_SPEEDUP}x faster)")


if __name__ == "__main__":
    main()
