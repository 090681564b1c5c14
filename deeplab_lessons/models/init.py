"""Initialising a plain VGG-style DeepLab so that it trains from random numbers in minutes.

The papers never train DeepLab from scratch: v1/v2 start from ImageNet VGG16 weights. Without
them (nothing is downloaded in the CPU lessons), a 16-layer plain network with the usual He
initialisation spends hundreds of steps predicting "background everywhere": at initialisation
every output mixes a large window of random features, and the colour of the pixel it should
label is mostly lost on the way through 15 ReLU layers, the max pools and fc6's rate-12 taps.

:func:`looks_linear_` gives every convolution a *looks-linear, delta-orthogonal* start:

- **delta**: only the kernel's centre tap is non-zero (Xiao et al., "Dynamical Isometry and a
  Mean Field Theory of CNNs", arXiv 1806.05393, Sec. 2.3), so each layer starts as a 1x1 map and
  a dilated fc6 does not yet mix distant image regions;
- **looks linear**: the centre tap is an orthogonal matrix ``M`` used in mirrored pairs,
  ``[[M, -M], [-M, M]]`` (Balduzzi et al., "The Shattered Gradients Problem", arXiv 1702.08591,
  Sec. 5), so that ``relu(h) - relu(-h) = h`` and the network starts as an orthogonal *linear*
  map of its input (up to the max pools). Colour reaches the classifier intact; the non-linearity
  and the spatial context are learnt during training.

BatchNorm keeps the pairs mirrored (``BN(-h) = -BN(h)`` with its initial scale 1 and shift 0).
The scheme needs a plain chain of convolutions.

:func:`zero_residual_` is the ResNet counterpart: the last BatchNorm of every residual block
starts with scale 0 (Goyal et al., "Accurate, Large Minibatch SGD", arXiv 1706.02677, Sec. 5.1;
torchvision's ``zero_init_residual``), so every block starts as the identity and the untrained
network is its stem followed by the shortcuts.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def _pair_matrix(out_channels: int, in_channels: int, first: bool) -> torch.Tensor:
    """The centre tap ``[out, in]``: ``[M; -M]`` on an image input, ``[[M, -M], [-M, M]]`` after a paired layer."""
    half_out = out_channels // 2
    half_in = in_channels if first else in_channels // 2
    m = torch.empty(half_out, half_in)
    nn.init.orthogonal_(m)
    if first:
        return torch.cat([m, -m], 0)
    return torch.cat([torch.cat([m, -m], 1), torch.cat([-m, m], 1)], 0)


@torch.no_grad()
def looks_linear_(model: nn.Module, skip: Iterable[nn.Parameter] = (), image_channels: int = 3) -> nn.Module:
    """Looks-linear delta-orthogonal initialisation of every ``Conv2d`` in ``model`` (in place; returns it).

    Args:
        model: a plain chain of convolutions (DeepLab v1 / v2 on VGG16). Convolutions are taken
            in ``model.modules()`` order; one whose input has ``image_channels`` channels is
            treated as reading the image (not yet paired), every other one as reading the
            mirrored pairs of the layer before (v2's four parallel fc6 all read the trunk).
        skip: parameters of layers to leave alone, e.g. ``model.classifier_parameters()``
            (the classifiers keep their N(0, 0.01) start).
        image_channels: channels of the network input (3, RGB).

    The orthogonal matrices come from torch's global generator (``torch.manual_seed`` first).

    Each weight becomes zero except its centre tap (the paired orthogonal matrix, scaled by the
    ReLU gain sqrt(2)); biases become zero. A layer with an odd number of output channels keeps
    its last channel at zero. An even kernel (DeepLab v1's 4x4 fc6) has no centre tap: the
    matrix is split equally over its central 2x2 taps, so the layer starts as the same linear
    map of the average of the four positions nearest its centre (still looks-linear).
    """
    skip_ids = {id(p) for p in skip}
    gain = nn.init.calculate_gain("relu")
    for module in model.modules():
        if not isinstance(module, nn.Conv2d) or id(module.weight) in skip_ids:
            continue
        out_channels, in_channels, kh, kw = module.weight.shape
        if module.groups != 1:
            raise ValueError("looks_linear_: grouped convolutions are not supported")
        first = in_channels == image_channels
        centre = _pair_matrix(out_channels, in_channels, first)
        module.weight.zero_()
        rows = [kh // 2] if kh % 2 else [kh // 2 - 1, kh // 2]       # the centre, or the central pair
        cols = [kw // 2] if kw % 2 else [kw // 2 - 1, kw // 2]
        for r in rows:
            for c in cols:
                module.weight[:centre.shape[0], :centre.shape[1], r, c] = gain * centre / (len(rows) * len(cols))
        if module.bias is not None:
            module.bias.zero_()
    return model


@torch.no_grad()
def zero_residual_(model: nn.Module) -> nn.Module:
    """Zero the scale of the last norm layer in every torchvision ``Bottleneck`` / ``BasicBlock`` (in place; returns it).

    Each residual block ``x + F(x)`` then starts as ``x``. Raises ``ValueError`` when ``model``
    has no such block (a plain network: use :func:`looks_linear_`).
    """
    blocks = [m for m in model.modules() if isinstance(m, (Bottleneck, BasicBlock))]
    if not blocks:
        raise ValueError("zero_residual_: the model has no residual blocks (torchvision Bottleneck/BasicBlock)")
    for block in blocks:
        last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        if not isinstance(last, (nn.BatchNorm2d, nn.GroupNorm)):
            raise ValueError(f"zero_residual_: expected a BatchNorm2d or GroupNorm as the block's last norm, "
                             f"got {type(last).__name__}")
        nn.init.zeros_(last.weight)
    return model
