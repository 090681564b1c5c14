"""DeepLab v1 and v2 on VGG16: the ImageNet classifier turned into a stride-8 dense labeller.

DeepLab v1 (arXiv 1412.7062, Sec. 3.1 and Table 2) starts from VGG16 made fully convolutional
(fc6/fc7 as convolutions) and brings its output stride from 32 down to 8: pool4 and pool5 get
stride 1, conv5_1..3 after them get dilation (atrous rate) 2, and fc6 becomes an atrous conv.
The released Caffe configs build this on two trunks (:func:`vgg16_features`):

- ``"deeplab"`` (the "DeepLab" config: v1's DeepLab, DeepLab-7x7, DeepLab-4x4 rows), a
  reconstruction (no layer definition of that config is quoted here): VGG16's 2x2 max pools for
  pool1-4 (pool4 at stride 1), pool5 3x3 stride 1, no ``pool5a``; it reproduces v1's reported
  39 x 39 scores for a 306-px input (Sec. 3.2, the input of its speed measurement);
- ``"largefov"`` (the "DeepLab-LargeFOV" config): every pool 3x3 with padding 1, which keeps
  output ``j`` of every layer centred on input pixel ``j * jump``, plus ``pool5a``, a 3x3
  stride-1 average pool after pool5; 321 -> 41 and 513 -> 65.

fc6 (:data:`FC6_VARIANTS`): "7x7" (rate 4, 4096 filters: the exact-dense fc6 of the stride-32
net), "4x4" (rate 4, 4096: fc6 decimated, the paper's plain "DeepLab"), or "largefov" (3x3,
rate 12, 1024); each defaults to the trunk it was released with. fc7 is 1x1 with as many
filters as fc6; dropout 0.5 after both; fc8 is a new 1x1 classifier.

DeepLab v2 (arXiv 1606.00915, Sec. 3.2) keeps the trunk and replaces fc6-fc8 by four parallel
branches at rates {6,12,18,24} (ASPP-L) or {2,4,8,12} (ASPP-S) whose scores are summed
(:class:`deeplab_lessons.models.aspp.ASPPv2Head`).

Conventions used by every model in :mod:`deeplab_lessons.models`:

- ``forward(x)``: ``x`` is an ImageNet-normalised float batch ``[N, 3, H, W]``
  (:func:`deeplab_lessons.models.common.normalize`); returns logits ``[N, classes, h, w]`` at
  ``model.output_stride`` (8 here).
- ``model.classifier_parameters()``: the new last layer(s) (v1: ``head.fc8``; v2: the four
  ``aspp.branches[i].fc8``), trained with 10x the learning rate (v1 Sec. 5);
  ``model.backbone_parameters()``: all the others.
- ``width`` scales every channel count (``round(c * width)``, at least 1) so the CPU lessons can
  train; ``width=1.0`` is the paper's network (LargeFOV: 20.5M parameters).

:func:`transplant_vgg16` copies torchvision's ImageNet VGG16 weights in, decimating fc6/fc7.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from deeplab_lessons.atrous import remove_strides
from deeplab_lessons.models.aspp import V2_RATES, ASPPv2Head
from deeplab_lessons.models.common import (check_num_classes, check_width, init_weights, scaled_channels,
                                           split_parameters)

#: VGG16's convolution blocks: (block number, number of 3x3 convs, output channels at width 1).
VGG16_BLOCKS: tuple[tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

#: fc6 of each DeepLab v1 variant (v1 Table 2): kernel size, atrous rate, filters (fc6 = fc7 width),
#: and the trunk it was released with (the "DeepLab" and "DeepLab-LargeFOV" Caffe configs).
FC6_VARIANTS: dict[str, dict] = {
    "7x7": {"kernel_size": 7, "rate": 4, "channels": 4096, "trunk": "deeplab"},
    "4x4": {"kernel_size": 4, "rate": 4, "channels": 4096, "trunk": "deeplab"},
    "largefov": {"kernel_size": 3, "rate": 12, "channels": 1024, "trunk": "largefov"},
}

#: Trunk variants accepted by :func:`vgg16_features`.
TRUNK_MODES = ("largefov", "deeplab", "stride32", "dense")

#: The two stride-8 trunks DeepLab v1 was released with (:func:`deeplab_v1`'s ``trunk``).
V1_TRUNKS = ("deeplab", "largefov")

#: Index of each conv layer in torchvision's ``vgg16().features`` (keys ``features.<i>.weight``).
TORCHVISION_CONV_INDEX: dict[str, int] = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}


def vgg16_features(width: float = 1.0, mode: str = "largefov") -> nn.Sequential:
    """VGG16's 13 convolutions (3x3, padding = dilation) and 5 pools, named ``conv1_1`` ... ``pool5``.

    Args:
        width: channel multiplier (1.0 = VGG16).
        mode: which trunk (output stride 8 unless said):

            - ``"largefov"``: the released DeepLab-LargeFOV trunk: every pool 3x3 with padding 1
              (stride 2 for pool1-3, 1 for pool4/pool5), conv5 at dilation 2, then ``pool5a``, a
              3x3 stride-1 average pool. Output ``ceil(H / 8)`` (321 -> 41, 513 -> 65); output
              ``j`` is centred on input pixel ``8 j``.
            - ``"deeplab"``: this package's reconstruction of the "DeepLab" config's trunk (v1's
              DeepLab, -7x7 and -4x4 rows; no layer definition of it is quoted here): VGG16's 2x2
              max pools (stride 2, padding 1, Caffe's ceil rounding) for pool1-3, pool4 2x2 stride
              1 (no padding), conv5 at dilation 2, pool5 3x3 stride 1 padding 1, no ``pool5a``. A
              306-px input (v1 Sec. 3.2's speed measurement) gives 39 x 39 scores as v1 reports; the
              closed-form field of fc6 7x7 rate 4 on it is 404 px, of 4x4 rate 4 308 px, the
              numbers of v1 Sec. 3.2. Output ``j`` is centred on input pixel ``8 j + 1/2``.
            - ``"stride32"``: every pool 3x3 / padding 1 at stride 2 (output stride 32);
            - ``"dense"``: the *exact* dense (à trous) version of ``"stride32"``: pool4 and pool5
              stride 1, everything after pool4 dilated by 2 (pool5 too), no ``pool5a``; its
              output sampled every 4th position equals ``"stride32"``'s
              (:func:`deeplab_lessons.atrous.remove_strides` applied to pool4 and pool5).

    All share parameter names and shapes, so one ``state_dict`` loads into any of them.
    """
    width = check_width(width)
    if mode not in TRUNK_MODES:
        raise ValueError(f"mode must be one of {TRUNK_MODES}, got {mode!r}")
    stride8 = mode in V1_TRUNKS
    layers: list[tuple[str, nn.Module]] = []
    in_ch = 3
    for block, n_convs, channels in VGG16_BLOCKS:
        out_ch = scaled_channels(channels, width)
        # dilation of the block's convs: 2 after pool4 lost its stride
        rate = 2 if (block == 5 and stride8) else 1
        for i in range(1, n_convs + 1):
            layers.append((f"conv{block}_{i}", nn.Conv2d(in_ch, out_ch, 3, padding=rate, dilation=rate)))
            layers.append((f"relu{block}_{i}", nn.ReLU(inplace=True)))
            in_ch = out_ch
        stride = 2 if (block <= 3 or not stride8) else 1
        if mode == "deeplab" and block <= 4:
            pool = nn.MaxPool2d(2, stride=stride, padding=1 if block <= 3 else 0, ceil_mode=True)
        else:
            pool = nn.MaxPool2d(3, stride=stride, padding=1)
        layers.append((f"pool{block}", pool))
    if mode == "largefov":
        layers.append(("pool5a", nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)))
    features = nn.Sequential(OrderedDict(layers))
    if mode == "dense":  # lesson 02's surgery: pool4, pool5 stride 1, every later layer dilated
        features = remove_strides(features, ["pool4", "pool5"], input_size=64, copy=False)
    return features


class DeepLabV1(nn.Sequential):
    """DeepLab v1: ``features`` (VGG16 trunk at stride 8) then ``head`` (fc6, fc7, fc8).

    A plain chain (``nn.Sequential``), so lesson 01's receptive-field tool walks it directly.
    Built by :func:`deeplab_v1`; see the module docstring for the conventions.
    """

    output_stride = 8

    def __init__(self, num_classes: int, fov: str, width: float, fc6_rate: int | None = None,
                 trunk: str | None = None, fc6_channels: int | None = None) -> None:
        spec = FC6_VARIANTS[fov]
        trunk = spec["trunk"] if trunk is None else trunk
        rate = spec["rate"] if fc6_rate is None else fc6_rate
        k = spec["kernel_size"]
        channels = scaled_channels(spec["channels"] if fc6_channels is None else fc6_channels, width)
        trunk_out = scaled_channels(512, width)
        head = nn.Sequential(OrderedDict([
            # "same" padding: the dilated kernel spans (k-1)*rate+1 pixels; for even k the output
            # is centred between taps, on the same grid ((k-1)*rate is even for k=4, rate 4)
            ("fc6", nn.Conv2d(trunk_out, channels, k, padding=(k - 1) * rate // 2, dilation=rate)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(0.5)),
            ("fc7", nn.Conv2d(channels, channels, 1)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(0.5)),
            ("fc8", nn.Conv2d(channels, num_classes, 1)),
        ]))
        super().__init__(OrderedDict([("features", vgg16_features(width, trunk)), ("head", head)]))
        self.num_classes, self.fov, self.width, self.trunk = num_classes, fov, width, trunk
        self.fc6_kernel_size, self.fc6_rate = k, rate
        init_weights(self, [head.fc8])

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """``head.fc8``'s weight and bias (the new layer, 10x learning rate)."""
        yield from self.head.fc8.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except ``head.fc8``'s (ImageNet-initialisable, base learning rate)."""
        yield from split_parameters(self, list(self.classifier_parameters()), False)


def deeplab_v1(num_classes: int = 21, fov: str = "largefov", width: float = 1.0,
               fc6_rate: int | None = None, trunk: str | None = None, fc6_channels: int | None = None) -> DeepLabV1:
    """DeepLab v1 on VGG16 (arXiv 1412.7062, Sec. 3.1, Table 2): stride-8 logits.

    Args:
        num_classes: output classes (21 for PASCAL VOC: background + 20).
        fov: fc6 variant: ``"largefov"`` (3x3, rate 12, 1024 filters; 20.5M parameters),
            ``"7x7"`` (rate 4, 4096; 134.3M), ``"4x4"`` (rate 4, 4096; 65.1M).
        width: channel multiplier; 1.0 is the paper's network, < 1 for CPU lessons (no ImageNet
            weights then).
        fc6_rate: override of fc6's atrous rate (e.g. 8 for the paper's "DeepLab-CRF-4x4" row).
        trunk: ``"deeplab"`` (2x2 pools, no ``pool5a``) or ``"largefov"`` (3x3 pools + ``pool5a``);
            ``None``: the trunk the variant was released with (7x7 and 4x4: ``"deeplab"``,
            largefov: ``"largefov"``). See :func:`vgg16_features`.
        fc6_channels: override of fc6's (and fc7's) filter count at width 1 (4096 for 7x7 and 4x4,
            1024 for LargeFOV); the field-of-view experiment gives every variant LargeFOV's 1024 so
            that only the kernel and the rate differ.

    Returns:
        :class:`DeepLabV1`; ``forward`` maps a normalised ``[N, 3, H, W]`` batch to logits at
        stride 8: ``ceil(H/8) x ceil(W/8)`` on the LargeFOV trunk, one fewer for ``H = 8k + 1``
        on the DeepLab trunk (321 -> 40; its configs crop 306 -> 39).
    """
    check_num_classes(num_classes)
    width = check_width(width)
    if fov not in FC6_VARIANTS:
        raise ValueError(f"fov must be one of {tuple(FC6_VARIANTS)}, got {fov!r}")
    if fc6_rate is not None and (isinstance(fc6_rate, bool) or not isinstance(fc6_rate, int) or fc6_rate < 1):
        raise ValueError(f"fc6_rate must be a positive int or None, got {fc6_rate!r}")
    if trunk is not None and trunk not in V1_TRUNKS:
        raise ValueError(f"trunk must be one of {V1_TRUNKS} or None (the variant's released trunk), got {trunk!r}")
    if fc6_channels is not None and (isinstance(fc6_channels, bool) or not isinstance(fc6_channels, int)
                                     or fc6_channels < 1):
        raise ValueError(f"fc6_channels must be a positive int or None, got {fc6_channels!r}")
    return DeepLabV1(num_classes, fov, width, fc6_rate, trunk, fc6_channels)


class SmallFieldVGG(nn.Sequential):
    """A control with a small field of view: VGG16 blocks 1-3 (3x3 pools, stride 8) and a 1x1 classifier.

    It sees 51 x 51 input pixels per output (the closed form of :mod:`deeplab_lessons.receptive_field`),
    against 435 for LargeFOV: it separates objects from background as well as any network of
    its depth, but cannot read a cue more than about 25 px away. Not a model of the papers; the
    field-of-view experiments train it beside v1's variants.
    """

    output_stride = 8

    def __init__(self, num_classes: int, width: float) -> None:
        trunk = vgg16_features(width, "largefov")
        keep = list(trunk.named_children())[: [n for n, _ in trunk.named_children()].index("pool3") + 1]
        super().__init__(OrderedDict(keep + [("fc8", nn.Conv2d(scaled_channels(256, width), num_classes, 1))]))
        init_weights(self, [self.fc8])

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """``fc8``'s weight and bias (the classifier, 10x learning rate)."""
        yield from self.fc8.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except ``fc8``'s."""
        yield from split_parameters(self, list(self.classifier_parameters()), False)


def small_field_vgg(num_classes: int = 21, width: float = 1.0) -> SmallFieldVGG:
    """The small-field control (:class:`SmallFieldVGG`): conv1_1 ... pool3 of VGG16, then a 1x1 classifier.

    Output stride 8 (``ceil(H / 8)``), field of view 51 px; same ``width`` convention as v1.
    """
    check_num_classes(num_classes)
    return SmallFieldVGG(num_classes, check_width(width))


class DeepLabV2(nn.Module):
    """DeepLab v2 on VGG16: ``features`` (the v1 trunk) then ``aspp`` (:class:`ASPPv2Head`)."""

    output_stride = 8

    def __init__(self, num_classes: int, aspp: str, width: float) -> None:
        super().__init__()
        self.num_classes, self.aspp_variant, self.width = num_classes, aspp, width
        self.features = vgg16_features(width, "largefov")
        self.aspp = ASPPv2Head(scaled_channels(512, width), num_classes, V2_RATES[aspp],
                               channels=scaled_channels(1024, width))
        init_weights(self, [b.fc8 for b in self.aspp.branches])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.features(x))

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The four branches' ``fc8`` weights and biases (10x learning rate)."""
        yield from self.aspp.classifier_parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except the ``fc8``'s."""
        yield from split_parameters(self, list(self.classifier_parameters()), False)


def deeplab_v2(num_classes: int = 21, aspp: str = "L", width: float = 1.0) -> DeepLabV2:
    """DeepLab v2 on VGG16 (arXiv 1606.00915, Sec. 3.2, Fig. 7): v1 trunk + ASPP, stride 8.

    Args:
        num_classes: output classes.
        aspp: ``"L"`` (rates 6, 12, 18, 24) or ``"S"`` (2, 4, 8, 12); four 3x3 fc6 branches with
            1024 filters each (times ``width``), fc7 1x1, fc8 1x1, logits summed.
        width: channel multiplier (1.0 = the paper's network).

    Returns:
        :class:`DeepLabV2` producing logits ``[N, num_classes, ceil(H/8), ceil(W/8)]``.
    """
    check_num_classes(num_classes)
    width = check_width(width)
    if aspp not in V2_RATES:
        raise ValueError(f"aspp must be one of {tuple(V2_RATES)} (ASPP-L / ASPP-S), got {aspp!r}")
    return DeepLabV2(num_classes, aspp, width)


def decimation_indices(kernel_size: int, channels: int, source_kernel: int = 7,
                       source_channels: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Which fc6 taps and filters the weight surgery keeps (v1 Sec. 3.2, "simple decimation").

    Returns ``(taps, filters)``: ``taps`` are the ``kernel_size`` row (= column) indices kept out of
    VGG16's 7x7 fc6 kernel, evenly spaced and including both ends (3 -> [0, 3, 6], 4 -> [0, 2, 4, 6]),
    so the decimated kernel spans the same 7 stride-32 cells (with rate 12 = 3 x 4 at stride 8,
    LargeFOV's fc6 sees what the 7x7 rate-4 one sees); ``filters`` keeps every
    ``source_channels // channels``-th filter (4096 -> 1024: 0, 4, 8, ...), also used for fc7's
    rows and columns. v1 says only that LargeFOV reduces fc6 from 4096 to 1024 filters; which
    1024 is this package's choice (evenly spaced, like the taps).
    """
    if kernel_size < 1 or kernel_size > source_kernel or (source_kernel - 1) % max(kernel_size - 1, 1):
        raise ValueError(f"kernel_size {kernel_size} cannot be decimated evenly from {source_kernel}x{source_kernel} "
                         f"(use 7, 4, 3, 2 or 1)")
    if channels < 1 or source_channels % channels:
        raise ValueError(f"channels {channels} must divide {source_channels} for an even decimation")
    step = (source_kernel - 1) // (kernel_size - 1) if kernel_size > 1 else 0
    taps = torch.arange(kernel_size) * step + (source_kernel // 2 if kernel_size == 1 else 0)
    filters = torch.arange(0, source_channels, source_channels // channels)
    return taps, filters


def _expected_vgg16_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for block, n_convs, channels in VGG16_BLOCKS:
        for i in range(1, n_convs + 1):
            idx = TORCHVISION_CONV_INDEX[f"conv{block}_{i}"]
            shapes[f"features.{idx}.weight"] = (channels, in_ch, 3, 3)
            shapes[f"features.{idx}.bias"] = (channels,)
            in_ch = channels
    shapes["classifier.0.weight"] = (4096, 512 * 7 * 7)
    shapes["classifier.0.bias"] = (4096,)
    shapes["classifier.3.weight"] = (4096, 4096)
    shapes["classifier.3.bias"] = (4096,)
    return shapes


def check_vgg16_state_dict(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` naming every missing key or wrong shape if ``state_dict`` is not
    torchvision's ``vgg16()`` (no batch norm) ``state_dict``."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"vgg16_state_dict must be a mapping of parameter names to tensors, "
                         f"got {type(state_dict).__name__}")
    problems = []
    for key, shape in _expected_vgg16_shapes().items():
        if key not in state_dict:
            problems.append(f"missing {key}")
        elif tuple(state_dict[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(state_dict[key].shape)}, expected {shape}")
    if problems:
        hint = (" (this looks like vgg16_bn's: use torchvision.models.vgg16, without batch norm)"
                if any(k.endswith("running_mean") for k in state_dict) else "")
        raise ValueError("vgg16_state_dict is not torchvision's VGG16 state_dict" + hint + ": "
                         + "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else ""))


@torch.no_grad()
def transplant_vgg16(model: nn.Module, vgg16_state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy torchvision VGG16 ImageNet weights into a width-1 DeepLab v1/v2 model, in place.

    - conv1_1 ... conv5_3: copied unchanged (the trunk's strides/dilations change how they are
      applied, not their weights);
    - fc6 (``classifier.0``, 4096 x 25088 = 4096 x 512 x 7 x 7 reshaped): decimated to the model's
      fc6 kernel and filter count by :func:`decimation_indices` (LargeFOV keeps taps 0, 3, 6 and
      every 4th filter; "7x7" keeps all); v2 puts the same decimated fc6 into each branch;
    - fc7 (``classifier.3``, 4096 x 4096): rows and columns restricted to the kept fc6 filters;
    - fc8: left as initialised (new classes). No rescaling, as in the paper; fine-tuning adapts.

    Args:
        model: from :func:`deeplab_v1` or :func:`deeplab_v2` with ``width=1.0``.
        vgg16_state_dict: ``torchvision.models.vgg16(weights=VGG16_Weights.IMAGENET1K_V1).state_dict()``
            or :func:`imagenet_vgg16_state_dict` (any state_dict with the same keys and shapes).

    Returns:
        ``model`` itself, for chaining.
    """
    if not isinstance(model, (DeepLabV1, DeepLabV2)):
        raise TypeError(f"model must come from deeplab_v1() or deeplab_v2(), got {type(model).__name__}")
    if model.width != 1.0:
        raise ValueError(f"ImageNet VGG16 weights fit only width=1.0 models; this one has width={model.width} "
                         f"(conv1_1 has {model.features.conv1_1.out_channels} filters, not 64): "
                         "build it with width=1.0, or train the narrow model from random initialisation")
    check_vgg16_state_dict(vgg16_state_dict)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in vgg16_state_dict.items()}
    for name, idx in TORCHVISION_CONV_INDEX.items():
        conv = getattr(model.features, name)
        conv.weight.copy_(sd[f"features.{idx}.weight"])
        conv.bias.copy_(sd[f"features.{idx}.bias"])
    fc6_full = sd["classifier.0.weight"].view(4096, 512, 7, 7)
    heads = [model.head] if isinstance(model, DeepLabV1) else list(model.aspp.branches)
    for head in heads:
        taps, filters = decimation_indices(head.fc6.kernel_size[0], head.fc6.out_channels)
        head.fc6.weight.copy_(fc6_full[filters][:, :, taps][:, :, :, taps])
        head.fc6.bias.copy_(sd["classifier.0.bias"][filters])
        head.fc7.weight.copy_(sd["classifier.3.weight"][filters][:, filters].view(len(filters), len(filters), 1, 1))
        head.fc7.bias.copy_(sd["classifier.3.bias"][filters])
    return model


def home_relative(path: Path | str) -> str:
    """``path`` shown as ``~/...`` when it lies under the home folder (messages, notebook outputs)."""
    path, home = Path(path), Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def hub_checkpoint_path(weights) -> Path:
    """Where torchvision caches the file of ``weights`` (a ``torchvision.models.*_Weights`` member):
    ``$TORCH_HOME/hub/checkpoints/<file name of its URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def imagenet_vgg16_state_dict(download: bool = False) -> dict[str, torch.Tensor]:
    """torchvision's ``VGG16_Weights.IMAGENET1K_V1`` state_dict, from the torch hub cache.

    Looks in ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``) for the file torchvision
    downloads (``vgg16-397923af.pth``, 528 MB) and loads it with ``weights_only=True``. With
    ``download=True`` it is fetched there first when missing (needs internet). Raises
    ``FileNotFoundError`` saying so when the file is absent and ``download`` is False.
    """
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    path = hub_checkpoint_path(weights)
    if not path.is_file():
        if not download:
            raise FileNotFoundError(f"ImageNet VGG16 weights not found at {home_relative(path)}: pass download=True on a machine "
                                    "with internet (528 MB), or train from random initialisation")
        return weights.get_state_dict(progress=True)
    return torch.load(path, map_location="cpu", weights_only=True)
