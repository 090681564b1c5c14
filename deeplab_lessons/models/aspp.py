"""Atrous Spatial Pyramid Pooling: DeepLab v2's summed pyramid and DeepLab v3's module.

- :class:`ASPPv2Head` (v2, arXiv 1606.00915, Sec. 3.2 and Fig. 7): parallel
  ``fc6 (3x3, rate r) -> fc7 (1x1) -> fc8 (1x1, classes)`` branches on pool5, one per rate, their
  class scores **summed**. ASPP-L uses rates {6, 12, 18, 24}, ASPP-S {2, 4, 8, 12}
  (:data:`V2_RATES`).
- :class:`ASPP` (v3, arXiv 1706.05587, Sec. 3.3 and Fig. 5): a 1x1 conv, three 3x3 atrous
  convs and an image-level pooling branch, each conv + BatchNorm + ReLU, **concatenated** and
  projected by a 1x1 conv + BatchNorm + ReLU (+ dropout). It returns features, not classes: the
  DeepLab v3 model puts its own 1x1 classifier after it. Rates follow :func:`aspp_rates`.
- :func:`valid_tap_counts` / :func:`valid_tap_fraction` measure v3's observation (Sec. 3.3,
  Fig. 4) that a 3x3 atrous filter whose rate approaches the feature-map size degenerates to
  a 1x1 filter: most of its taps fall into the zero padding.

Classifier convention (shared by every model in :mod:`deeplab_lessons.models`): the freshly
initialised last layer(s) producing class scores are returned by the model's
``classifier_parameters()`` method (trained at 10x the learning rate, v1 Sec. 5) and everything
else by ``backbone_parameters()``. In :class:`ASPPv2Head` these are the four ``fc8`` convs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .separable import SeparableConv2d

#: DeepLab v2's two pyramids (arXiv 1606.00915, Sec. 4.1): atrous rates of the four fc6 branches.
V2_RATES: dict[str, tuple[int, int, int, int]] = {"L": (6, 12, 18, 24), "S": (2, 4, 8, 12)}


def _check_rates(atrous_rates: Sequence[int], name: str = "atrous_rates") -> tuple[int, ...]:
    rates = tuple(atrous_rates)
    if not rates:
        raise ValueError(f"{name} must list at least one rate, got {atrous_rates!r}")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"{name} must be positive integers (dilation of a 3x3 conv), got {atrous_rates!r}")
    return tuple(int(r) for r in rates)


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLab v3's ASPP rates for a backbone at ``output_stride`` (arXiv 1706.05587, Sec. 3.3).

    ``(6, 12, 18)`` at output stride 16; doubled to ``(12, 24, 36)`` at output stride 8, so each
    branch keeps its field of view in input pixels (rate x stride).
    """
    table = {16: (6, 12, 18), 8: (12, 24, 36)}
    if output_stride not in table:
        raise ValueError(f"output_stride must be 16 or 8 (the v3 paper's two settings), got {output_stride!r}")
    return table[output_stride]


class ASPPv2Head(nn.Module):
    """DeepLab v2's ASPP head: one fc6-fc7-fc8 branch per atrous rate, class scores summed.

    Branch ``i`` is ``fc6`` (3x3 conv, dilation = padding = ``rates[i]``, ``channels`` filters),
    ReLU, dropout, ``fc7`` (1x1, ``channels``), ReLU, dropout, ``fc8`` (1x1, ``num_classes``),
    exactly the LargeFOV head with another rate (arXiv 1606.00915, Sec. 3.2, Fig. 7). The
    branches share nothing; their logits are added ("fused by sum"). Spatial size is kept.

    Args:
        in_channels: channels of the trunk output (512 for VGG16's pool5 at width 1).
        num_classes: classes scored by each ``fc8``.
        rates: atrous rate of each branch's fc6 (:data:`V2_RATES`).
        channels: fc6/fc7 width per branch (1024 in the paper).
        dropout: dropout probability after fc6 and fc7 (0.5 in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = V2_RATES["L"],
                 channels: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.rates = _check_rates(rates, "rates")
        self.branches = nn.ModuleList()
        for rate in self.rates:
            self.branches.append(nn.Sequential(OrderedDict([
                ("fc6", nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate)),
                ("relu6", nn.ReLU(inplace=True)),
                ("drop6", nn.Dropout(dropout)),
                ("fc7", nn.Conv2d(channels, channels, 1)),
                ("relu7", nn.ReLU(inplace=True)),
                ("drop7", nn.Dropout(dropout)),
                ("fc8", nn.Conv2d(channels, num_classes, 1)),
            ])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of every branch's ``fc8`` (the new, 10x-learning-rate layers)."""
        for branch in self.branches:
            yield from branch.fc8.parameters()


