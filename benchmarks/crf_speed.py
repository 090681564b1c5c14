"""Dense CRF speed and agreement: the project's PyTorch lattice vs pydensecrf (C++), in one run.

A 500x375 image (the size of a PASCAL VOC photo), 21 labels, 10 mean-field iterations with
DeepLab v1's parameters, 2 CPU threads. The unary imitates a stride-8 network: the true labels
averaged over 8x8 cells, perturbed with noise, bilinearly upsampled, softmaxed. Both timings
include building the kernels' permutohedral lattices. Targets: ratio torch / pydensecrf <= 1.0,
label agreement >= 99%; and >= 99% agreement with the exact O(N^2) CRF on a small image. Then the
batched path (lessons 06 and 07): 4 images as one mean field vs one by one on the CPU, and on a GPU
(when there is one) the single-image time and ``--batch`` images at once.

pydensecrf is single-threaded; the torch backend runs on ``--threads`` intra-op threads and is
timed with one thread as well. The machine's load average is printed with the timings: on a
busy machine, multi-threaded torch operations wait for each other at every step while a
single-threaded program does not, so compare the 2-thread figure on an idle machine only.

    python benchmarks/crf_speed.py [--repeats 3] [--threads 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_lessons.crf import CRFParams, dense_crf
from deeplab_lessons.data import synthesize_image


def coarse_probs(labels: np.ndarray, num_classes: int = 21, stride: int = 8, noise: float = 1.5,
                 seed: int = 0) -> np.ndarray:
    """Softmax of a stride-``stride`` score map built from ``labels``, upsampled bilinearly: [C, H, W]."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.from_numpy(np.where(labels == 255, 0, labels).astype(np.int64))
    onehot = F.one_hot(truth, num_classes).permute(2, 0, 1).float()[None]
    coarse = F.avg_pool2d(onehot, stride, ceil_mode=True) * 3.0
    coarse = coarse + noise * torch.randn(coarse.shape, generator=g)
    scores = F.interpolate(coarse, size=labels.shape, mode="bilinear", align_corners=False)
    return torch.softmax(scores[0], dim=0).numpy()


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs (seconds) and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def batch_line(image: np.ndarray, probs: np.ndarray, params: CRFParams, repeats: int, device: torch.device,
               size: int = 4) -> None:
    """Print the per-image time of ``size`` images as one batched mean field vs one at a time, on ``device``.

    The batch holds ``size`` copies of the image with differently perturbed unaries (each its own lattice).
    """
    g = torch.Generator().manual_seed(1)
    base = torch.from_numpy(probs).log()
    batch_probs = torch.softmax(base[None] + 0.5 * torch.randn((size, *base.shape), generator=g), dim=1).to(device)
    batch_images = torch.from_numpy(image)[None].expand(size, -1, -1, -1).contiguous().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_batch, q_batch = timed(lambda: (dense_crf(batch_images, batch_probs, params), sync())[0], repeats)
    t_loop, q_loop = timed(lambda: (torch.stack([dense_crf(i, p, params) for i, p in zip(batch_images, batch_probs)]),
                                    sync())[0], repeats)
    agree = float((q_batch.argmax(1) == q_loop.argmax(1)).float().mean())
    print(f"batched on {device.type}: {size} images as one mean field {t_batch / size:.3f} s per image, one at a "
          f"time {t_loop / size:.3f} s per image (ratio {t_loop / t_batch:.2f}x; labels agree {agree:.4%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="images per batch for the GPU's batched line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = CRFParams()

    image, labels = synthesize_image(7, 0, size=(375, 500))
    probs = coarse_probs(labels)
    truth = np.where(labels == 255, 0, labels)
    scored = labels != 255
    print(f"image {image.shape[1]}x{image.shape[0]}, {probs.shape[0]} labels, {params.iterations} iterations, "
          f"{args.repeats} repeats (median); load average before: {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")

    dense_crf(image[:64, :64].copy(), probs[:, :64, :64] / probs[:, :64, :64].sum(0), params)   # warm-up
    t_torch, q_torch = timed(lambda: dense_crf(image, probs, params, backend="torch"), args.repeats)
    torch.set_num_threads(1)
    t_torch1, _ = timed(lambda: dense_crf(image, probs, params, backend="torch"), args.repeats)
    torch.set_num_threads(args.threads)
    try:
        t_pd, q_pd = timed(lambda: dense_crf(image, probs, params, backend="pydensecrf"), args.repeats)
    except ImportError as err:
        print(f"pydensecrf unavailable ({err}); torch backend: {t_torch:.3f} s")
        return 0
    agree = float((q_torch.argmax(0) == q_pd.argmax(0)).mean())
    print(f"pydensecrf (C++, 1 thread)   : {t_pd:.3f} s")
    print(f"torch, {args.threads} threads              : {t_torch:.3f} s   (lattice construction included)")
    print(f"torch, 1 thread               : {t_torch1:.3f} s")
    print(f"ratio torch / pydensecrf: {t_torch / t_pd:.2f} with {args.threads} threads, "
          f"{t_torch1 / t_pd:.2f} with 1 (target <= 1.0); load average after: {os.getloadavg()[0]:.2f}")
    print(f"label agreement torch vs pydensecrf: {agree:.4%}   (target >= 99%), "
          f"max |dQ| = {np.abs(q_torch - q_pd).max():.1e}")
    acc = lambda q: (q.argmax(0) == truth)[scored].mean()  # noqa: E731
    print(f"pixel accuracy: unary {acc(probs):.2%} -> CRF torch {acc(q_torch):.2%}, pydensecrf {acc(q_pd):.2%}")

    small_image, small_labels = synthesize_image(7, 1, size=(48, 64))
    small = coarse_probs(small_labels, stride=8, seed=1)
    q_naive = dense_crf(small_image, small, params, backend="naive")
    q_small = dense_crf(small_image, small, params, backend="torch")
    print(f"label agreement torch vs naive (64x48): {(q_naive.argmax(0) == q_small.argmax(0)).mean():.4%} "
          f"(target >= 99%)")

    batch_line(image, probs, params, args.repeats, torch.device("cpu"))
    if torch.cuda.is_available():
        dev_image, dev_probs = torch.from_numpy(image).cuda(), torch.from_numpy(probs).cuda()
        dense_crf(dev_image, dev_probs, params)
        torch.cuda.synchronize()
        t_gpu, _ = timed(lambda: (dense_crf(dev_image, dev_probs, params), torch.cuda.synchronize()), args.repeats)
        print(f"torch on {torch.cuda.get_device_name()}: {t_gpu:.3f} s per image "
              f"({t_pd / t_gpu:.1f}x faster than pydensecrf on the CPU)")
        batch_line(image, probs, params, args.repeats, torch.device("cuda"), size=args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
