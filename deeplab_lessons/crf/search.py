"""Cross-validating the CRF's parameters, as DeepLab v1 did (arXiv 1412.7062, Sec. 5).

v1 fixes w2 = 3 and theta_gamma = 3 and searches w1 in [5, 10], theta_alpha in [50:10:100] and
theta_beta in [3:1:10] with a coarse-to-fine scheme, on a subset of 100 validation images (part
of the set it then reports on; the lesson holds its search images out instead). :func:`grid_search` scores every combination of a grid by mean IoU over a set of
images; :func:`coarse_to_fine` runs a coarse grid, then a finer one around the best point.
Each image's lattices are built once per pair of widths and reused for every weight.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from deeplab_lessons.metrics import ConfusionMatrix

from .core import CRFParams
from .torch_backend import DenseCRF

#: v1's search ranges (Sec. 5); w2 = pos_w and theta_gamma = pos_xy_std stay at 3.
V1_SEARCH_RANGES: dict[str, tuple[float, float]] = {"bi_w": (5.0, 10.0), "bi_xy_std": (50.0, 100.0),
                                                    "bi_rgb_std": (3.0, 10.0)}


@dataclass(frozen=True)
class CRFSample:
    """One held-out image: ``image`` ``[H, W, 3]`` uint8, ``probs`` ``[C, H, W]``, ``target`` ``[H, W]`` (255 void)."""

    image: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor


def grid_search(samples: Sequence[CRFSample], grid: Mapping[str, Sequence[float]], base: CRFParams | None = None,
                num_classes: int = 21) -> list[tuple[CRFParams, float]]:
    """Mean IoU over ``samples`` (one confusion matrix) of every combination in ``grid``, best first.

    ``grid`` maps :class:`CRFParams` field names to the values to try; the other fields come from
    ``base``. The CRF of each image is built once and its lattices cached, so the weights cost a
    mean-field run each and the widths a lattice each.
    """
    base = base if base is not None else CRFParams()
    names = list(grid)
    unknown = [n for n in names if not hasattr(base, n)]
    if unknown:
        raise ValueError(f"grid names unknown CRFParams fields {unknown}")
    if not samples:
        raise ValueError("grid_search needs at least one held-out sample")
    combos = [base.replace(**dict(zip(names, values))) for values in itertools.product(*(grid[n] for n in names))]
    matrices = [ConfusionMatrix(num_classes) for _ in combos]
    for sample in samples:
        crf = DenseCRF(sample.image, max_cached_lattices=len(combos) + 2)
        with torch.no_grad():
            for params, cm in zip(combos, matrices):
                cm.update(crf(sample.probs, params)[0].argmax(0), sample.target)
    scored = [(params, cm.compute()["mean_iou"]) for params, cm in zip(combos, matrices)]
    return sorted(scored, key=lambda item: -item[1])


def _around(value: float, step: float, low: float, high: float) -> list[float]:
    return sorted({min(high, max(low, value + d)) for d in (-step, 0.0, step)})


def coarse_to_fine(samples: Sequence[CRFSample], coarse: Mapping[str, Sequence[float]],
                   base: CRFParams | None = None,
                   num_classes: int = 21) -> tuple[CRFParams, float, list[tuple[CRFParams, float]]]:
    """A coarse :func:`grid_search`, then a fine one at half the coarse spacing around its best point.

    Returns ``(best params, best mean IoU, every scored combination of both stages)``. The fine
    grid stays inside the coarse grid's range.
    """
    first = grid_search(samples, coarse, base, num_classes)
    best = first[0][0]
    fine = {}
    for name, values in coarse.items():
        values = sorted(values)
        step = (values[1] - values[0]) / 2 if len(values) > 1 else 0.0
        fine[name] = _around(getattr(best, name), step, values[0], values[-1])
    second = grid_search(samples, fine, best, num_classes)
    everything = sorted(first + second, key=lambda item: -item[1])
    return everything[0][0], everything[0][1], everything
