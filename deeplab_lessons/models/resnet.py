"""DeepLab v3 and v3+ on a dilated ResNet.

- DeepLab v3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
  arXiv 1706.05587): a ResNet whose last strides are replaced by atrous (dilated) convolution so
  the features stop at an *output stride* of 16 or 8 (Sec. 3.2), *multi-grid* unit rates inside
  the last block (Sec. 3.2, "Multi-grid Method"), and the v3 ASPP head with image-level pooling
  (Sec. 3.3, :class:`deeplab_lessons.models.aspp.ASPP`). Logits come out at the output stride.
- DeepLab v3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
  Image Segmentation", arXiv 1802.02611, Sec. 3.1 and Fig. 2): the v3 encoder plus a decoder
  that reduces stride-4 low-level features to 48 channels with a 1x1 conv, concatenates them
  with the bilinearly upsampled ASPP features and refines with two 3x3 convs. Logits come out
  at stride 4.

The backbone mirrors torchvision's ResNet module for module (``conv1``, ``bn1``, ``maxpool``,
``layer1`` ... ``layer4``, torchvision's own ``Bottleneck``), so at ``width=1.0`` a torchvision
ImageNet ``state_dict`` loads into it unchanged (:func:`transplant_resnet`). Two things are
added that torchvision's builder does not offer:

- ``width``: a channel multiplier for every convolution (stem, bottlenecks, ASPP, decoder), so
  the same architecture trains in a minute on a CPU (``width=0.25``). ``width=1.0`` is the papers'.
- ``multi_grid``: per-unit rates in ``layer4`` (the paper's block4). Unit ``i`` of ``layer4``
  gets dilation ``multi_grid[i] * block_dilation`` (the paper's example: output stride 16,
  multi-grid (1, 2, 4) -> rates (2, 4, 8)). ``multi_grid=None`` keeps torchvision's
  ``replace_stride_with_dilation`` rule instead: the first unit of a dilated layer keeps the
  previous dilation (it holds the 3x3 conv whose stride was removed), later units get the new one.

Where this differs from ``torchvision.models.segmentation.deeplabv3_resnet50`` (checked in
``tests/test_models_resnet.py``): torchvision always runs at output stride 8 with ASPP rates
(12, 24, 36) and no multi-grid, adds a 3x3 conv + BN + ReLU between ASPP and the classifier,
uses dropout 0.5 in the ASPP projection, has an auxiliary FCN head on ``layer3``, and upsamples
the logits to the input size inside ``forward``. Here the ASPP rates follow the output stride
((6, 12, 18) at 16, doubled at 8, as in the paper), the classifier is the paper's single 1x1
conv after the ASPP projection, and ``forward`` returns logits at the output stride (the
training loss and evaluation upsample them, as for v1/v2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1, conv3x3

from .aspp import ASPP, aspp_rates
from .common import check_num_classes, check_width, init_weights, scaled_channels, split_parameters
from .separable import SeparableConv2d
from .xception import AlignedXception

#: Units per layer (layer1..layer4) of the ResNets the papers use (He et al., arXiv 1512.03385, Table 1).
RESNET_UNITS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}

#: Backbones of :func:`deeplab_v3` / :func:`deeplab_v3plus`.
V3_BACKBONES = ("resnet50", "resnet101", "xception65")

#: Which of layer2/3/4 trade their stride for dilation, per output stride.
_DILATED_LAYERS = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class DilatedResNet(nn.Module):
    """ResNet-50/101 trunk at output stride 32, 16 or 8 (DeepLab v3 Sec. 3.2), optionally width-scaled.

    ``forward(x)`` returns ``{"low_level": layer1 features (stride 4), "out": layer4 features
    (stride output_stride)}``; ``x`` is an ImageNet-normalised float batch ``[N, 3, H, W]``.
    ``name`` is ``"resnet50"`` or ``"resnet101"`` (the unit counts of :data:`RESNET_UNITS`).
    Attributes ``name``, ``output_stride``, ``low_level_channels`` and ``out_channels`` describe it.
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16,
                 multi_grid: Sequence[int] | None = (1, 2, 4), width: float = 1.0,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if name not in RESNET_UNITS:
            raise ValueError(f"backbone must be one of {sorted(RESNET_UNITS)}, got {name!r}")
        if output_stride not in _DILATED_LAYERS:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        check_width(width)
        units = RESNET_UNITS[name]
        if multi_grid is not None:
            multi_grid = tuple(int(r) for r in multi_grid)
            if len(multi_grid) != units[3] or any(r < 1 for r in multi_grid):
                raise ValueError(f"multi_grid must give one positive rate per unit of layer4 "
                                 f"({units[3]} units), got {multi_grid!r}")
        self.name = name
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.width = width
        self._norm_layer = norm_layer
        self.inplanes = scaled_channels(64, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        plan = layer_plan(output_stride, multi_grid, units)
        self.layer1 = self._make_layer(scaled_channels(64, width), 1, [1] * units[0])
        self.low_level_channels = self.inplanes
        self.layer2 = self._make_layer(scaled_channels(128, width), *plan[0])
        self.layer3 = self._make_layer(scaled_channels(256, width), *plan[1])
        self.layer4 = self._make_layer(scaled_channels(512, width), *plan[2])
        self.out_channels = self.inplanes
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, stride: int, rates: Sequence[int]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                                       self._norm_layer(planes * Bottleneck.expansion))
        layers = []
        for i, rate in enumerate(rates):
            layers.append(Bottleneck(self.inplanes, planes, stride if i == 0 else 1,
                                     downsample if i == 0 else None, dilation=rate,
                                     norm_layer=self._norm_layer))
            self.inplanes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def set_output_stride(self, output_stride: int) -> None:
        """Re-plan layer2-4 for another output stride, in place, keeping every weight.

        Only strides and dilations change (a 3x3 conv's weights do not depend on them), which
        is how v3 trains at output stride 16 and evaluates at 8 (Sec. 4.3, Table 6).
        """
        if output_stride not in _DILATED_LAYERS:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        plan = layer_plan(output_stride, self.multi_grid, RESNET_UNITS[self.name])
        for layer, (stride, rates) in zip((self.layer2, self.layer3, self.layer4), plan):
            for i, (block, rate) in enumerate(zip(layer, rates)):
                s = stride if i == 0 else 1
                block.stride = s
                block.conv2.stride, block.conv2.dilation, block.conv2.padding = (s, s), (rate, rate), (rate, rate)
                if block.downsample is not None:
                    block.downsample[0].stride = (s, s)
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        out = self.layer4(self.layer3(self.layer2(low_level)))
        return {"low_level": low_level, "out": out}


