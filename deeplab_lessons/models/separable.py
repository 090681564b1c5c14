"""Atrous separable convolution, DeepLab v3+'s title contribution (arXiv 1802.02611, Sec. 3.1, Fig. 3).

A 3x3 convolution from ``C_in`` to ``C_out`` channels is factored into a *depthwise* 3x3
convolution (one filter per input channel, ``groups = C_in``), here atrous with rate ``r``, and a
*pointwise* 1x1 convolution that mixes the channels. Following v3+ (Sec. 3.2, after MobileNet),
BatchNorm and ReLU follow each of the two. Multiply-adds per output pixel drop from
``9 C_in C_out`` to ``9 C_in + C_in C_out``; the paper reports 33% to 41% fewer multiply-adds
for ASPP and decoder built this way, at similar or better mIoU.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from torch import nn


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 (atrous ``rate``, ``stride``) -> norm -> ReLU -> pointwise 1x1 -> norm -> ReLU.

    With ``preactivation`` (the released TensorFlow Xception's separable convs, and timm's):
    ReLU -> depthwise -> norm -> pointwise -> norm. The weights have the same names either way.

    Padding equals the rate, so the spatial size is kept at stride 1 and halved (rounded up) at
    stride 2. Neither convolution has a bias (the norm layers carry one).
    """

    def __init__(self, in_channels: int, out_channels: int, rate: int = 1, stride: int = 1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, preactivation: bool = False) -> None:
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels} -> {out_channels}")
        depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=rate, dilation=rate,
                              groups=in_channels, bias=False)
        pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        if preactivation:     # the released Xception's order: ReLU first, no ReLU after the norms
            layers = [("relu", nn.ReLU()), ("depthwise", depthwise), ("depthwise_bn", norm_layer(in_channels)),
                      ("pointwise", pointwise), ("pointwise_bn", norm_layer(out_channels))]
        else:
            layers = [("depthwise", depthwise), ("depthwise_bn", norm_layer(in_channels)),
                      ("depthwise_relu", nn.ReLU(inplace=True)), ("pointwise", pointwise),
                      ("pointwise_bn", norm_layer(out_channels)), ("pointwise_relu", nn.ReLU(inplace=True))]
        super().__init__(OrderedDict(layers))

    def set_geometry(self, stride: int, rate: int) -> None:
        """Change the depthwise convolution's stride and atrous rate in place (weights unchanged)."""
        self.depthwise.stride = (stride, stride)
        self.depthwise.dilation = self.depthwise.padding = (rate, rate)
