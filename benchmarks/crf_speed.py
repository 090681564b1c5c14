"""Dense CRF speed and agreement: the project's PyTorch lattice vs pydensecrf (C++), in one run.

Two cases, both normalisations (DeepLab's ``D^-1 K`` and pydensecrf's symmetric one), one and two
torch threads:

- 21 labels, 10 mean-field iterations, on a 500x375 image (the size of a PASCAL VOC photo) of the
  embedded set's generator; the unary imitates a stride-8 network (the true labels averaged over 8x8
  cells, perturbed with noise, bilinearly upsampled, softmaxed);
- 2 labels (cat / background), 5 iterations, on scikit-image's photo ``chelsea`` (451x300, shipped
  with the package), from a rough outline at stride 8.

Both timings include building the kernels' lattices, except that the torch backend shares the Gaussian
kernel's lattice between images of the same size (it depends on nothing else): the first time is for an image
after the first of its size; "first image of its size" is a call that builds every lattice, as pydensecrf's
every call does. The target is judged on both. Targets: at one thread torch / pydensecrf <= 0.5 at 21 labels and <= 1.0 at 2 labels, with
>= 99.9 % label agreement; and >= 99 % agreement with the exact O(N^2) CRF on a small image. Then the
batched path (lessons 06 and 07): 4 images as one mean field vs one by one on the CPU, and on a GPU
(when there is one) the single-image time and ``--batch`` images at once.

pydensecrf is single-threaded. The machine's load average is printed with the timings: on a busy
machine, multi-threaded torch operations wait for each other at every step while a single-threaded
program does not, so compare the 2-thread figure on an idle machine only.

    python benchmarks/crf_speed.py [--repeats 5] [--threads 2] [--batch 16]
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
from deeplab_lessons.crf.torch_backend import POSITION_LATTICES
from deeplab_lessons.data import ellipse_mask, load_photo, stride_probs, synthesize_image


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


def timed_pair(fn_a, fn_b, repeats: int) -> tuple[float, object, float, object]:
    """Median wall times (seconds) and last results of ``fn_a()`` and ``fn_b()``, called in turn ``repeats`` times
    each: on a machine whose load drifts, both see the same conditions, so their ratio is fair."""
    times_a, times_b, out_a, out_b = [], [], None, None
    for _ in range(repeats):
        start = time.perf_counter()
        out_a = fn_a()
        times_a.append(time.perf_counter() - start)
        start = time.perf_counter()
        out_b = fn_b()
        times_b.append(time.perf_counter() - start)
    return statistics.median(times_a), out_a, statistics.median(times_b), out_b


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="images per batch for the GPU's batched line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = CRFParams()

    image, labels = synthesize_image(7, 0, size=(375, 500))
    probs = coarse_probs(labels)
    photo = load_photo("chelsea")
    rough = ellipse_mask(photo.shape[:2], centre=(165, 190), radii=(185, 190))
    photo_probs = stride_probs(rough, 1, num_classes=2).numpy()   # background and one object label
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.repeats} repeats (median)")
    dense_crf(image[:64, :64].copy(), probs[:, :64, :64] / probs[:, :64, :64].sum(0), params)   # warm-up
    cases = [("21 labels, 500x375, 10 iterations", image, probs, 10, 0.5),
             ("2 labels, chelsea 451x300, 5 iterations", photo, photo_probs, 5, 1.0)]
    reference = {}                                                # pydensecrf's seconds per case
    for name, img, prob, iterations, target in cases:
        for normalization in ("after", "symmetric"):
            p = params.replace(iterations=iterations, normalization=normalization)
            try:
                dense_crf(img[:8, :8].copy(), np.full((prob.shape[0], 8, 8), 1 / prob.shape[0], np.float32), p,
                          backend="pydensecrf")
            except ImportError as err:
                print(f"pydensecrf unavailable ({err}): nothing to compare with")
                return 0
            line = []
            for threads in (1, args.threads):
                torch.set_num_threads(threads)
                t_pd, q_pd, t_torch, q_torch = timed_pair(lambda: dense_crf(img, prob, p, backend="pydensecrf"),
                                                          lambda: dense_crf(img, prob, p, backend="torch"), args.repeats)
                line.append(f"{threads} thread{'s' if threads > 1 else ''} {t_torch:.3f} s = {t_torch / t_pd:.2f}x "
                            f"(pydensecrf {t_pd:.3f} s)")
                if threads == 1:
                    agree = float((q_torch.argmax(0) == q_pd.argmax(0)).mean())
                    ratio1 = t_torch / t_pd
                    reference[(name, normalization)] = t_pd
                    t_pd_cold, _, t_cold, _ = timed_pair(lambda: dense_crf(img, prob, p, backend="pydensecrf"),
                                                         lambda: (POSITION_LATTICES.clear(), dense_crf(img, prob, p)),
                                                         args.repeats)
                    line.append(f"first image of its size {t_cold:.3f} s = {t_cold / t_pd_cold:.2f}x")
                    ratio1_cold = t_cold / t_pd_cold
            print(f"{name}, {normalization:>9}: torch {'; '.join(line)} "
                  f"(target at 1 thread <= {target}: {'met' if ratio1 <= target else 'not met'}, for the first image of a size "
                  f"{'met' if ratio1_cold <= target else 'not met'}); "
                  f"labels agree {agree:.4%} (target >= 99.9 %)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    torch.set_num_threads(args.threads)
    q_torch = dense_crf(image, probs, params)
    q_pd = dense_crf(image, probs, params, backend="pydensecrf")
    truth = np.where(labels == 255, 0, labels)
    scored = labels != 255
    acc = lambda q: (q.argmax(0) == truth)[scored].mean()  # noqa: E731
    print(f"pixel accuracy (21 labels): unary {acc(probs):.2%} -> CRF torch {acc(q_torch):.2%}, "
          f"pydensecrf {acc(q_pd):.2%}")

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
              f"({reference[(cases[0][0], 'after')] / t_gpu:.1f}x faster than pydensecrf on the CPU)")
        batch_line(image, probs, params, args.repeats, torch.device("cuda"), size=args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
