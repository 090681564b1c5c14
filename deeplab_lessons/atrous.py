"""Atrous (dilated) convolution and the "algorithme à trous" equivalence.

Lesson 02. A kernel of ``k`` taps applied at rate ``r`` reads every ``r``-th pixel:
``y[i] = sum_k x[i + r k] w[k]``, which is an ordinary convolution with the zero-inserted kernel
of span ``(k - 1) r + 1`` (:func:`dilate_kernel`). DeepLab (Chen et al., arXiv:1412.7062,
section 3.1; arXiv:1606.00915, section 3.1) uses it to keep VGG16's filters while removing the
strides of pool4 and pool5: set a stride ``s`` to 1 and dilate every later layer by ``s``, and the
network computes, densely, exactly the values the strided network computed on every ``s``-th
pixel (Holschneider et al. 1989; Shensa 1992). :func:`remove_strides` performs that surgery on
any module and :func:`atrous_equivalence_error` checks it numerically.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .receptive_field import LayerSpec, as_pair, output_length, trace_spatial_layers

__all__ = ["dilate_kernel", "AtrousMaxPool2d", "remove_strides", "atrous_equivalence_error"]


def _check_rate(rate) -> int:
    if isinstance(rate, bool) or int(rate) != rate or rate < 1:
        raise ValueError(f"rate must be an integer >= 1 (1 = ordinary convolution), got {rate!r}")
    return int(rate)


def dilate_kernel(weight: torch.Tensor, rate: int) -> torch.Tensor:
    """The kernel with holes: ``rate - 1`` zeros inserted between neighbouring taps.

    ``weight``: a 1-D kernel ``[k]`` or any tensor whose last two dimensions are the kernel's
    ``k_h x k_w`` (e.g. a Conv2d weight ``[out, in, k_h, k_w]``). Returns a tensor of spatial
    size ``(k - 1) * rate + 1`` such that ``conv(x, dilate_kernel(w, r)) == conv(x, w,
    dilation=r)`` (DeepLab v2, arXiv:1606.00915, section 3.1, fig. 2).
    """
    rate = _check_rate(rate)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 1:
        raise ValueError("weight must be a tensor with at least one (kernel) dimension")
    if weight.dim() == 1:
        out = weight.new_zeros((weight.shape[0] - 1) * rate + 1)
        out[::rate] = weight
        return out
    kh, kw = weight.shape[-2:]
    out = weight.new_zeros(*weight.shape[:-2], (kh - 1) * rate + 1, (kw - 1) * rate + 1)
    out[..., ::rate, ::rate] = weight
    return out


class AtrousMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that accepts any padding: pads with -inf itself, then pools.

    PyTorch refuses padding above half the (undilated) kernel, but a dilated pooling window
    needs its padding scaled with the dilation. Same output as ``nn.MaxPool2d`` would give,
    ``ceil_mode`` included.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = as_pair(self.kernel_size), as_pair(self.stride)
        dilation, padding = as_pair(self.dilation), as_pair(self.padding)
        padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=float("-inf"))
        out = F.max_pool2d(padded, kernel, stride, 0, dilation, self.ceil_mode)
        if self.ceil_mode:  # PyTorch's rule: the last window starts inside the unpadded input
            size = [output_length(n, LayerSpec(k, s, d, p, True))
                    for n, k, s, d, p in zip(x.shape[-2:], kernel, stride, dilation, padding)]
            out = out[..., :size[0], :size[1]]
        return out


def _scale(value, factor: int) -> tuple[int, int]:
    return tuple(v * factor for v in as_pair(value))


def remove_strides(model: nn.Module, layers: str | Sequence[str], input_size: int | Sequence[int] = 224,
                   copy: bool = True) -> nn.Module:
    """The "algorithme à trous" surgery: stride 1 at ``layers``, every later layer dilated.

    ``layers``: names (as in ``model.named_modules()``, e.g. ``"features.23"``) of strided
    Conv2d / MaxPool2d layers. Each gets stride 1, and every sliding-window layer that runs
    after it (in forward order, found by tracing the model at ``input_size``) has its dilation
    and padding multiplied by that stride; strides compound, so removing two stride-2 layers
    dilates what follows the second by 4 (DeepLab v1, arXiv:1412.7062, section 3.1: pool4 and
    pool5, conv5 rate 2, fc6 rate 4 before the LargeFOV change to 12). Max pooling layers become
    :class:`AtrousMaxPool2d`. Parallel branches after a removed stride are all dilated.

    The result computes densely what ``model`` computed on every ``prod(strides)``-th pixel
    (check with :func:`atrous_equivalence_error`). ``copy=False`` edits ``model`` in place.
    Raises ``ValueError`` for unknown or stride-1 names, non-square strides, and AvgPool2d
    layers with a kernel larger than 1 after a removed stride (PyTorch's AvgPool2d cannot dilate).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers must name at least one strided layer")
    model = _copy.deepcopy(model) if copy else model
    traced = trace_spatial_layers(model, input_size, strict=False)
    strided = [t.name for t in traced if max(as_pair(t.module.stride)) > 1]
    for name in names:
        if name not in strided:
            raise ValueError(f"remove_strides: {name!r} is not a strided Conv2d/MaxPool2d/AvgPool2d "
                             f"of this model; strided layers in forward order: {strided}")
    factor, seen = 1, set()
    for t in traced:
        if id(t.module) in seen:  # a layer called twice is edited once
            continue
        seen.add(id(t.module))
        layer = t.module
        if factor > 1:
            if isinstance(layer, nn.AvgPool2d) and as_pair(layer.kernel_size) != (1, 1):
                raise ValueError(f"remove_strides: AvgPool2d {t.name!r} runs after a removed stride "
                                 "but cannot be dilated; replace it by a Conv2d or MaxPool2d")
            if isinstance(layer, nn.Conv2d):
                layer.dilation = _scale(layer.dilation, factor)
                if not isinstance(layer.padding, str):
                    layer.padding = _scale(layer.padding, factor)
                    layer._reversed_padding_repeated_twice = [  # used by non-zero padding modes
                        p for p in reversed(layer.padding) for _ in range(2)]
            elif isinstance(layer, nn.MaxPool2d):
                pool = AtrousMaxPool2d(layer.kernel_size, layer.stride, _scale(layer.padding, factor),
                                       _scale(layer.dilation, factor), layer.return_indices,
                                       layer.ceil_mode)
                parent_name, _, child = t.name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, pool)
                layer = pool
        if t.name in names:
            stride = as_pair(layer.stride)
            if stride[0] != stride[1]:
                raise ValueError(f"remove_strides: {t.name!r} has a non-square stride {stride}")
            layer.stride = (1, 1)
            factor *= stride[0]
    return model


@torch.no_grad()
def atrous_equivalence_error(strided: nn.Module, dense: nn.Module, x: torch.Tensor, factor: int) -> float:
    """Largest ``|strided(x) - dense(x)[..., ::factor, ::factor]|`` (both in eval mode).

    ``factor``: the product of the strides :func:`remove_strides` removed. Zero up to float
    rounding when the surgery is right. Raises ``ValueError`` if the subsampled dense output
    is smaller than the strided one.
    """
    factor = _check_rate(factor)
    modes = strided.training, dense.training
    strided.eval(), dense.eval()
    try:
        coarse, fine = strided(x), dense(x)[..., ::factor, ::factor]
    finally:
        strided.train(modes[0]), dense.train(modes[1])
    h, w = coarse.shape[-2:]
    if fine.shape[-2] < h or fine.shape[-1] < w or fine.shape[:-2] != coarse.shape[:-2]:
        raise ValueError(f"dense output sampled every {factor} pixels is {tuple(fine.shape)}, "
                         f"strided output is {tuple(coarse.shape)}: wrong factor or not the same network")
    return float((coarse - fine[..., :h, :w]).abs().max())
