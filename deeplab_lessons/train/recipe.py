"""The recipe of a training run: :class:`TrainConfig` (every setting, CPU lesson run by default)
and the poly learning-rate schedule.

DeepLab v1/v2 (arXiv 1412.7062 Sec. 5, arXiv 1606.00915 Sec. 4.1): SGD with momentum 0.9 and
weight decay 5e-4 on batches of random crops (321 px in the released configs); v2's "poly"
rate :math:`\\mathrm{lr}_t = \\mathrm{lr}_0 (1 - t / T)^{0.9}`, the classifier at 10x the base rate.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from deeplab_lessons import config
from deeplab_lessons.models.msc import check_scales
from deeplab_lessons.models.norm import NORMS
from deeplab_lessons.models.registry import (INITS, LABEL_TARGETS, MODEL_FAMILY, MODEL_SPECS, available_models,
                                             build_model, imagenet_weights_cached, imagenet_weights_file,
                                             published_label_target)
from deeplab_lessons.models.vgg import home_relative


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the CPU lesson run.

    :meth:`from_settings` sizes a run by a profile of :func:`deeplab_lessons.config.lesson_settings`
    (smoke, cpu, gpu, paper); :meth:`paper` is a model's published recipe. Units: pixels for sizes, iterations
    (= optimizer steps) for schedules, learning rates per unit of loss.
    """

    model: str = _opt("largefov", "model to train: " + ", ".join(MODEL_SPECS))
    data: str | None = _opt(None, "VOC2012 folder (or one holding VOCdevkit/VOC2012); default: real VOC "
                                  "under data/ when present, else the embedded set")
    train_split: str = _opt("train", "training split: train, trainval or trainaug (SBD, 10,582 images)")
    val_split: str = _opt("val", "split scored after training (and every --eval-every iterations)")
    num_classes: int = _opt(21, "output classes (21 for VOC: background + 20)")
    width: float = _opt(0.25, "channel multiplier of the network (1.0 = the paper's)")
    norm: str = _opt("batch", "none (the papers' VGG), batch (BatchNorm after every conv: trains from random "
                              "init in minutes) or group (GroupNorm, for small batches)")
    crop_size: int = _opt(128, "training crop in pixels (321 in the papers)")
    batch_size: int = _opt(8, "images per optimizer step (per process under torchrun)")
    iterations: int = _opt(2000, "optimizer steps in the whole run (the poly schedule ends here)", flag="--iters")
    optimizer: str = _opt("adamw", "sgd (the papers: momentum, weight decay) or adamw (faster from random init)")
    lr: float = _opt(5e-4, "base learning rate (the papers: 1e-3 with SGD from ImageNet weights)")
    classifier_lr_mult: float = _opt(10.0, "learning-rate multiplier of the classifier layer")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "L2 weight decay")
    lr_policy: str = _opt("poly", "learning-rate schedule: poly (v2 on) or step (v1: x lr_gamma every lr_step iterations)")
    poly_power: float = _opt(0.9, "power of the poly schedule lr * (1 - t/T)^power")
    lr_step: int = _opt(2000, "iterations between learning-rate drops of the step schedule (v1: 2000)")
    lr_gamma: float = _opt(0.1, "factor of each step-schedule drop (v1: 0.1)")
    label_target: str | None = _opt(None, "where the loss meets the labels: shrink (labels subsampled to the "
                                          "logits, v1/v2) or upsample (logits upsampled to the labels, v3); "
                                          "unset: the model's published choice")
    msc_scales: tuple[float, ...] = _opt((), "v2's multi-scale inputs, e.g. 1 0.75 0.5: max-fused, trained "
                                             "jointly (empty: off)")
    output_stride: int | None = _opt(None, "v3/v3+ encoder output stride while training (16 or 8; unset: 16)")
    eval_output_stride: int | None = _opt(None, "v3/v3+ output stride at evaluation (v3: train 16, evaluate 8; "
                                                "unset: as trained)")
    scale_min: float = _opt(0.5, "smallest random rescale of a training image")
    scale_max: float = _opt(1.5, "largest random rescale of a training image")
    flip: bool = _opt(True, "random left-right flips")
    pretrained: bool = _opt(False, "start from torchvision ImageNet weights (needs them cached or internet)")
    init: str = _opt("auto", "start without ImageNet weights: looks-linear (plain VGG nets train in minutes), "
                             "zero-residual (ResNets: every block starts as the identity), he, or auto "
                             "(looks-linear for the VGG models, zero-residual for the ResNets)")
    dropout: float | None = _opt(0.0, "probability of every dropout layer; unset: the model's own (0.5 after "
                                      "v1/v2's fc6 and fc7, the papers'); 0 for the short CPU run")
    freeze_bn: bool | None = _opt(None, "keep the ImageNet ResNet backbone's BatchNorm fixed (v3/v3+; new layers "
                                        "always train; VGG has none); unset: when pretrained and batch < 16")
    amp: bool | None = _opt(None, "mixed precision on CUDA: bfloat16 where the GPU has it, else float16 with a "
                                  "gradient scaler; unset: on with CUDA (never on the CPU)")
    channels_last: bool | None = _opt(None, "channels-last (NHWC) memory format for the model and batches (faster "
                                            "convolutions on tensor-core GPUs); unset: on with CUDA")
    num_workers: int = _opt(0, "DataLoader worker processes (0: load in the training process)")
    seed: int = _opt(0, "seed of initialisation, data order and augmentation")
    deterministic: bool = _opt(True, "torch.use_deterministic_algorithms during the run")
    eval_every: int = _opt(0, "evaluate every N iterations (0: only at the end)")
    val_images: int = _opt(0, "score only the first N images of the validation split (0: all of them), e.g. for a "
                              "quick look at a run's learning curve")
    eval_scales: tuple[float, ...] = _opt((1.0,), "input scales whose softmax is averaged at evaluation (v3's "
                                                   "test-time multi-scale, Table 6), e.g. 0.75 1.0 1.25")
    eval_flip: bool = _opt(False, "also average the left-right flipped prediction at evaluation (v3, Table 6)")
    checkpoint_every: int = _opt(100, "write OUT/last.pt every N iterations (0: only at the end and when the run "
                                      "is interrupted: Ctrl-C or SIGTERM always write it)")
    out: str | None = _opt(None, "run folder: last.pt (resumable), model.pt (final weights), history.json")
    resume: bool = _opt(False, "continue the run in OUT from OUT/last.pt (same schedule position)")
    overwrite: bool = _opt(False, "start afresh in an OUT that already holds a run: its model.pt and history.json "
                                  "are deleted, its last.pt replaced at the first checkpoint (without it such an OUT "
                                  "is refused)")
    stop_at: int | None = _opt(None, "stop after this iteration as if interrupted (checkpoint kept; --resume continues)")
    device: str | None = _opt(None, "cpu, cuda, cuda:1 ... (default: config.device(); cuda:LOCAL_RANK under torchrun)")
    log_every: int = _opt(10, "iterations between loss/LR updates of the progress bar and history")
    progress: bool = _opt(True, "show a progress bar (loss, LR, ETA)")
    budget_minutes: float | None = _opt(None, "the run's expected duration: after its first iterations the trainer "
                                              "projects the whole run and warns when that exceeds twice this")

    def __post_init__(self) -> None:
        _check_types(self)
        if self.model not in available_models():
            raise ValueError(f"TrainConfig: unknown model {self.model!r}; available: {', '.join(available_models())} "
                             "(register_model adds one)")
        try:
            self.eval_scales = check_scales(self.eval_scales, first_is_one=False)
        except ValueError as err:
            raise ValueError(f"TrainConfig: eval_scales: {err}") from None
        if self.label_target is None:
            self.label_target = published_label_target(self.model)
        if self.label_target not in LABEL_TARGETS:
            raise ValueError(f"TrainConfig: label_target must be one of {LABEL_TARGETS}, got {self.label_target!r}")
        if self.msc_scales is None or (isinstance(self.msc_scales, (tuple, list)) and not self.msc_scales):
            self.msc_scales = ()
        else:
            try:
                self.msc_scales = check_scales(self.msc_scales)
            except ValueError as err:
                raise ValueError(f"TrainConfig: msc_scales: {err}") from None
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"TrainConfig: lr_policy must be one of {LR_POLICIES}, got {self.lr_policy!r}")
        if self.lr_step < 1 or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"TrainConfig: need lr_step >= 1 and 0 < lr_gamma <= 1, got {self.lr_step}, {self.lr_gamma}")
        for name in ("output_stride", "eval_output_stride"):
            value = getattr(self, name)
            if value is not None and value not in (8, 16):
                raise ValueError(f"TrainConfig: {name} must be 8, 16 or unset, got {value!r}")
            family = MODEL_FAMILY.get(self.model, "")
            if value is not None and family and not family.startswith("v3"):
                raise ValueError(f"TrainConfig: {name}={value}: model {self.model!r} has a fixed output stride of 8 "
                                 "(only v3 / v3+ models can change it)")
        positive = {"num_classes": self.num_classes, "crop_size": self.crop_size, "batch_size": self.batch_size,
                    "iterations": self.iterations, "width": self.width, "lr": self.lr, "log_every": self.log_every}
        bad = {k: v for k, v in positive.items() if not v > 0}
        if bad:
            raise ValueError(f"TrainConfig: {', '.join(f'{k}={v!r}' for k, v in bad.items())} must be > 0")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"TrainConfig: need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        for name in ("eval_every", "val_images", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig: {name} must be >= 0, got {getattr(self, name)}")
        if self.norm not in NORMS:
            raise ValueError(f"TrainConfig: norm must be one of {NORMS}, got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"TrainConfig: init must be one of {INITS}, got {self.init!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig: dropout must be in [0, 1) or unset, got {self.dropout!r}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or not self.classifier_lr_mult > 0 \
                or not self.poly_power > 0:
            raise ValueError(f"TrainConfig: need 0 <= momentum < 1, weight_decay >= 0, classifier_lr_mult > 0 and "
                             f"poly_power > 0, got {self.momentum}, {self.weight_decay}, {self.classifier_lr_mult}, "
                             f"{self.poly_power}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"TrainConfig: optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.stop_at is not None and not 0 < self.stop_at <= self.iterations:
            raise ValueError(f"TrainConfig: stop_at must be in 1..iterations={self.iterations}, got {self.stop_at}")
        if self.resume and not self.out:
            raise ValueError("TrainConfig: resume=True needs out= (the run folder holding last.pt)")
        if self.resume and self.overwrite:
            raise ValueError("TrainConfig: resume=True continues the run in out=, overwrite=True replaces it: "
                             "give one of them")
        if self.device is not None:
            config.parse_device(self.device, "TrainConfig: device")
        stride = _training_output_stride(self.model, self.output_stride)
        if stride is not None and self.crop_size < 2 * stride:
            raise ValueError(f"TrainConfig: crop_size={self.crop_size} is too small for model {self.model!r} at output "
                             f"stride {stride}: a crop must give at least 2x2 logits (crop_size >= {2 * stride})")

    @classmethod
    def from_settings(cls, settings: config.LessonSettings | None = None, **overrides: Any) -> "TrainConfig":
        """The lesson run of a profile (default: ``config.lesson_settings()``, the active one).

        ``smoke``, ``cpu`` and ``gpu`` train from random initialisation (BatchNorm, looks-linear or
        zero-residual init, AdamW, no dropout: this class's defaults) at the profile's width, crop,
        batch, iterations, workers, mixed precision and memory format. ``paper`` is the model's
        published recipe (:meth:`paper`: its crop, batch and schedule; at the smoke sizes under
        tests); when its ImageNet weights are not on this machine (or the width is not 1.0) it warns
        and trains the random-initialisation recipe at those sizes instead, rather than stopping. A
        model without a published recipe (``small-field``, models registered at run time) gets the
        random-initialisation recipe at the profile's sizes.
        ``overrides`` replace any field.
        """
        s = settings if settings is not None else config.lesson_settings()
        sizes: dict[str, Any] = {"width": s.width, "crop_size": s.crop_size, "batch_size": s.batch_size,
                                 "iterations": s.iterations, "num_workers": s.num_workers}
        speed: dict[str, Any] = {"amp": s.amp or None, "channels_last": s.channels_last or None}
        model = overrides.pop("model", cls.model)
        if s.profile == "paper" and model in MODEL_FAMILY:
            wanted = overrides.get("pretrained", s.pretrained)
            width = overrides.get("width", s.width)
            problem = None
            if wanted and width != 1.0:
                problem = f"ImageNet weights fit the full-width network only, not width {width:g}"
            elif wanted and not imagenet_weights_cached(model):
                where = imagenet_weights_file(model)
                problem = f"no ImageNet weights for {model!r} on this machine" + (
                    f" ({home_relative(where)})" if where else "")
            if not s.quick:                                  # each model's published crop, batch and schedule
                recipe = PAPER_RECIPES[MODEL_FAMILY[model]]
                sizes.update({k: recipe[k] for k in ("crop_size", "batch_size", "iterations")})
            if problem is None:
                return cls.paper(model, **{**sizes, **speed, "pretrained": wanted, **overrides})
            warnings.warn(f"profile 'paper': {problem}; training from random initialisation with BatchNorm + AdamW "
                          "at the profile's sizes instead. Download the weights once on a machine with internet "
                          "(build_model(..., pretrained=True)) to train the published recipe.", stacklevel=2)
            overrides = {k: v for k, v in overrides.items() if k != "pretrained"}
        return cls(**{**sizes, **speed, **overrides, "model": model})

    @classmethod
    def paper(cls, model: str = "largefov", **overrides: Any) -> "TrainConfig":
        """The published recipe of ``model`` (:data:`PAPER_RECIPES`, by its family), full width,
        ImageNet weights, no added normalisation, the papers' dropout; ``overrides`` replace any field."""
        family = MODEL_FAMILY.get(model)
        if family is None:
            raise ValueError(f"no published recipe for model {model!r}; models with one: {sorted(MODEL_FAMILY)}")
        values: dict[str, Any] = {"width": 1.0, "pretrained": True, "norm": "none", "dropout": None,
                                  "optimizer": "sgd", "num_workers": 4, **PAPER_RECIPES[family], "model": model}
        values.update(overrides)
        return cls(**values)

    def build(self, pretrained: bool | None = None) -> nn.Module:
        """The network this config trains (random or ImageNet start, norm, dropout, MSC wrapper)."""
        extra = {"output_stride": self.output_stride} if self.output_stride is not None else {}
        return build_model(self.model, num_classes=self.num_classes, width=self.width, norm=self.norm,
                           pretrained=self.pretrained if pretrained is None else pretrained, init=self.init,
                           dropout=self.dropout, msc_scales=self.msc_scales, **extra)

    def lr_at(self, iteration: int) -> float:
        """The base learning rate at step ``iteration`` (0-based) under :attr:`lr_policy`."""
        if self.lr_policy == "step":
            return step_lr(self.lr, iteration, self.iterations, self.lr_step, self.lr_gamma)
        return poly_lr(self.lr, iteration, self.iterations, self.poly_power)

    def as_dict(self) -> dict:
        """Plain-data form stored in checkpoints (loadable with ``weights_only=True``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config stored by :meth:`as_dict`; fields this version does not know are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _training_output_stride(model: str, output_stride: int | None) -> int | None:
    """The output stride ``model`` trains at (8 for v1/v2, ``output_stride`` or 16 for v3/v3+; None: unknown)."""
    family = MODEL_FAMILY.get(model)
    if family is None:
        return None
    return (output_stride or 16) if family.startswith("v3") else 8


#: Field types :func:`_check_types` enforces (``bool`` is no number here, and a number no string).
_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_types(cfg: "TrainConfig") -> None:
    """A ``TypeError`` naming the field for a value of the wrong kind; non-finite floats are a ``ValueError``."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type) or kind not in _KINDS:
            continue
        if isinstance(value, np.generic) and kind in ("int", "float", "bool"):
            value = value.item()                      # numpy scalars as Python ones (plain JSON, same run keys)
            setattr(cfg, f.name, value)
        ok = isinstance(value, _KINDS[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
        if not ok:
            wanted = {"float": "a number", "int": "an int"}.get(kind, f"a {kind}")
            optional = " or None" if "None" in str(f.type) else ""
            raise TypeError(f"TrainConfig: {f.name} must be {wanted}{optional}, got {value!r}")
        if kind == "float" and not math.isfinite(value):
            raise ValueError(f"TrainConfig: {f.name} must be finite, got {value!r}")


#: Fields that define the trajectory of a run: a resumed run must agree on them.
RUN_FIELDS = ("model", "train_split", "num_classes", "width", "norm", "crop_size", "batch_size", "iterations",
              "optimizer", "lr", "classifier_lr_mult", "momentum", "weight_decay", "lr_policy", "poly_power", "lr_step",
              "lr_gamma", "label_target", "msc_scales", "output_stride", "scale_min", "scale_max", "flip",
              "pretrained", "init", "dropout", "freeze_bn", "amp", "seed")

#: Learning-rate schedules of :meth:`TrainConfig.lr_at`.
LR_POLICIES = ("poly", "step")

#: The published training recipes, by model family (``MODEL_FAMILY``). Sources:
#: v1 (arXiv 1412.7062 Sec. 5): batch 20, lr 1e-3 (10x on the classifier), x0.1 every 2000
#: iterations, momentum 0.9, weight decay 5e-4; 6000 iterations; LargeFOV's 321 crop and random
#: crop + mirror without rescaling from its released config. For the "DeepLab" trunk no training
#: crop is documented: 306 is the input of v1's speed measurement (Sec. 3.2), used here as a stand-in.
#: (v2 Table 2 lists the step baseline at batch 30: the released solver may have differed from v1's text.)
#: v2 (arXiv 1606.00915 Sec. 4.1, Table 2): poly (power 0.9), batch 10, 20k iterations, crop 321;
#: the VGG experiments without random rescaling (v2 adds it for ResNet, Table 4 "Aug").
#: v3 (arXiv 1706.05587 Sec. 4.1 and Appendix): crop 513, batch 16, lr 0.007 with poly, 30k
#: iterations, random rescaling 0.5 to 2.0 and flips, BatchNorm trained, output stride 16 for
#: training and 8 for evaluation, multi-scale (0.5 ... 1.75) + flip at test (Table 6). Not in the
#: paper, taken from the released code: the classifier at the base rate (no 10x) and weight decay
#: 1e-4. v3+ (arXiv 1802.02611 Sec. 4) keeps v3's protocol; the released code's weight decay for
#: its Xception backbone is 4e-5.
PAPER_RECIPES: dict[str, dict[str, Any]] = {
    "v1-deeplab": {"crop_size": 306, "batch_size": 20, "iterations": 6000, "lr": 1e-3, "lr_policy": "step",
                   "lr_step": 2000, "lr_gamma": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                   "scale_min": 1.0, "scale_max": 1.0},
    "v1-largefov": {"crop_size": 321, "batch_size": 20, "iterations": 6000, "lr": 1e-3, "lr_policy": "step",
                    "lr_step": 2000, "lr_gamma": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                    "scale_min": 1.0, "scale_max": 1.0},
    "v2": {"crop_size": 321, "batch_size": 10, "iterations": 20000, "lr": 1e-3, "lr_policy": "poly",
           "momentum": 0.9, "weight_decay": 5e-4, "scale_min": 1.0, "scale_max": 1.0},
    "v3": {"crop_size": 513, "batch_size": 16, "iterations": 30000, "lr": 0.007, "lr_policy": "poly",
           "classifier_lr_mult": 1.0, "scale_min": 0.5, "scale_max": 2.0,
           "momentum": 0.9, "weight_decay": 1e-4, "output_stride": 16, "eval_output_stride": 8,
           "eval_scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), "eval_flip": True},
}
PAPER_RECIPES["v3plus"] = dict(PAPER_RECIPES["v3"])
PAPER_RECIPES["v3plus-xception"] = {**PAPER_RECIPES["v3"], "weight_decay": 4e-5,
                                    "pretrained": False}      # torchvision has no ImageNet Xception-65


def step_lr(base_lr: float, iteration: int, iterations: int, step: int, gamma: float = 0.1) -> float:
    """The "step" rate of DeepLab v1 at step ``iteration`` (0-based): ``base_lr * gamma^(t // step)``.

    v1, arXiv 1412.7062 Sec. 5 ("multiplying the learning rate by 0.1 at every 2000 iterations").
    """
    if not 0 <= iteration <= iterations:
        raise ValueError(f"iteration must be in 0..{iterations}, got {iteration}")
    return base_lr * gamma ** (iteration // step)


def poly_lr(base_lr: float, iteration: int, iterations: int, power: float = 0.9) -> float:
    """The "poly" rate at step ``iteration`` (0-based) of ``iterations``: ``base_lr * (1 - t/T)^power``.

    DeepLab v2, arXiv 1606.00915 Sec. 4.1 (power 0.9).
    """
    if not 0 <= iteration <= iterations:
        raise ValueError(f"iteration must be in 0..{iterations}, got {iteration}")
    return base_lr * (1.0 - iteration / iterations) ** power
