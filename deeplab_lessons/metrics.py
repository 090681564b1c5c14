"""Segmentation metrics from one dataset-wide confusion matrix.

The PASCAL VOC score (and the DeepLab papers' "mean IoU", arXiv 1412.7062 Sec. 5 and
1606.00915 Sec. 4) is computed from a single ``num_classes x num_classes`` confusion matrix
accumulated over *every pixel of every image* of the split, not averaged image by image:

.. math::

    \\mathrm{IoU}_c = \\frac{n_{cc}}{\\sum_j n_{cj} + \\sum_i n_{ic} - n_{cc}},
    \\qquad \\mathrm{mIoU} = \\frac{1}{|C|} \\sum_{c \\in C} \\mathrm{IoU}_c

where :math:`n_{ij}` counts pixels of true class :math:`i` predicted as :math:`j` and
:math:`C` is the set of classes whose union is non-empty (present in the ground truth or
predicted). Pixels labelled ``ignore_index`` (255 = VOC "void") are never counted.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Accumulates a ``[num_classes, num_classes]`` pixel confusion matrix (rows: truth, columns: prediction).

    Usage::

        cm = ConfusionMatrix(num_classes=21, ignore_index=255)
        for image, target in loader:
            cm.update(model(image).argmax(1), target)
        scores = cm.compute()   # pixel_accuracy, mean_accuracy, mean_iou, iou (per class)
    """

    def __init__(self, num_classes: int = 21, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every pixel counted so far."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Count the pixels of one batch: ``pred`` and ``target`` are label maps of the same shape.

        ``pred`` holds class indices (e.g. ``logits.argmax(1)``), ``target`` class indices with
        ``ignore_index`` where a pixel is not scored. Raises ``ValueError`` on a shape mismatch or
        on a target label outside ``0..num_classes-1`` that is not ``ignore_index``.
        """
        pred = torch.as_tensor(pred).detach()
        target = torch.as_tensor(target).detach()
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}; "
                             f"upsample the logits to the label size before argmax")
        pred = pred.reshape(-1).to(device="cpu", dtype=torch.int64)
        target = target.reshape(-1).to(device="cpu", dtype=torch.int64)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        n = self.num_classes
        if target.numel():
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"target holds labels outside 0..{n - 1} (min {lo}, max {hi}) that are not "
                                 f"ignore_index={self.ignore_index}")
            lo, hi = int(pred.min()), int(pred.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"pred holds class indices outside 0..{n - 1} (min {lo}, max {hi})")
        self.matrix += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another process) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts over every process of an initialised ``torch.distributed`` group; returns self."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)
        return self

    def compute(self) -> dict:
        """Scores from the counts so far.

        Returns a dict with ``pixel_accuracy`` (correct / scored pixels), ``mean_accuracy``
        (per-class recall averaged over classes present in the ground truth), ``mean_iou``
        (IoU averaged over classes whose union is non-empty) as floats in [0, 1] (NaN when no
        pixel was counted), and ``iou``: a float64 numpy array of the per-class IoU, NaN where
        a class is neither present nor predicted.
        """
        m = self.matrix.double()
        true_positive = torch.diagonal(m)
        per_truth = m.sum(1)
        per_pred = m.sum(0)
        union = per_truth + per_pred - true_positive
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
        recall = torch.where(per_truth > 0, true_positive / per_truth.clamp(min=1), nan)
        total = m.sum()
        return {
            "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else float("nan"),
            "mean_accuracy": float(torch.nanmean(recall)) if (per_truth > 0).any() else float("nan"),
            "mean_iou": float(torch.nanmean(iou)) if (union > 0).any() else float("nan"),
            "iou": iou.numpy(),
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"
