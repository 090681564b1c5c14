"""Models by name: the registry the trainer, the CLI and the experiments build from.

``build_model("largefov", width=0.25, norm="batch")`` returns the network ``TrainConfig(model=...)``
trains: the builder of :mod:`.vgg` or :mod:`.resnet` with the variant's fixed arguments, then
ImageNet weights (``pretrained``), normalisation (:func:`.norm.set_norm`), a start for training
from scratch (:mod:`.init`) and the dropout probability. :func:`register_model` adds builders at
run time (tests, experiments).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from .common import classifier_parameters
from .init import looks_linear_, zero_residual_
from .msc import MSC, unwrap_msc
from .norm import set_norm
from .resnet import DilatedResNet, deeplab_v3, deeplab_v3plus
from .vgg import (deeplab_v1, deeplab_v2, hub_checkpoint_path, imagenet_vgg16_state_dict, small_field_vgg,
                  transplant_vgg16)

#: name -> (builder function in deeplab_lessons.models, fixed keyword arguments, one-line description)
MODEL_SPECS: dict[str, tuple[str, dict, str]] = {
    "largefov": ("deeplab_v1", {"fov": "largefov"}, "DeepLab v1 LargeFOV: VGG16 stride 8, fc6 3x3 rate 12, 1024 ch"),
    "deeplab-7x7": ("deeplab_v1", {"fov": "7x7"}, "DeepLab v1: fc6 7x7 rate 4, 4096 ch (the large original)"),
    "deeplab-4x4": ("deeplab_v1", {"fov": "4x4"}, "DeepLab v1: fc6 4x4 rate 4 (the paper's plain DeepLab row)"),
    "deeplab-4x4-r8": ("deeplab_v1", {"fov": "4x4", "fc6_rate": 8}, "DeepLab v1: fc6 4x4 rate 8 (Table 2's "
                                                                    "DeepLab-CRF-4x4 row)"),
    "small-field": ("small_field_vgg", {}, "control: VGG16 blocks 1-3 + pool3 + 1x1 classifier, field 51 px, stride 8"),
    "aspp-l": ("deeplab_v2", {"aspp": "L"}, "DeepLab v2 VGG16 + ASPP-L, rates {6, 12, 18, 24}"),
    "aspp-s": ("deeplab_v2", {"aspp": "S"}, "DeepLab v2 VGG16 + ASPP-S, rates {2, 4, 8, 12}"),
    "v3": ("deeplab_v3", {}, "DeepLab v3: dilated ResNet + ASPP with image pooling"),
    "v3-no-image-pooling": ("deeplab_v3", {"image_pooling": False},
                            "DeepLab v3 without the ASPP's image-level branch (v3 Table 5's ablation)"),
    "v3-multigrid-111": ("deeplab_v3", {"multi_grid": (1, 1, 1), "image_pooling": False},
                         "DeepLab v3, block4's unit rates all equal (multi-grid (1, 1, 1)), no image pooling "
                         "(v3 Table 5's first row)"),
    "v3plus": ("deeplab_v3plus", {}, "DeepLab v3+: v3 encoder + stride-4 decoder"),
    "v3plus-xception": ("deeplab_v3plus", {"backbone": "xception65"},
                        "DeepLab v3+: aligned Xception-65, atrous separable ASPP and decoder"),
}

#: The paper family of each named model: which published recipe and label target it follows.
MODEL_FAMILY: dict[str, str] = {
    "largefov": "v1-largefov", "deeplab-7x7": "v1-deeplab", "deeplab-4x4": "v1-deeplab", "deeplab-4x4-r8": "v1-deeplab",
    "aspp-l": "v2", "aspp-s": "v2", "v3": "v3", "v3-no-image-pooling": "v3", "v3-multigrid-111": "v3", "v3plus": "v3plus", "v3plus-xception": "v3plus-xception",
}

#: Where the loss compares logits and labels, as published: v1/v2 subsample the labels by 8
#: (the Caffe configs' ``label_shrink``, ``shrink_factor: 8``); v3 upsamples the logits instead
#: (arXiv 1706.05587, Appendix, Table 8: 76.01 -> 77.21), as does v3+.
LABEL_TARGETS = ("shrink", "upsample")

#: The builder functions MODEL_SPECS names.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "deeplab_v1": deeplab_v1, "deeplab_v2": deeplab_v2, "deeplab_v3": deeplab_v3, "deeplab_v3plus": deeplab_v3plus,
    "small_field_vgg": small_field_vgg,
}

#: Builders added at run time with :func:`register_model` (tests, experiments).
_EXTRA_MODELS: dict[str, Callable[..., nn.Module]] = {}

#: Initialisations of a model trained without ImageNet weights (:func:`build_model`'s ``init``).
INITS = ("auto", "he", "looks-linear", "zero-residual")

#: Models ``init="auto"`` starts looks-linear (the plain VGG chains with odd kernels) or with
#: zero-initialised residual branches (the ResNets).
_LOOKS_LINEAR_MODELS = ("largefov", "deeplab-7x7", "aspp-l", "aspp-s", "small-field")
_ZERO_RESIDUAL_MODELS = ("v3", "v3-no-image-pooling", "v3-multigrid-111", "v3plus")


def published_label_target(name: str) -> str:
    """``"shrink"`` for the v1/v2 models, ``"upsample"`` for v3/v3+ and models registered at run time."""
    return "shrink" if MODEL_FAMILY.get(name, "").startswith(("v1", "v2")) else "upsample"


def pretrained_backbone(model: nn.Module) -> nn.Module | None:
    """The submodule of ``model`` whose BatchNorm layers come with ImageNet weights: the ResNet
    ``backbone`` of v3/v3+ (looked up through an :class:`~.msc.MSC` wrapper); ``None`` for the
    VGG models, whose ImageNet trunk has no BatchNorm (any BatchNorm there is new)."""
    backbone = getattr(unwrap_msc(model), "backbone", None)
    return backbone if isinstance(backbone, DilatedResNet) else None


def imagenet_weights_file(name: str) -> Path | None:
    """Where torchvision keeps the ImageNet weights ``build_model(name, pretrained=True)`` loads
    (``$TORCH_HOME/hub/checkpoints/...``); ``None`` for a model without published ImageNet weights."""
    from torchvision import models as tv

    if name not in MODEL_FAMILY or name == "v3plus-xception":
        return None
    if MODEL_FAMILY[name].startswith(("v1", "v2")):
        weights = tv.VGG16_Weights.IMAGENET1K_V1
    else:
        spec = dict(inspect.signature(BUILDERS[MODEL_SPECS[name][0]]).parameters)["backbone"].default
        weights = {"resnet50": tv.ResNet50_Weights, "resnet101": tv.ResNet101_Weights}[spec].IMAGENET1K_V1
    return hub_checkpoint_path(weights)


def imagenet_weights_cached(name: str) -> bool:
    """True when model ``name``'s ImageNet weights are on this machine (no download needed)."""
    path = imagenet_weights_file(name)
    return path is not None and path.is_file()


