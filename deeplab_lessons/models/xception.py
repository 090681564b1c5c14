"""The modified aligned Xception of DeepLab v3+ (arXiv 1802.02611, Sec. 3.2 and Fig. 4).

Xception-65, as v3+ modifies it from Chollet's Xception and MSRA's aligned Xception:

- more layers: 16 middle-flow blocks (Xception has 8);
- every max pooling replaced by a *stride-2 separable convolution*, so atrous separable
  convolution can take over wherever the output stride must stop at 16 or 8;
- BatchNorm and ReLU after every 3x3 depthwise convolution (:class:`.separable.SeparableConv2d`).

That last point is the paper's text (Sec. 3.2, "extra batch normalization and ReLU activation are added
after each 3x3 depthwise convolution"). The released TensorFlow code, whose ImageNet and VOC weights people
use (and timm's ``xception65`` after it), arranges the same weights differently: in every block but the last
each separable conv starts with a ReLU and has none after its two BatchNorms (a pre-activation unit; the
shortcut takes the block's input before that ReLU), and BatchNorm's epsilon is 1e-3.
``AlignedXception(layout="released")`` builds that arrangement, with the same parameters and names, so
released weights load (:func:`~deeplab_lessons.models.released.from_timm_xception65`); ``"paper"`` (the
default) builds the text's.

Layout (channels at ``width=1``; every block is three separable convs, the stride on the last):

- entry flow: conv 3x3/2 (32) + BN + ReLU, conv 3x3 (64) + BN + ReLU; blocks of (128, 128, 128)/2,
  (256, 256, 256)/2 and (728, 728, 728)/2, each with a 1x1/2 conv + BN shortcut;
- middle flow: 16 blocks of (728, 728, 728) with identity shortcuts;
- exit flow: a block of (728, 1024, 1024)/2 with a 1x1/2 conv + BN shortcut, then
  (1536, 1536, 2048) without shortcut.

The v3+ decoder's low-level features are the entry flow's second block after its *second*
separable conv (256 channels, stride 4). The output stride (16 or 8) is reached as in the
released code: once the running stride equals it, later strides become 1 and the atrous rate
is multiplied by the stride each would have applied, starting with the next block.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .separable import SeparableConv2d

#: Channels of every block at width 1, (flow, block, (c1, c2, c3), stride, shortcut).
XCEPTION65_BLOCKS: tuple[tuple[str, str, tuple[int, int, int], int, str], ...] = (
    ("entry", "block1", (128, 128, 128), 2, "conv"),
    ("entry", "block2", (256, 256, 256), 2, "conv"),
    ("entry", "block3", (728, 728, 728), 2, "conv"),
    *(("middle", f"block{i}", (728, 728, 728), 1, "identity") for i in range(1, 17)),
    ("exit", "block1", (728, 1024, 1024), 2, "conv"),
    ("exit", "block2", (1536, 1536, 2048), 1, "none"),
)

#: Output strides the backbone supports (v3+ trains at 16, evaluates at 16 or 8).
XCEPTION_OUTPUT_STRIDES = (8, 16)


def xception_channels(channels: int, width: float, name: str) -> int:
    """``round(channels * width)``, or a ``ValueError`` naming the layer when that is zero."""
    out = int(round(channels * width))
    if out < 1:
        raise ValueError(f"width={width} rounds {name} ({channels} channels at width 1) to 0 channels; "
                         f"use width >= {0.5 / channels:.3g}")
    return out


def block_plan(output_stride: int) -> list[tuple[int, int]]:
    """``(stride, atrous rate)`` of every block of :data:`XCEPTION65_BLOCKS` at ``output_stride``."""
    if output_stride not in XCEPTION_OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {XCEPTION_OUTPUT_STRIDES}, got {output_stride!r}")
    current, rate, plan = 2, 1, []                       # the stem's stride-2 conv comes first
    for *_, stride, _ in XCEPTION65_BLOCKS:
        if current == output_stride:
            plan.append((1, rate))
            rate *= stride
        else:
            plan.append((stride, rate))
            current *= stride
    return plan


#: The two arrangements of :class:`AlignedXception` (module docstring).
XCEPTION_LAYOUTS = ("paper", "released")


class XceptionBlock(nn.Module):
    """Three separable convs (the stride on the last) plus a shortcut: ``"conv"`` (1x1 + norm),
    ``"identity"`` or ``"none"``; ``preactivation``: the released code's separable convs."""

    def __init__(self, in_channels: int, channels: Sequence[int], stride: int, rate: int, shortcut: str,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, preactivation: bool = False) -> None:
        super().__init__()
        convs, previous = [], in_channels
        for i, out in enumerate(channels):
            convs.append((f"sep{i + 1}", SeparableConv2d(previous, out, rate, stride if i == len(channels) - 1 else 1,
                                                         norm_layer, preactivation)))
            previous = out
        self.convs = nn.Sequential(OrderedDict(convs))
        self.shortcut_kind = shortcut
        self.shortcut = None
        if shortcut == "conv":
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, previous, 1, stride=stride, bias=False)),
                ("bn", norm_layer(previous)),
            ]))
        elif shortcut == "identity" and (in_channels != previous or stride != 1):
            raise ValueError("an identity shortcut needs equal channels and stride 1")
        self.out_channels = previous

    def set_geometry(self, stride: int, rate: int) -> None:
        """Change the block's stride and atrous rate in place (weights unchanged)."""
        for i, conv in enumerate(self.convs):
            conv.set_geometry(stride if i == len(self.convs) - 1 else 1, rate)
        if self.shortcut is not None:
            self.shortcut.conv.stride = (stride, stride)

    def forward(self, x: torch.Tensor, inner: list | None = None) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = conv(out)
            if inner is not None:
                inner.append(out)
        if self.shortcut_kind == "conv":
            out = out + self.shortcut(x)
        elif self.shortcut_kind == "identity":
            out = out + x
        return out


