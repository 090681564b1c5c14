"""The training loss: cross-entropy between stride-``s`` logits and the labels, two ways.

- ``"upsample"`` (DeepLab v3, arXiv 1706.05587 Appendix, Table 8): the logits are upsampled
  bilinearly to the label size (:func:`deeplab_lessons.models.upsample_logits`) and every
  labelled pixel counts;
- ``"shrink"`` (DeepLab v1/v2, the Caffe configs' ``label_shrink`` with ``shrink_factor: 8``):
  the labels are subsampled to the logits, the label of logit ``(i, j)`` being pixel
  ``(i * s, j * s)``, where that logit's field is centred (so for the configs' ``8k + 1`` crops,
  exactly Caffe's ``Interp`` of the labels), and the loss is computed at stride ``s``.

Either way label 255 is ignored and the loss is the mean over the labelled positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeplab_lessons.data.palette import IGNORE_INDEX
from deeplab_lessons.models.common import upsample_logits


def shrink_labels(targets: torch.Tensor, size: tuple[int, int], output_stride: int) -> torch.Tensor:
    """``[N, H, W]`` labels sampled at pixels ``(i * s, j * s)`` for an ``h x w`` logit grid
    (positions past the image repeat its last row / column, as :func:`upsample_logits` does)."""
    height, width = targets.shape[-2:]
    rows = (torch.arange(size[0], device=targets.device) * output_stride).clamp(max=height - 1)
    cols = (torch.arange(size[1], device=targets.device) * output_stride).clamp(max=width - 1)
    return targets[..., rows, :][..., cols]


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, output_stride: int,
                      label_target: str = "upsample") -> torch.Tensor:
    """Mean cross-entropy over the labelled positions (255 ignored) of ``[N, C, h, w]`` logits at
    ``output_stride`` against ``[N, H, W]`` labels, matched by ``label_target`` (module docstring)."""
    if label_target == "upsample":
        logits = upsample_logits(logits, targets.shape[-2:], output_stride)
    elif label_target == "shrink":
        targets = shrink_labels(targets, logits.shape[-2:], output_stride)
    else:
        raise ValueError(f"label_target must be 'shrink' or 'upsample', got {label_target!r}")
    labelled = (targets != IGNORE_INDEX).sum().clamp(min=1)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