#: The heads :class:`DeepLabV3` can have between its ASPP and its classifier.
V3_HEADS = ("paper", "torchvision")


def layer_plan(output_stride: int, multi_grid: Sequence[int] | None,
               units: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``(stride, unit dilations)`` of layer2, layer3 and layer4 at ``output_stride``.

    A layer that trades its stride for dilation runs at stride 1 and multiplies the running
    dilation by 2; its first unit keeps the previous dilation (it holds the 3x3 conv whose stride
    was removed), later units get the new one (torchvision's ``replace_stride_with_dilation``).
    With ``multi_grid``, layer4's units get ``multi_grid[i] x`` its dilation instead (v3 Sec. 3.2).
    """
    dilation, plan = 1, []
    for index, (blocks, dilate) in enumerate(zip(units[1:], _DILATED_LAYERS[output_stride])):
        previous, stride = dilation, 2
        if dilate:
            dilation, stride = dilation * 2, 1
        if index == 2 and multi_grid is not None:
            rates = [dilation * r for r in multi_grid]
        else:
            rates = [previous] + [dilation] * (blocks - 1)
        plan.append((stride, rates))
    return plan


def unit_dilations(backbone: DilatedResNet) -> dict[str, list[int]]:
    """Dilation of each unit's 3x3 conv, per layer: ``{"layer1": [1, 1, 1], ..., "layer4": [2, 4, 8]}``."""
    return {name: [block.conv2.dilation[0] for block in getattr(backbone, name)]
            for name in ("layer1", "layer2", "layer3", "layer4")}


class DeepLabV3PlusDecoder(nn.Module):
    """The DeepLab v3+ decoder (arXiv 1802.02611, Sec. 3.1, Fig. 2).

    Low-level features (stride 4) -> 1x1 conv to ``reduced_channels`` (48 in the paper, few so
    they do not outweigh the encoder's) + BN + ReLU; the encoder features are bilinearly
    upsampled to the same size and concatenated; two 3x3 convs with ``channels`` (256) outputs,
    each + BN + ReLU, refine the result (``separable=True``: two atrous separable convs, v3+
    Sec. 3.2). Returns features at stride 4, ``channels`` deep.
    """

    def __init__(self, low_level_channels: int, encoder_channels: int, reduced_channels: int = 48,
                 channels: int = 256, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
                 separable: bool = False) -> None:
        super().__init__()
        self.reduce = nn.Sequential(conv1x1(low_level_channels, reduced_channels),
                                    norm_layer(reduced_channels), nn.ReLU(inplace=True))
        if separable:   # v3+ Sec. 3.2: atrous separable convolution in the decoder too
            self.fuse = nn.Sequential(SeparableConv2d(encoder_channels + reduced_channels, channels, norm_layer=norm_layer),
                                      SeparableConv2d(channels, channels, norm_layer=norm_layer))
        else:
            self.fuse = nn.Sequential(
                conv3x3(encoder_channels + reduced_channels, channels), norm_layer(channels), nn.ReLU(inplace=True),
                conv3x3(channels, channels), norm_layer(channels), nn.ReLU(inplace=True),
            )
        self.out_channels = channels
        self.separable = separable

    def forward(self, encoder_features: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(encoder_features, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, self.reduce(low_level)], dim=1))


class DeepLabV3(nn.Module):
    """DeepLab v3: dilated ResNet -> ASPP with image pooling -> 1x1 classifier (arXiv 1706.05587, Sec. 3.3).

    ``forward(x)`` maps an ImageNet-normalised batch ``[N, 3, H, W]`` to logits
    ``[N, num_classes, ~H/output_stride, ~W/output_stride]``.
    """

    def __init__(self, backbone: nn.Module, aspp: ASPP, aspp_channels: int, num_classes: int,
                 head: str = "paper") -> None:
        super().__init__()
        if head not in V3_HEADS:
            raise ValueError(f"head must be one of {V3_HEADS}, got {head!r}")
        self.backbone = backbone
        self.aspp = aspp
        # torchvision's DeepLabHead puts a 3x3 conv + BN + ReLU between ASPP and the classifier; the paper does not
        self.head = nn.Identity() if head == "paper" else nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(aspp_channels)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
        self.classifier = nn.Conv2d(aspp_channels, num_classes, kernel_size=1)
        self.output_stride = backbone.output_stride
        self.num_classes = num_classes
        init_weights(self.aspp, [])
        init_weights(self.head, [])
        init_weights(self.classifier, [self.classifier])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.aspp(self.backbone(x)["out"])))

    def set_output_stride(self, output_stride: int) -> None:
        """Run the encoder at another output stride (8 or 16), in place, keeping every weight.

        The backbone trades strides for dilation (:meth:`DilatedResNet.set_output_stride`) and the
        ASPP rates follow (:func:`aspp_rates`: (6, 12, 18) at 16, (12, 24, 36) at 8): v3 trains at
        output stride 16 and evaluates at 8 (Table 6: 77.21 -> 78.51).
        """
        rates = aspp_rates(output_stride)
        self.backbone.set_output_stride(output_stride)
        self.aspp.set_rates(rates)
        self.output_stride = self.backbone.output_stride

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """The 1x1 ``classifier``'s weight and bias (the class-scoring layer, 10x learning rate)."""
        yield from self.classifier.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter: ResNet trunk, ASPP (and v3+ decoder), at the base learning rate."""
        yield from split_parameters(self, list(self.classifier_parameters()), False)


class DeepLabV3Plus(DeepLabV3):
    """DeepLab v3+: the v3 encoder + :class:`DeepLabV3PlusDecoder` (arXiv 1802.02611, Fig. 2).

    ``forward(x)`` returns logits at stride 4: ``[N, num_classes, ~H/4, ~W/4]``.
    """

    def __init__(self, backbone: nn.Module, aspp: ASPP, aspp_channels: int, num_classes: int,
                 decoder: DeepLabV3PlusDecoder) -> None:
        super().__init__(backbone, aspp, aspp_channels, num_classes)
        self.decoder = decoder
        self.classifier = nn.Conv2d(decoder.out_channels, num_classes, kernel_size=1)
        self.output_stride = 4
        init_weights(self.decoder, [])
        init_weights(self.classifier, [self.classifier])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return self.classifier(self.decoder(self.aspp(features["out"]), features["low_level"]))

    def set_output_stride(self, output_stride: int) -> None:
        """Run the encoder at another output stride; the logits stay at the decoder's stride 4."""
        super().set_output_stride(output_stride)
        self.output_stride = 4


