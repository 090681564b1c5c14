"""What every DeepLab model needs around it: input normalisation and stride-8 logits -> labels.

- :func:`normalize` turns ``uint8`` images into the float input every model here expects:
  ImageNet mean/std normalisation in torchvision's convention (RGB, values scaled to [0, 1]
  first), the convention of the torchvision ImageNet weights that :func:`transplant_vgg16`
  copies in. (The Caffe DeepLab releases subtracted a BGR mean in 0-255 units instead; the
  two are equivalent up to a per-channel affine map that the first conv absorbs.)
- :func:`upsample_logits` brings score maps at output stride ``s`` back to image size by
  bilinear interpolation *of the logits* (v1, arXiv 1412.7062, Sec. 3.1 and 4.1; v2, arXiv
  1606.00915, Sec. 3.1: "bilinear interpolation ... to the original image resolution"), which
  is what the dense CRF of lesson 06 consumes.
- the helpers every builder shares: :func:`scaled_channels` and :func:`check_width` (the width
  multiplier), :func:`check_num_classes`, :func:`init_weights` (He / the classifiers' N(0, 0.01)),
  :func:`split_parameters` and :func:`classifier_parameters` (the papers' 10x learning rate).
- :func:`conv_macs`: the multiply-accumulates of every convolution (lessons 02-04, 07).

Inference (normalise, forward, upsample, argmax; multi-scale and flip) is
:mod:`deeplab_lessons.inference`.

Alignment. In the networks of this package (3x3 pools with padding 1, "same" convolutions),
output position ``j`` of a stride-``s`` score map sees a field of view centred on input pixel
``j * s`` (lesson 01's tool reports ``start = 0``, ``jump = s``). :func:`upsample_logits`
honours that: it interpolates the ``h`` logit rows onto pixels ``0, s, ..., (h - 1) * s`` exactly
(``align_corners=True`` onto ``(h - 1) * s + 1`` rows, the Caffe ``Interp`` layer DeepLab
used) and copies the last row/column into the at most ``s - 1`` pixels beyond the last centre.
For the papers' input sizes ``s * k + 1`` (321, 513) this *is* ``F.interpolate(...,
align_corners=True)``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet per-channel mean and standard deviation (RGB, images scaled to [0, 1]), as used by
#: torchvision's ``VGG16_Weights.IMAGENET1K_V1`` and ``ResNet*_Weights``.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise a ``uint8`` image or batch: ``(x / 255 - mean) / std``, per RGB channel.

    Args:
        images: ``uint8`` tensor ``[3, H, W]`` or ``[N, 3, H, W]`` in RGB order, values 0-255
            (what :class:`deeplab_lessons.data.VOCSegmentation` returns).

    Returns:
        ``float32`` tensor of the same shape and device, zero mean / unit std per channel on
        ImageNet statistics: the input every model in :mod:`deeplab_lessons.models` expects.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255), got dtype {images.dtype}; "
                         "normalize() is for raw images, do not call it twice")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must be [3, H, W] or [N, 3, H, W] RGB, got shape {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: float ImageNet-normalised ``[..., 3, H, W]`` -> ``uint8`` 0-255."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return ((images * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def upsample_logits(logits: torch.Tensor, size: Sequence[int], output_stride: int = 8) -> torch.Tensor:
    """Bilinearly interpolate score maps at ``output_stride`` to image size ``size = (H, W)``.

    Logit ``(i, j)`` lands on pixel ``(i * output_stride, j * output_stride)``, where the
    network's field of view is centred (module docstring); pixels past the last centre copy the
    border. Requires ``h = ceil(H / output_stride)`` or close to it: any ``h, w`` work, the map
    is placed by that rule and cropped/padded to ``(H, W)``.

    Args:
        logits: ``[N, C, h, w]`` float scores (pre-softmax) at stride ``output_stride``.
        size: target ``(H, W)`` in pixels.
        output_stride: input pixels between neighbouring logits (8 for v1/v2, 8 or 16 for v3).

    Returns:
        ``[N, C, H, W]`` logits at full resolution (v1 Sec. 4.1, v2 Sec. 3.1).
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be [N, C, h, w], got shape {tuple(logits.shape)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive ints, got {tuple(size)}")
    if output_stride < 1:
        raise ValueError(f"output_stride must be >= 1, got {output_stride}")
    H, W = int(size[0]), int(size[1])
    h, w = logits.shape[-2:]
    span_h, span_w = (h - 1) * output_stride + 1, (w - 1) * output_stride + 1
    up = F.interpolate(logits, size=(span_h, span_w), mode="bilinear", align_corners=True)
    up = up[..., :H, :W]
    pad_h, pad_w = H - up.shape[-2], W - up.shape[-1]
    if pad_h or pad_w:
        up = F.pad(up, (0, pad_w, 0, pad_h), mode="replicate")
    return up


def conv_macs(model: nn.Module, input_size: int | Sequence[int], in_channels: int = 3) -> dict[str, int]:
    """Multiply-accumulates of every ``nn.Conv2d`` for one ``H x W`` image, by layer name.

    ``macs = output pixels * out_channels * (in_channels / groups) * k_h * k_w``: the cost that
    dominates these networks (pooling, ReLU and bias additions are left out; 1 MAC = 2 FLOPs).
    Runs ``model`` once in eval mode on the ``meta`` device (shapes only), so it is free even at
    width 1; the model's train/eval mode is restored afterwards.
    """
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    names = {id(m): n for n, m in model.named_modules()}
    macs: dict[str, int] = {}

    def hook(m: nn.Conv2d, args, out) -> None:
        k_h, k_w = m.kernel_size
        per_pixel = m.out_channels * (m.in_channels // m.groups) * k_h * k_w
        key = names[id(m)]
        macs[key] = macs.get(key, 0) + per_pixel * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    params = {n: torch.empty_like(t, device="meta") for n, t in
              list(model.named_parameters()) + list(model.named_buffers())}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.func.functional_call(model, params, (torch.zeros(1, in_channels, *hw, device="meta"),), strict=False)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def scaled_channels(channels: int, width: float) -> int:
    """``channels`` scaled by the width multiplier: ``max(1, round(channels * width))``."""
    return max(1, int(round(channels * width)))


#: Largest width multiplier the builders accept (4x the paper's channels).
MAX_WIDTH = 4.0


def check_width(width: float) -> float:
    """The width multiplier as a float, or a ``ValueError``: a number in ``(0, MAX_WIDTH]``."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH:
        raise ValueError(f"width must be a number in (0, {MAX_WIDTH:g}] (1.0 = the paper's network), got {width!r}")
    return float(width)


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` when it is a positive int (21 for PASCAL VOC), else a ``ValueError``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (21 for PASCAL VOC), got {num_classes!r}")
    return num_classes


def init_weights(module: nn.Module, classifiers: Sequence[nn.Conv2d]) -> None:
    """He init for the convs, N(0, 0.01) for the classifiers (v1's Caffe fc8 filler), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if any(m is c for c in classifiers):
                nn.init.normal_(m.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def split_parameters(model: nn.Module, classifier: Sequence[nn.Parameter], want_classifier: bool) -> Iterator[nn.Parameter]:
    """The parameters of ``model`` that are (``want_classifier``) or are not in ``classifier``."""
    ids = {id(p) for p in classifier}
    for p in model.parameters():
        if (id(p) in ids) == want_classifier:
            yield p


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters trained at ``classifier_lr_mult`` x the base learning rate (the papers' 10x).

    The model's own ``classifier_parameters()`` method when it has one, else every parameter
    under its ``classifier`` submodule (empty when it has neither).
    """
    own = getattr(model, "classifier_parameters", None)
    if callable(own):
        return list(own())
    head = getattr(model, "classifier", None)
    return list(head.parameters()) if isinstance(head, nn.Module) else []