def register_model(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder(num_classes=..., width=..., ...)`` trainable as ``TrainConfig(model=name)``.

    The module it returns must map an ImageNet-normalised batch ``[N, 3, H, W]`` to logits
    ``[N, num_classes, h, w]`` and carry an ``output_stride`` attribute (input pixels per logit).
    """
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable, got {type(builder).__name__}")
    _EXTRA_MODELS[name] = builder


def _builder(name: str) -> Callable[..., nn.Module] | None:
    if name in _EXTRA_MODELS:
        return _EXTRA_MODELS[name]
    if name not in MODEL_SPECS:
        return None
    function, fixed, _ = MODEL_SPECS[name]
    build = BUILDERS[function]

    def build_named(**kwargs):
        return build(**fixed, **kwargs)

    build_named.__signature__ = inspect.signature(build)  # type: ignore[attr-defined]
    return build_named


def available_models() -> list[str]:
    """Names :func:`build_model` can build in this installation (builders that exist)."""
    return [name for name in list(MODEL_SPECS) + list(_EXTRA_MODELS) if _builder(name) is not None]


def resolve_init(name: str, init: str) -> str:
    """The start ``init="auto"`` means for model ``name``; any other ``init`` unchanged."""
    if init != "auto":
        return init
    return ("looks-linear" if name in _LOOKS_LINEAR_MODELS
            else "zero-residual" if name in _ZERO_RESIDUAL_MODELS else "he")


def build_model(name: str, num_classes: int = 21, width: float = 1.0, norm: str = "none",
                pretrained: bool = False, init: str = "he", dropout: float | None = None,
                msc_scales: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
    """Build a model by its short name (``largefov``, ``deeplab-7x7``, ``aspp-l``, ``aspp-s``, ``v3``, ``v3plus``).

    ``width`` scales every channel count (1.0 = the paper's network). ``norm`` is applied with
    :func:`~deeplab_lessons.models.set_norm` (``"none"`` keeps the paper's network). ``pretrained``
    copies torchvision's ImageNet weights into the backbone first (VGG16 for v1/v2, ResNet for
    v3/v3+; they must be cached or downloadable). Extra keyword arguments go to the builder when
    it accepts them (e.g. ``output_stride`` for ``v3``); others are rejected with a ``ValueError``.

    ``init`` (without ``pretrained``): ``"he"``, the builders' He / N(0, 0.01) start;
    ``"looks-linear"``, :func:`~deeplab_lessons.models.looks_linear_` on every layer but the
    classifier (plain VGG chains only; an even kernel starts on its central 2x2 taps); ``"zero-residual"``, He plus
    :func:`~deeplab_lessons.models.zero_residual_` (ResNets); ``"auto"``, looks-linear for the
    v1/v2 VGG models with odd kernels, zero-residual for v3/v3+, He for the others. ``dropout``
    sets the probability of every ``nn.Dropout`` (``None`` keeps the model's own: 0.5 after
    v1/v2's fc6 and fc7). ``msc_scales`` (e.g. ``(1, 0.75, 0.5)``) wraps the result in v2's
    multi-scale-input :class:`~deeplab_lessons.models.MSC`; empty or ``None``: no wrapper.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1) or None, got {dropout!r}")
    build = _builder(name)
    if build is None:
        known = ", ".join(MODEL_SPECS) + (", " + ", ".join(_EXTRA_MODELS) if _EXTRA_MODELS else "")
        raise ValueError(f"unknown or unavailable model {name!r}; available here: {available_models()} "
                         f"(all names: {known})")
    params = inspect.signature(build).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    wanted = {"num_classes": num_classes, "width": width, **kwargs}
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise ValueError(f"model {name!r} does not take {unknown}; it takes {list(params)}")
    if "width" not in params and not takes_any and width != 1.0:
        raise ValueError(f"model {name!r} has no width option; use width=1.0")
    if pretrained and "pretrained_backbone" in params:
        wanted["pretrained_backbone"] = True
    model = build(**{k: v for k, v in wanted.items() if k in params or takes_any})
    if not hasattr(model, "output_stride"):
        raise ValueError(f"model {name!r} has no output_stride attribute (input pixels per logit)")
    if pretrained and "pretrained_backbone" not in params:
        load_pretrained(model, name)
    set_norm(model, norm)
    init = resolve_init(name, init)
    if not pretrained and init == "looks-linear":
        looks_linear_(model, skip=classifier_parameters(model))
    elif not pretrained and init == "zero-residual":
        zero_residual_(model)
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = float(dropout)
    return MSC(model, msc_scales) if msc_scales else model


def load_pretrained(model: nn.Module, name: str) -> None:
    """Copy torchvision's ImageNet VGG16 into a v1/v2 model (``transplant_vgg16``, fc6 decimated)."""
    if name not in MODEL_SPECS or MODEL_SPECS[name][0] not in ("deeplab_v1", "deeplab_v2"):
        raise ValueError(f"pretrained=True: no ImageNet weights known for model {name!r}")
    transplant_vgg16(model, imagenet_vgg16_state_dict())
