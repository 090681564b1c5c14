"""DeepLab v2's multi-scale inputs (MSC): one network, three input scales, scores fused by a max.

v2 (arXiv 1606.00915, Sec. 3.2 "multi-scale inputs" and Table 4, rows with MSC): the image is
fed at scales 1, 0.75 and 0.5 through the *same* weights; each scale's score map is bilinearly
resized to the scale-1 score map and the maps are fused by taking the element-wise maximum.
The network is trained jointly: the loss is summed over the fused map and each scale's map.
Here each scale's map is compared with the labels after it is resized to the scale-1 grid (the
same map the fusion uses); the Caffe release instead shrank the labels to each scale's own grid.

This is not v3's test-time evaluation (:func:`deeplab_lessons.inference.predict_proba` with
``scales`` and ``flip``), which averages softmax probabilities of an already trained network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import classifier_parameters

#: v2's scales (Sec. 3.2).
MSC_SCALES = (1.0, 0.75, 0.5)


#: The largest input scale accepted (v3 evaluates up to 1.75, v2 trains at most at 1): beyond it a
#: 513-px image would need gigabytes for one forward pass.
MAX_SCALE = 4.0


def check_scales(scales: Sequence[float], first_is_one: bool = True) -> tuple[float, ...]:
    """``scales`` as a tuple of floats in (0, :data:`MAX_SCALE`], or a ``ValueError`` saying what is allowed.

    With ``first_is_one`` (v2's MSC) the first entry must be 1.0: the fused map is on its grid.
    """
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
        raise ValueError(f"scales must be a sequence of numbers in (0, {MAX_SCALE:g}], got {scales!r}")
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be a sequence of numbers in (0, {MAX_SCALE:g}], got {scales!r}") from None
    if not out or any(not 0 < s <= MAX_SCALE for s in out):
        raise ValueError(f"scales must be numbers in (0, {MAX_SCALE:g}] (finite, at least one), got {scales!r}")
    if first_is_one and out[0] != 1.0:
        raise ValueError(f"the first scale must be 1.0 (the fused map is on its grid), got {scales!r}")
    return out


class MSC(nn.Module):
    """Wrap a segmentation ``model`` so it sees its input at several scales (v2's MSC).

    ``forward(x)`` (eval mode) returns the fused logits: the element-wise max over scales of
    ``model(resize(x, s))``, each resized (bilinear, corners aligned, as Caffe's ``Interp``) to
    the scale-1 logits' size. In training mode it returns ``{"out": fused, "scales": [per-scale
    logits on the scale-1 grid]}``; the trainer sums the loss over ``out`` and every entry of
    ``scales`` (v2's joint training). ``output_stride`` and the classifier parameters are the
    wrapped model's; the weights are shared, so the state dict is the model's under ``model.``.

    Args:
        model: any model of :mod:`deeplab_lessons.models` (logits at ``model.output_stride``).
        scales: input scales, the first 1.0 (v2: 1, 0.75, 0.5).
    """

    def __init__(self, model: nn.Module, scales: Sequence[float] = MSC_SCALES) -> None:
        super().__init__()
        if not isinstance(model, nn.Module) or not hasattr(model, "output_stride"):
            raise TypeError(f"model must be a segmentation nn.Module with an output_stride, got {type(model).__name__}")
        self.model = model
        self.scales = check_scales(scales)
        self.output_stride = model.output_stride

    def scale_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every scale, resized to the scale-1 logits' size (scale 1 first)."""
        height, width = x.shape[-2:]
        base = self.model(x)
        out = [base]
        for scale in self.scales[1:]:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            logits = self.model(F.interpolate(x, size=size, mode="bilinear", align_corners=True))
            out.append(F.interpolate(logits, size=base.shape[-2:], mode="bilinear", align_corners=True))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        per_scale = self.scale_logits(x)
        fused = torch.stack(per_scale).amax(dim=0)
        if self.training:
            return {"out": fused, "scales": per_scale}
        return fused

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The wrapped model's classifier parameters (10x learning rate)."""
        yield from classifier_parameters(self.model)

    def set_output_stride(self, output_stride: int) -> None:
        """Change the wrapped model's output stride (models that can: v3 / v3+)."""
        if not hasattr(self.model, "set_output_stride"):
            raise ValueError(f"{type(self.model).__name__} cannot change its output stride (only v3 / v3+ can)")
        self.model.set_output_stride(output_stride)
        self.output_stride = self.model.output_stride


def unwrap_msc(model: nn.Module) -> nn.Module:
    """The network inside an :class:`MSC` wrapper, or ``model`` itself when it is not wrapped."""
    return model.model if isinstance(model, MSC) else model