def _conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, rate: int,
                    norm_layer: Callable[[int], nn.Module], separable: bool = False) -> nn.Sequential:
    if separable and kernel_size == 3:
        return SeparableConv2d(in_channels, out_channels, rate, norm_layer=norm_layer)
    padding = 0 if kernel_size == 1 else rate
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=rate, bias=False)),
        ("bn", norm_layer(out_channels)),
        ("relu", nn.ReLU(inplace=True)),
    ]))


class ImagePooling(nn.Module):
    """v3's image-level feature: global average pool, 1x1 conv + norm + ReLU, bilinear back to H x W.

    With the default BatchNorm, training needs a batch of at least 2 (a 1x1 map of batch 1 has
    one value per channel); pass ``norm_layer`` = a GroupNorm factory for batch-1 training.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(self.pool(x))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLab v3's Atrous Spatial Pyramid Pooling module (arXiv 1706.05587, Sec. 3.3, Fig. 5).

    Five parallel branches on the backbone features ``[N, in_channels, H, W]``:
    a 1x1 conv, one 3x3 conv per rate in ``atrous_rates`` (dilation = padding = rate), and
    :class:`ImagePooling`; each conv is followed by ``norm_layer`` and ReLU. The branch outputs
    are concatenated (``(2 + len(atrous_rates)) * out_channels`` channels) and projected by a
    1x1 conv + norm + ReLU + dropout.

    Args:
        in_channels: backbone channels (2048 for ResNet-50/101).
        out_channels: channels of every branch and of the output (256 in the paper).
        atrous_rates: rates of the 3x3 branches, :func:`aspp_rates` of the output stride.
        dropout: dropout probability after the projection (0.1 in the released code).
        norm_layer: factory ``channels -> module``; BatchNorm as in the paper, GroupNorm for
            tiny batches.
        separable: atrous *separable* 3x3 branches (:class:`.separable.SeparableConv2d`), as in
            DeepLab v3+ (arXiv 1802.02611, Sec. 3.2).
        image_pooling: keep the image-level branch (v3 Table 5's "Image Pooling" column; ``False``
            leaves four branches).

    Returns (forward):
        features ``[N, out_channels, H, W]`` (not class logits; add a 1x1 classifier after it).
    """

    def __init__(self, in_channels: int, out_channels: int = 256, atrous_rates: Sequence[int] = (6, 12, 18),
                 dropout: float = 0.1, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 separable: bool = False, image_pooling: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.atrous_rates = _check_rates(atrous_rates)
        branches = [_conv_norm_relu(in_channels, out_channels, 1, 1, norm_layer)]
        branches += [_conv_norm_relu(in_channels, out_channels, 3, r, norm_layer, separable) for r in self.atrous_rates]
        self.separable, self.image_pooling = separable, bool(image_pooling)
        if self.image_pooling:
            branches.append(ImagePooling(in_channels, out_channels, norm_layer))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False)),
            ("bn", norm_layer(out_channels)),
            ("relu", nn.ReLU(inplace=True)),
            ("dropout", nn.Dropout(dropout)),
        ]))

    def set_rates(self, atrous_rates: Sequence[int]) -> None:
        """Give the 3x3 branches other atrous rates (dilation = padding), keeping their weights."""
        rates = _check_rates(atrous_rates)
        if len(rates) != len(self.atrous_rates):
            raise ValueError(f"need {len(self.atrous_rates)} rates, got {atrous_rates!r}")
        for branch, rate in zip(self.branches[1:1 + len(rates)], rates):
            if isinstance(branch, SeparableConv2d):
                branch.set_geometry(1, rate)
            else:
                branch.conv.dilation, branch.conv.padding = (rate, rate), (rate, rate)
        self.atrous_rates = rates

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The branch outputs (five, four without image pooling), each ``[N, out_channels, H, W]``, before concatenation."""
        return [branch(x) for branch in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat(self.branch_outputs(x), dim=1))


def _axis_valid_counts(size: int, rate: int, kernel_size: int, padding: float | None = None) -> np.ndarray:
    """For each of ``size`` positions, how many of the ``kernel_size`` taps fall inside [0, size).

    The taps sit at ``position + k * rate - padding``; ``padding`` defaults to centring them
    (``rate * (kernel_size - 1) / 2``, "same" padding for an odd kernel)."""
    pad = rate * (kernel_size - 1) / 2 if padding is None else padding
    positions = np.arange(size)[:, None] + (np.arange(kernel_size) * rate - pad)[None, :]
    return ((positions >= 0) & (positions <= size - 1)).sum(axis=1)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return int(pair[0]), int(pair[1])


def valid_tap_counts(size: int | Sequence[int], rate: int, kernel_size: int = 3) -> dict[int, float]:
    """Fraction of output positions at which exactly ``n`` filter taps land on the feature map.

    A ``kernel_size x kernel_size`` filter with dilation ``rate`` and "same" zero padding slides
    over an ``H x W`` map; at each position a tap is *valid* when it reads a real feature, not
    padding. Returns ``{n: fraction of the H*W positions with n valid taps}`` (v3, arXiv
    1706.05587, Fig. 4 plots these for n = 1, 4, 9 on a 65 x 65 map). ``kernel_size`` must be odd.
    """
    H, W = _size_pair(size)
    _check_rates([rate], "rate")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive (a centred filter), got {kernel_size}")
    counts = np.outer(_axis_valid_counts(H, rate, kernel_size), _axis_valid_counts(W, rate, kernel_size))
    values, freq = np.unique(counts, return_counts=True)
    return {int(v): float(f) / counts.size for v, f in zip(values, freq)}


def off_centre_tap_share(size: int | Sequence[int], rate: int, kernel_size: int = 3,
                         padding: int | None = None) -> float:
    """Share of a dilated filter's non-centre taps that land on the map, averaged over output positions.

    The measure of whether a branch can learn at all at a given crop: a tap that never lands on the
    map (only on zero padding) never gets a gradient. ``padding`` defaults to "same"
    (``rate * (kernel_size - 1) // 2``). For an odd kernel the centre tap, always on the map, is left
    out (``kernel_size**2 - 1`` taps); for an even kernel, which has no centre, every tap counts.
    Hand counts: a 3x3 at rate 6 on a 16 x 16 map keeps 50.8 %, at rate 12 15.6 %, at rate 18 none;
    v2's ASPP-L rate 24 on 41 x 41 keeps 29.3 %, v3's rate 18 on 33 x 33 33.1 %.
    """
    H, W = _size_pair(size)
    _check_rates([rate], "rate")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    pad = rate * (kernel_size - 1) // 2 if padding is None else int(padding)
    counts = np.outer(_axis_valid_counts(H, rate, kernel_size, pad), _axis_valid_counts(W, rate, kernel_size, pad))
    if kernel_size % 2:
        return float(((counts - 1) / (kernel_size ** 2 - 1)).mean()) if kernel_size > 1 else 1.0
    return float((counts / kernel_size ** 2).mean())


def valid_tap_fraction(size: int | Sequence[int], rate: int, kernel_size: int = 3) -> float:
    """Mean fraction of a dilated filter's taps that read the feature map rather than padding.

    1.0 when every tap is always inside; it falls towards ``1 / kernel_size**2`` (only the centre
    tap: the filter acts as a 1x1 conv) once ``rate >= size`` (v3, arXiv 1706.05587, Sec. 3.3).
    """
    counts = valid_tap_counts(size, rate, kernel_size)
    return sum(n * f for n, f in counts.items()) / kernel_size**2