class AlignedXception(nn.Module):
    """Xception-65 as modified by DeepLab v3+ (module docstring), at ``output_stride`` 16 or 8.

    ``forward(x)`` returns ``{"low_level": entry block2 after its second separable conv
    (stride 4), "out": exit-flow features (stride output_stride)}``, like
    :class:`~deeplab_lessons.models.resnet.DilatedResNet`, so the v3+ decoder takes either.
    ``width`` scales every channel count (``round(c * width)``; a layer rounded to zero channels
    is an error). ``layout``: ``"paper"`` or ``"released"`` (module docstring). Attributes ``name``,
    ``output_stride``, ``layout``, ``low_level_channels``, ``out_channels``.
    """

    name = "xception65"

    def __init__(self, output_stride: int = 16, width: float = 1.0,
                 norm_layer: Callable[[int], nn.Module] | None = None, layout: str = "paper") -> None:
        super().__init__()
        if layout not in XCEPTION_LAYOUTS:
            raise ValueError(f"layout must be one of {XCEPTION_LAYOUTS}, got {layout!r}")
        if norm_layer is None:        # the released code's BatchNorm epsilon is 1e-3 (PyTorch's default 1e-5)
            norm_layer = nn.BatchNorm2d if layout == "paper" else partial(nn.BatchNorm2d, eps=1e-3)
        plan = block_plan(output_stride)
        stem1, stem2 = xception_channels(32, width, "entry flow conv1"), xception_channels(64, width, "entry flow conv2")
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, stem1, 3, stride=2, padding=1, bias=False)),
            ("bn1", norm_layer(stem1)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(stem1, stem2, 3, padding=1, bias=False)),
            ("bn2", norm_layer(stem2)),
            ("relu2", nn.ReLU(inplace=True)),
        ]))
        flows: dict[str, list[tuple[str, XceptionBlock]]] = {"entry": [], "middle": [], "exit": []}
        previous = stem2
        for (flow, block, channels, _, shortcut), (stride, rate) in zip(XCEPTION65_BLOCKS, plan):
            scaled = [xception_channels(c, width, f"{flow} flow {block}") for c in channels]
            # the released code's last block (no shortcut) keeps the ReLUs after its norms
            unit = XceptionBlock(previous, scaled, stride, rate, shortcut, norm_layer,
                                 preactivation=layout == "released" and shortcut != "none")
            flows[flow].append((block, unit))
            previous = unit.out_channels
        self.entry_flow = nn.Sequential(OrderedDict(flows["entry"]))
        self.middle_flow = nn.Sequential(OrderedDict(flows["middle"]))
        self.exit_flow = nn.Sequential(OrderedDict(flows["exit"]))
        self.output_stride = output_stride
        self.width = width
        self.layout = layout
        self.low_level_channels = self.entry_flow.block2.convs.sep2.pointwise.out_channels
        self.out_channels = previous
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def blocks(self) -> list[XceptionBlock]:
        """Every block in forward order (entry, middle, exit)."""
        return [*self.entry_flow, *self.middle_flow, *self.exit_flow]

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan strides and rates for another output stride, in place, keeping every weight."""
        for block, (stride, rate) in zip(self.blocks(), block_plan(output_stride)):
            block.set_geometry(stride, rate)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        x = self.entry_flow.block1(x)
        inner: list[torch.Tensor] = []
        x = self.entry_flow.block2(x, inner)
        low_level = inner[1]
        x = self.exit_flow(self.middle_flow(self.entry_flow.block3(x)))
        return {"low_level": low_level, "out": x}
