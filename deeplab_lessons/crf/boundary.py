"""Scores near object boundaries: the "trimap" evaluation of DeepLab v1 (arXiv 1412.7062, Sec. 5).

A stride-8 network is least accurate where labels change; the dense CRF mostly helps there.
DeepLab v1 measures it by scoring only the pixels in a narrow band around the ground-truth
object boundaries and plotting accuracy / mean IoU against the band's width.

Definitions used here (pixels, chessboard distance, so a band is a dilation by a square):

- a *boundary pixel* is a scored pixel (label != ``ignore_index``) with one of its 8 neighbours
  labelled differently, void included: the pixels that touch VOC's void band or another class;
- the *band of width w* holds the scored pixels within chessboard distance ``w`` of a boundary
  pixel (``w = 0``: the boundary pixels themselves). Void pixels are never scored.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_lessons.metrics import ConfusionMatrix



def _as_labels(target) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    if t.dim() != 2:
        raise ValueError(f"target must be an [H, W] label map, got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def boundary_pixels(target, ignore_index: int = 255) -> torch.Tensor:
    """Bool [H, W]: scored pixels with an 8-neighbour of another label (void counts as a label)."""
    t = _as_labels(target)
    padded = F.pad(t[None, None].to(torch.float32), (1, 1, 1, 1), mode="replicate")[0, 0]
    height, width = t.shape
    changed = torch.zeros_like(t, dtype=torch.bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            changed |= padded[dy:dy + height, dx:dx + width] != t.to(torch.float32)
    return changed & (t != ignore_index)


def boundary_distance(target, ignore_index: int = 255) -> torch.Tensor:
    """int64 [H, W]: each pixel's chessboard distance to the nearest boundary pixel (H + W where there is none).

    One exact distance transform (scipy's chamfer transform with the chessboard metric), so every band
    width is a threshold of the same map: ``distance <= w`` is the dilation of the boundary pixels by a
    ``(2w + 1)``-square, without a pooling pass per width.
    """
    from scipy import ndimage

    t = _as_labels(target)
    edges = boundary_pixels(t, ignore_index).numpy()
    if not edges.any():
        return torch.full(t.shape, t.shape[0] + t.shape[1], dtype=torch.int64)
    return torch.from_numpy(ndimage.distance_transform_cdt(~edges, metric="chessboard").astype(np.int64))


def trimap_band(target, width: int, ignore_index: int = 255) -> torch.Tensor:
    """Bool [H, W]: scored pixels within ``width`` pixels (chessboard distance) of a boundary pixel."""
    if int(width) != width or width < 0:
        raise ValueError(f"width must be an integer number of pixels >= 0, got {width!r}")
    t = _as_labels(target)
    return (boundary_distance(t, ignore_index) <= int(width)) & (t != ignore_index)


def trimap_scores(predictions: Iterable, targets: Iterable, widths: Sequence[int] = tuple(range(0, 41, 5)),
                  num_classes: int = 21, ignore_index: int = 255) -> dict[int, dict]:
    """Pixel accuracy and mean IoU inside the band of each width, over a whole data set.

    ``predictions`` and ``targets`` are matching sequences of [H, W] label maps (numpy or
    torch). One dataset-wide :class:`~deeplab_lessons.metrics.ConfusionMatrix` per width, as
    for the ordinary VOC score. Returns ``{width: ConfusionMatrix.compute() result + "pixels"}``
    (the number of scored pixels in the band).
    """
    widths = [int(w) for w in widths]
    matrices = {w: ConfusionMatrix(num_classes, ignore_index) for w in widths}
    pixels = {w: 0 for w in widths}
    for pred, target in zip(predictions, targets):
        t = _as_labels(target)
        p = _as_labels(pred)
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in size")
        distance = boundary_distance(t, ignore_index)
        scored = t != ignore_index
        for w in widths:
            band = (distance <= w) & scored
            matrices[w].update(p[band], t[band])
            pixels[w] += int(band.sum())
    return {w: {**matrices[w].compute(), "pixels": pixels[w]} for w in widths}