def transplant_resnet(model: nn.Module, resnet_state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Copy a torchvision ResNet ``state_dict`` (ImageNet weights) into ``model``'s backbone.

    ``model`` is a :class:`DeepLabV3`/:class:`DeepLabV3Plus` (or a bare :class:`DilatedResNet`)
    at ``width=1.0`` whose depth matches the weights. The ImageNet ``fc.*`` classifier is
    dropped; every other tensor must match by name and shape (dilation changes no shape, which
    is why the "algorithme a trous" can reuse ImageNet weights, v3 Sec. 3.2). Returns ``model``.
    """
    backbone = model.backbone if hasattr(model, "backbone") else model
    if not isinstance(backbone, DilatedResNet):
        raise TypeError(f"model must be a DeepLabV3/DeepLabV3Plus or DilatedResNet, got {type(model).__name__}")
    weights = {k: v for k, v in resnet_state_dict.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(f"resnet_state_dict does not fit this backbone ({len(own)} tensors): "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}; is it the same depth "
                         f"(resnet50 vs resnet101)?")
    for key, value in weights.items():
        if own[key].shape != value.shape:
            raise ValueError(f"resnet_state_dict[{key!r}] has shape {tuple(value.shape)}, the backbone "
                             f"needs {tuple(own[key].shape)}: ImageNet weights need width=1.0 "
                             f"(this backbone has width={backbone.width})")
    backbone.load_state_dict(weights)
    return model


def imagenet_resnet_state_dict(backbone: str = "resnet50") -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``backbone`` (``IMAGENET1K_V1``), from its cache or downloaded.

    Raises ``RuntimeError`` with what to do when they are neither cached nor downloadable.
    """
    if backbone not in RESNET_UNITS:
        raise ValueError(f"backbone must be one of {sorted(RESNET_UNITS)}, got {backbone!r}")
    from torchvision import models

    weights = getattr(models, {"resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[backbone]).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as err:  # offline, proxy, corrupt cache: all mean "no weights here"
        raise RuntimeError(
            f"could not load torchvision's ImageNet {backbone} weights ({type(err).__name__}: {err}). "
            f"They are downloaded once from {weights.url} into {torch.hub.get_dir()}/checkpoints: "
            f"run once on a machine with internet (or copy the file there), or pass "
            f"pretrained_backbone=False to start from random weights."
        ) from err


def _encoder(backbone: str, output_stride: int, multi_grid: Sequence[int] | None, width: float,
             pretrained_backbone: bool, aspp_dropout: float,
             separable: bool, image_pooling: bool = True, layout: str = "paper") -> tuple[nn.Module, ASPP, int]:
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16 (DeepLab v3 Sec. 3.2), got {output_stride!r}")
    if backbone not in V3_BACKBONES:
        raise ValueError(f"backbone must be one of {V3_BACKBONES}, got {backbone!r}")
    check_width(width)
    if pretrained_backbone and width != 1.0:
        raise ValueError(f"pretrained_backbone=True needs width=1.0 (ImageNet weights), got width={width}")
    if backbone == "xception65":
        if pretrained_backbone:
            raise ValueError("pretrained_backbone=True: torchvision has no ImageNet Xception-65; "
                             "train it from random weights (pretrained_backbone=False)")
        if multi_grid not in (None, (1, 2, 4)):
            raise ValueError(f"multi_grid applies to the ResNet backbones, not xception65; got {multi_grid!r}")
        trunk: nn.Module = AlignedXception(output_stride, width, layout=layout)
    else:
        if layout != "paper":
            raise ValueError(f"layout={layout!r} applies to backbone='xception65' only, not {backbone!r}")
        trunk = DilatedResNet(backbone, output_stride, multi_grid, width)
        if pretrained_backbone:
            transplant_resnet(trunk, imagenet_resnet_state_dict(backbone))
    aspp_channels = scaled_channels(256, width)
    aspp = ASPP(trunk.out_channels, out_channels=aspp_channels, atrous_rates=aspp_rates(output_stride),
                dropout=aspp_dropout, separable=separable, image_pooling=image_pooling)
    return trunk, aspp, aspp_channels


def deeplab_v3(num_classes: int = 21, backbone: str = "resnet50", output_stride: int = 16,
               multi_grid: Sequence[int] | None = (1, 2, 4), width: float = 1.0,
               pretrained_backbone: bool = False, aspp_dropout: float = 0.1,
               separable: bool = False, image_pooling: bool = True, head: str = "paper") -> DeepLabV3:
    """DeepLab v3 (arXiv 1706.05587): dilated ResNet + multi-grid + ASPP with image pooling.

    Args:
        num_classes: output channels of the 1x1 classifier (21 for PASCAL VOC).
        backbone: ``"resnet50"`` or ``"resnet101"`` (the paper's best, Table 6-7).
        output_stride: 16 (training in the paper) or 8 (denser, ~4x the cost of the last blocks).
        multi_grid: unit rates of block4, multiplied by its dilation (Sec. 3.2); ``None`` keeps
            torchvision's dilation rule. Its length must equal layer4's unit count (3).
        width: channel multiplier of every conv (1.0 = the paper; 0.25 trains on a CPU).
        pretrained_backbone: load torchvision's ImageNet weights (``width=1.0`` only); raises
            ``RuntimeError`` with instructions when they cannot be had offline. ``False`` (the
            default) never touches the network: random initialisation.
        aspp_dropout: dropout after the ASPP projection.
        separable: atrous separable 3x3 convs in the ASPP (v3+'s; v3 itself used regular ones).
        image_pooling: the ASPP's image-level branch (Sec. 3.3; Table 5 ablates it).
        head: ``"paper"`` (ASPP -> 1x1 classifier, Sec. 3.3) or ``"torchvision"`` (a 3x3 conv + BN +
            ReLU before the classifier, as torchvision's ``DeepLabHead``: the layout its released
            weights need; :func:`~deeplab_lessons.models.released.from_torchvision` builds it).

    Returns:
        a :class:`DeepLabV3` whose ``forward`` gives logits at ``output_stride``.
    """
    check_num_classes(num_classes)
    trunk, aspp, aspp_channels = _encoder(backbone, output_stride, multi_grid, width, pretrained_backbone,
                                          aspp_dropout, separable, image_pooling)
    return DeepLabV3(trunk, aspp, aspp_channels, num_classes, head)


def deeplab_v3plus(num_classes: int = 21, backbone: str = "resnet50", output_stride: int = 16,
                   multi_grid: Sequence[int] | None = (1, 2, 4), width: float = 1.0,
                   pretrained_backbone: bool = False, aspp_dropout: float = 0.1,
                   separable: bool | None = None, layout: str = "paper") -> DeepLabV3Plus:
    """DeepLab v3+ (arXiv 1802.02611): the :func:`deeplab_v3` encoder + the stride-4 decoder.

    Same arguments as :func:`deeplab_v3`, plus ``backbone="xception65"`` (the modified aligned
    Xception of v3+ Sec. 3.2, :class:`~deeplab_lessons.models.xception.AlignedXception`; no
    multi-grid, no ImageNet weights in torchvision) and ``separable``: atrous separable convs in
    ASPP and decoder (``None``: on for Xception, as the paper's best model; off for ResNet), and
    ``layout`` for Xception: ``"paper"`` (BN + ReLU after every depthwise and pointwise conv, the paper's
    text) or ``"released"`` (the released code's pre-activation separable convs, BN eps 1e-3: the layout
    released weights need; see :mod:`.xception`).
    The decoder reduces the stride-4 low-level features to 48 channels and refines with two 3x3
    convs of 256 channels (all scaled by ``width``). ``forward`` gives logits at stride 4.
    """
    check_num_classes(num_classes)
    separable = (backbone == "xception65") if separable is None else bool(separable)
    trunk, aspp, aspp_channels = _encoder(backbone, output_stride, multi_grid, width, pretrained_backbone,
                                          aspp_dropout, separable, layout=layout)
    decoder = DeepLabV3PlusDecoder(trunk.low_level_channels, aspp_channels,
                                   reduced_channels=scaled_channels(48, width),
                                   channels=scaled_channels(256, width), separable=separable)
    return DeepLabV3Plus(trunk, aspp, aspp_channels, num_classes, decoder)
