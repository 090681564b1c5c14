"""Normalisation layers added to, swapped in or frozen in a built model.

:func:`set_norm` gives a model BatchNorm or GroupNorm (lesson 05's CPU run trains the papers'
plain VGG nets with BatchNorm after every conv); :func:`freeze_batchnorm` fixes BatchNorm
statistics and affine parameters (the usual treatment of a pretrained backbone trained with
batches too small for its statistics).
"""

from __future__ import annotations

import math

from torch import nn

from .common import classifier_parameters

#: Normalisation choices of :func:`set_norm`.
NORMS = ("none", "batch", "group")


def group_norm(channels: int) -> nn.GroupNorm:
    """``GroupNorm`` over ``channels`` with ``gcd(channels, 32)`` groups (32 when it divides)."""
    return nn.GroupNorm(math.gcd(channels, 32), channels)


def set_norm(model: nn.Module, norm: str) -> nn.Module:
    """Give ``model`` the normalisation ``norm`` (in place; returns it).

    - ``"none"``: leave the model as built (the papers' VGG-based v1/v2 have no normalisation).
    - ``"batch"`` / ``"group"`` on a model without normalisation layers: every convolution except
      the classifier becomes ``Sequential(conv, BatchNorm2d | GroupNorm)``, as in VGG16-BN. From
      random initialisation this trains a 16-layer plain network in a few hundred steps instead
      of thousands (Ioffe & Szegedy, arXiv 1502.03167; Wu & He, arXiv 1803.08494).
    - ``"group"`` on a model with BatchNorm (ResNet v3/v3+): each ``BatchNorm2d`` becomes a
      ``GroupNorm`` (32 groups or fewer), whose statistics do not depend on the batch size, for
      batches too small for BatchNorm. ``"batch"`` leaves such a model unchanged.

    GroupNorm uses ``gcd(channels, 32)`` groups.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "none":
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    has_norm = has_bn or any(isinstance(m, (nn.GroupNorm, nn.LayerNorm)) for m in model.modules())
    if has_bn and norm == "group":
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    setattr(parent, child_name, group_norm(child.num_features))
        return model
    if has_norm:
        return model
    head = {id(p) for p in classifier_parameters(model)}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and id(child.weight) not in head:
                layer = nn.BatchNorm2d(child.out_channels) if norm == "batch" else group_norm(child.out_channels)
                setattr(parent, child_name, nn.Sequential(child, layer))
    return model


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm in eval mode with frozen affine parameters; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            count += 1
    return count
