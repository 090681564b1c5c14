"""Training and evaluation of DeepLab models on PASCAL VOC 2012 (lesson 05), as a library and a CLI.

The recipe of DeepLab v1/v2 (arXiv 1412.7062 Sec. 4.1, arXiv 1606.00915 Sec. 4.1):

- SGD, momentum 0.9, weight decay 5e-4, batch of random crops (321 px in the papers);
- the "poly" learning rate :math:`\\mathrm{lr}_t = \\mathrm{lr}_0 (1 - t / T)^{0.9}`, with the
  classifier (the freshly initialised last layer) at 10x the base rate;
- cross-entropy over every labelled pixel, 255 ("void") ignored, the stride-8 logits
  upsampled bilinearly to the label size;
- scored by mean IoU from one confusion matrix over the whole validation set, on whole images,
  optionally averaging the softmax over several input scales and a left-right flip
  (v2 Sec. 4.3 "multi-scale inputs", v3 arXiv 1706.05587 Sec. 4.2).

Library::

    from deeplab_lessons.train import TrainConfig, train, evaluate, load_model
    result = train(TrainConfig(model="largefov", iterations=500, out="runs/largefov"))
    result.metrics["mean_iou"]
    model = load_model("runs/largefov/model.pt")        # rebuilt from the config it stores

Command line (``--help`` lists every option)::

    python -m deeplab_lessons.train --model largefov --iters 2000 --out runs/largefov
    torchrun --nproc_per_node 2 -m deeplab_lessons.train --model largefov --out runs/ddp

Under ``torchrun`` each process trains on its own share of every batch with
``DistributedDataParallel`` (``nccl`` on GPUs, ``gloo`` on CPUs); ``batch_size`` is per process.
Runs are deterministic for a seed on one machine (``num_workers`` any, data order and augmentation
are a function of the seed and the sample's position in the run), so ``--resume`` continues a run
exactly where its last checkpoint left it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deeplab_lessons import config
from deeplab_lessons.data.palette import IGNORE_INDEX, VOC_CLASSES
from deeplab_lessons.data.transforms import train_transforms
from deeplab_lessons.data.voc import VOCSegmentation
from deeplab_lessons.metrics import ConfusionMatrix
from deeplab_lessons.models.common import normalize, upsample_logits
from deeplab_lessons.models.init import looks_linear_, zero_residual_

#: Format tag stored in every checkpoint this module writes.
CHECKPOINT_FORMAT = "deeplab_lessons.train/1"

#: The model shipped with the project: ``TrainConfig()`` (the CPU default run) trained on the
#: embedded set; ``load_model(LESSON_CHECKPOINT)`` returns it (README, "Training", says how it was made).
LESSON_CHECKPOINT = config.REPO_ROOT / "checkpoints" / "largefov_cpu.pt"

# --------------------------------------------------------------------------------------------
# Models by name
# --------------------------------------------------------------------------------------------

#: name -> (builder function in deeplab_lessons.models, fixed keyword arguments, one-line description)
MODEL_SPECS: dict[str, tuple[str, dict, str]] = {
    "largefov": ("deeplab_v1", {"fov": "largefov"}, "DeepLab v1 LargeFOV: VGG16 stride 8, fc6 3x3 rate 12, 1024 ch"),
    "deeplab-7x7": ("deeplab_v1", {"fov": "7x7"}, "DeepLab v1: fc6 7x7 rate 4, 4096 ch (the large original)"),
    "deeplab-4x4": ("deeplab_v1", {"fov": "4x4"}, "DeepLab v1: fc6 4x4 rate 4"),
    "aspp-l": ("deeplab_v2", {"aspp": "L"}, "DeepLab v2 VGG16 + ASPP-L, rates {6, 12, 18, 24}"),
    "aspp-s": ("deeplab_v2", {"aspp": "S"}, "DeepLab v2 VGG16 + ASPP-S, rates {2, 4, 8, 12}"),
    "v3": ("deeplab_v3", {}, "DeepLab v3: dilated ResNet + ASPP with image pooling"),
    "v3plus": ("deeplab_v3plus", {}, "DeepLab v3+: v3 encoder + stride-4 decoder"),
}

#: Builders added at run time with :func:`register_model` (tests, experiments).
_EXTRA_MODELS: dict[str, Callable[..., nn.Module]] = {}


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
    models = importlib.import_module("deeplab_lessons.models")
    build = getattr(models, function, None)
    if build is None:
        return None

    def build_named(**kwargs):
        return build(**fixed, **kwargs)

    build_named.__signature__ = inspect.signature(build)  # type: ignore[attr-defined]
    return build_named


def available_models() -> list[str]:
    """Names :func:`build_model` can build in this installation (builders that exist)."""
    return [name for name in list(MODEL_SPECS) + list(_EXTRA_MODELS) if _builder(name) is not None]


#: Initialisations of a model trained without ImageNet weights (:func:`build_model`'s ``init``).
INITS = ("auto", "he", "looks-linear", "zero-residual")

#: Models ``init="auto"`` starts looks-linear (the plain VGG chains with odd kernels) or with
#: zero-initialised residual branches (the ResNets).
_LOOKS_LINEAR_MODELS = ("largefov", "deeplab-7x7", "aspp-l", "aspp-s")
_ZERO_RESIDUAL_MODELS = ("v3", "v3plus")


def build_model(name: str, num_classes: int = 21, width: float = 1.0, norm: str = "none",
                pretrained: bool = False, init: str = "he", dropout: float | None = None,
                **kwargs: Any) -> nn.Module:
    """Build a model by its short name (``largefov``, ``deeplab-7x7``, ``aspp-l``, ``aspp-s``, ``v3``, ``v3plus``).

    ``width`` scales every channel count (1.0 = the paper's network). ``norm`` is applied with
    :func:`set_norm` (``"none"`` keeps the paper's network). ``pretrained`` copies torchvision's
    ImageNet weights into the backbone first (VGG16 for v1/v2, ResNet for v3/v3+; they must be
    cached or downloadable). Extra keyword arguments go to the builder when it accepts them
    (e.g. ``output_stride`` for ``v3``); others are rejected with a ``ValueError``.

    ``init`` (without ``pretrained``): ``"he"``, the builders' He / N(0, 0.01) start;
    ``"looks-linear"``, :func:`deeplab_lessons.models.init.looks_linear_` on every layer but the
    classifier (plain VGG chains only); ``"zero-residual"``, He plus
    :func:`deeplab_lessons.models.init.zero_residual_` (ResNets); ``"auto"``, looks-linear for the
    v1/v2 VGG models with odd kernels, zero-residual for v3/v3+, He for the others. ``dropout``
    sets the probability of every ``nn.Dropout`` (``None`` keeps the model's own: 0.5 after
    v1/v2's fc6 and fc7).
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
        _load_pretrained(model, name)
    set_norm(model, norm)
    if init == "auto":
        init = ("looks-linear" if name in _LOOKS_LINEAR_MODELS
                else "zero-residual" if name in _ZERO_RESIDUAL_MODELS else "he")
    if not pretrained and init == "looks-linear":
        looks_linear_(model, skip=classifier_parameters(model))
    elif not pretrained and init == "zero-residual":
        zero_residual_(model)
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = float(dropout)
    return model


#: Normalisation choices of :func:`set_norm`.
NORMS = ("none", "batch", "group")


def _group_norm(channels: int) -> nn.GroupNorm:
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
                    setattr(parent, child_name, _group_norm(child.num_features))
        return model
    if has_norm:
        return model
    head = {id(p) for p in classifier_parameters(model)}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and id(child.weight) not in head:
                layer = nn.BatchNorm2d(child.out_channels) if norm == "batch" else _group_norm(child.out_channels)
                setattr(parent, child_name, nn.Sequential(child, layer))
    return model


def _load_pretrained(model: nn.Module, name: str) -> None:
    """Copy torchvision's ImageNet VGG16 into a v1/v2 model (``transplant_vgg16``, fc6 decimated)."""
    if name not in MODEL_SPECS or MODEL_SPECS[name][0] not in ("deeplab_v1", "deeplab_v2"):
        raise ValueError(f"pretrained=True: no ImageNet weights known for model {name!r}")
    models = importlib.import_module("deeplab_lessons.models")
    models.transplant_vgg16(model, models.imagenet_vgg16_state_dict())


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


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the CPU lesson run.

    :meth:`from_settings` fills in the GPU-sized values (paper settings) from
    :func:`deeplab_lessons.config.lesson_settings`. Units: pixels for sizes, iterations
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
    iterations: int = _opt(300, "optimizer steps in the whole run (the poly schedule ends here)", flag="--iters")
    optimizer: str = _opt("adamw", "sgd (the papers: momentum, weight decay) or adamw (faster from random init)")
    lr: float = _opt(1e-3, "base learning rate (the papers: 1e-3 with SGD from ImageNet weights)")
    classifier_lr_mult: float = _opt(10.0, "learning-rate multiplier of the classifier layer")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "L2 weight decay")
    poly_power: float = _opt(0.9, "power of the poly schedule lr * (1 - t/T)^power")
    scale_min: float = _opt(0.5, "smallest random rescale of a training image")
    scale_max: float = _opt(1.5, "largest random rescale of a training image")
    flip: bool = _opt(True, "random left-right flips")
    pretrained: bool = _opt(False, "start from torchvision ImageNet weights (needs them cached or internet)")
    init: str = _opt("auto", "start without ImageNet weights: looks-linear (plain VGG nets train in minutes), "
                             "zero-residual (ResNets: every block starts as the identity), he, or auto "
                             "(looks-linear for the VGG models, zero-residual for the ResNets)")
    dropout: float | None = _opt(0.0, "probability of every dropout layer; unset: the model's own (0.5 after "
                                      "v1/v2's fc6 and fc7, the papers'); 0 for the short CPU run")
    freeze_bn: bool | None = _opt(None, "keep BatchNorm statistics fixed; unset: when pretrained and batch < 16")
    amp: bool | None = _opt(None, "mixed precision; unset: on with CUDA, off on CPU")
    num_workers: int = _opt(0, "DataLoader worker processes (0: load in the training process)")
    seed: int = _opt(0, "seed of initialisation, data order and augmentation")
    deterministic: bool = _opt(True, "torch.use_deterministic_algorithms during the run")
    eval_every: int = _opt(0, "evaluate every N iterations (0: only at the end)")
    eval_scales: tuple[float, ...] = _opt((1.0,), "input scales averaged at evaluation, e.g. 0.75 1.0 1.25")
    eval_flip: bool = _opt(False, "also average the left-right flipped prediction at evaluation")
    checkpoint_every: int = _opt(0, "write OUT/last.pt every N iterations (0: only at the end)")
    out: str | None = _opt(None, "run folder: last.pt (resumable), model.pt (final weights), history.json")
    resume: bool = _opt(False, "continue the run in OUT from OUT/last.pt (same schedule position)")
    stop_at: int | None = _opt(None, "stop after this iteration as if interrupted (checkpoint kept; --resume continues)")
    device: str | None = _opt(None, "cpu, cuda, cuda:1 ... (default: config.device(); cuda:LOCAL_RANK under torchrun)")
    log_every: int = _opt(10, "iterations between loss/LR updates of the progress bar and history")
    progress: bool = _opt(True, "show a progress bar (loss, LR, ETA)")

    def __post_init__(self) -> None:
        self.eval_scales = tuple(float(s) for s in self.eval_scales)
        positive = {"num_classes": self.num_classes, "crop_size": self.crop_size, "batch_size": self.batch_size,
                    "iterations": self.iterations, "width": self.width, "lr": self.lr, "log_every": self.log_every}
        bad = {k: v for k, v in positive.items() if not v > 0}
        if bad:
            raise ValueError(f"TrainConfig: {', '.join(f'{k}={v!r}' for k, v in bad.items())} must be > 0")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"TrainConfig: need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not self.eval_scales or min(self.eval_scales) <= 0:
            raise ValueError(f"TrainConfig: eval_scales must be positive numbers, got {self.eval_scales}")
        for name in ("eval_every", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig: {name} must be >= 0, got {getattr(self, name)}")
        if self.norm not in NORMS:
            raise ValueError(f"TrainConfig: norm must be one of {NORMS}, got {self.norm!r}")
        if self.init not in INITS:
            raise ValueError(f"TrainConfig: init must be one of {INITS}, got {self.init!r}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig: dropout must be in [0, 1) or unset, got {self.dropout!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"TrainConfig: optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.stop_at is not None and not 0 < self.stop_at <= self.iterations:
            raise ValueError(f"TrainConfig: stop_at must be in 1..iterations={self.iterations}, got {self.stop_at}")
        if self.resume and not self.out:
            raise ValueError("TrainConfig: resume=True needs out= (the run folder holding last.pt)")

    @classmethod
    def from_settings(cls, settings: config.LessonSettings | None = None, **overrides: Any) -> "TrainConfig":
        """The lesson run sized by ``config.lesson_settings()`` (CPU: the defaults; GPU: paper scale).

        Width, crop, batch and workers come from the settings. On the CPU scale the iterations and
        optimiser are this class's defaults (sized for 3 minutes on 2 cores from random
        initialisation: BatchNorm, looks-linear init, AdamW, no dropout); on the GPU scale the
        papers' recipe applies (SGD, base lr 1e-3, ImageNet weights, no added normalisation,
        dropout 0.5, the settings' iterations, multi-scale + flip evaluation).
        ``overrides`` replace any field.
        """
        s = settings if settings is not None else config.lesson_settings()
        values: dict[str, Any] = {"width": s.width, "crop_size": s.crop_size, "batch_size": s.batch_size,
                                  "num_workers": s.num_workers}
        if s.scale == "gpu":
            values.update(iterations=s.iterations, optimizer="sgd", lr=1e-3, pretrained=True, norm="none",
                          dropout=None, eval_scales=tuple(s.eval_scales), eval_flip=True)
        values.update(overrides)
        return cls(**values)

    def as_dict(self) -> dict:
        """Plain-data form stored in checkpoints (loadable with ``weights_only=True``)."""
        return dataclasses.asdict(self)


#: Fields that define the trajectory of a run: a resumed run must agree on them.
_RUN_FIELDS = ("model", "train_split", "num_classes", "width", "norm", "crop_size", "batch_size", "iterations", "optimizer", "lr",
               "classifier_lr_mult", "momentum", "weight_decay", "poly_power", "scale_min", "scale_max", "flip",
               "pretrained", "init", "dropout", "freeze_bn", "amp", "seed")


def poly_lr(base_lr: float, iteration: int, iterations: int, power: float = 0.9) -> float:
    """The "poly" rate at step ``iteration`` (0-based) of ``iterations``: ``base_lr * (1 - t/T)^power``.

    DeepLab v2, arXiv 1606.00915 Sec. 4.1 (power 0.9).
    """
    if not 0 <= iteration <= iterations:
        raise ValueError(f"iteration must be in 0..{iterations}, got {iteration}")
    return base_lr * (1.0 - iteration / iterations) ** power


# --------------------------------------------------------------------------------------------
# Data: a resumable, seed-determined stream of augmented samples
# --------------------------------------------------------------------------------------------

def _sample_seed(seed: int, position: int) -> int:
    return (seed * 1_000_003 + position) % (2 ** 62)


class SampleStream(torch.utils.data.Sampler):
    """Batches of ``(dataset index, augmentation seed)`` for iterations ``start..stop-1`` of one process.

    Sample ``p`` of the run (``p = (iteration * world_size + rank) * batch_size + j``) is image
    ``perm_e[p mod n]`` of epoch ``e = p // n``, where ``perm_e`` is a permutation seeded by
    ``(seed, e)``, augmented with seed ``(seed, p)``. Everything is a function of the position,
    so a resumed run sees exactly the batches the uninterrupted one would have seen.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("the training split is empty")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator).tolist()
        return self._perm[position % self.n]

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            base = (iteration * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), _sample_seed(self.seed, p)) for p in range(base, base + self.batch_size)]

    def __len__(self) -> int:
        return self.stop - self.start


class AugmentedSamples(torch.utils.data.Dataset):
    """``dataset[index]`` augmented by ``transform`` under its own seed: ``[(index, seed)] -> (image, mask)``.

    The transform draws from a generator seeded with the sample's seed; torch's global generator
    is left untouched (dropout in the model keeps its own stream).
    ``cache=True`` keeps decoded images in memory (worth it for small sets such as the embedded one).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable, cache: bool = False) -> None:
        self.dataset, self.transform, self.cache = dataset, transform, cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        sample = self._cache.get(index) if self.cache else None
        if sample is None:
            sample = self.dataset[index]
            if self.cache:
                self._cache[index] = sample
        return self.transform(*sample, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Inference and evaluation
# --------------------------------------------------------------------------------------------

def _forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def _output_stride(model: nn.Module) -> int:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    stride = getattr(inner, "output_stride", None)
    if stride is None:
        raise ValueError("model has no output_stride attribute (input pixels per logit)")
    return int(stride)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
                  flip: bool = False, amp: bool = False) -> torch.Tensor:
    """Class probabilities at full image resolution, averaged over input scales and flips.

    Each scale ``s`` resizes the batch to ``round(s * H) x round(s * W)`` (bilinear), runs the
    model, upsamples the logits to ``H x W`` and takes the softmax; with ``flip`` the mirrored
    batch is scored too and mirrored back. The probabilities are averaged (DeepLab v2 Sec. 4.3,
    v3 Sec. 4.2 "multi-scale inputs ... and left-right flipped inputs").

    Args:
        model: a model whose logits come out at ``model.output_stride``; run in eval mode here.
        images: ``uint8`` ``[N, 3, H, W]`` (or ``[3, H, W]``) RGB, on the model's device.
        scales: input scales, e.g. ``(0.5, 0.75, 1.0)``.
        flip: add left-right flipped inputs.
        amp: run the forward passes under CUDA autocast.

    Returns:
        ``float32`` probabilities ``[N, C, H, W]`` (``[C, H, W]`` for one image), summing to 1 over C.
    """
    single = images.ndim == 3
    x = normalize(images[None] if single else images)
    height, width = x.shape[-2:]
    stride = _output_stride(model)
    was_training = model.training
    model.eval()
    total = None
    try:
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            xs = x if size == (height, width) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if flip else (False,)):
                inp = xs.flip(-1) if mirrored else xs
                with torch.autocast("cuda", enabled=amp and x.is_cuda):
                    logits = _forward_logits(model, inp)
                logits = upsample_logits(logits.float(), size, stride)
                if size != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                probs = logits.softmax(1)
                probs = probs.flip(-1) if mirrored else probs
                total = probs if total is None else total + probs
    finally:
        model.train(was_training)
    total = total / (len(scales) * (2 if flip else 1))
    return total[0] if single else total


def evaluate(model: nn.Module, data: torch.utils.data.Dataset | Iterable, num_classes: int = 21, *,
             device: torch.device | str | None = None, scales: Sequence[float] = (1.0,), flip: bool = False,
             amp: bool | None = None, progress: bool = False,
             confusion: ConfusionMatrix | None = None) -> dict:
    """Score ``model`` on whole images: one confusion matrix over every pixel of ``data``.

    Args:
        model: segmentation model (logits at ``model.output_stride``).
        data: a dataset yielding ``(uint8 [3, H, W], int64 [H, W])`` (scored one image at a time,
            whatever its size: no centre crop) or any iterable of batches ``([N, 3, H, W], [N, H, W])``
            such as a DataLoader.
        num_classes: classes of the confusion matrix; label 255 is ignored.
        device: where to run (default: the model's device).
        scales, flip: multi-scale / flipped inference (:func:`predict_proba`).
        amp: CUDA autocast (default: on when running on CUDA).
        progress: show a progress bar.
        confusion: accumulate into this matrix (e.g. to reduce it over processes) instead of a new one.

    Returns:
        :meth:`ConfusionMatrix.compute`'s dict (``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``,
        ``iou`` per class) plus ``confusion``, the matrix itself.
    """
    from tqdm.auto import tqdm

    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    cm = confusion if confusion is not None else ConfusionMatrix(num_classes, IGNORE_INDEX)
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, generator=torch.Generator())
    for images, targets in tqdm(data, desc="evaluate", disable=not progress, leave=False):
        probs = predict_proba(model, images.to(device, non_blocking=True), scales=scales, flip=flip, amp=amp)
        cm.update(probs.argmax(1), targets)
    scores = cm.compute()
    scores["confusion"] = cm
    return scores


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_checkpoint(state: dict, path: Path | str) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a temporary file in the same folder, then ``os.replace``.

    A reader never sees a half-written file, and an interrupted save leaves the old one intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                    # mkstemp's 0600 -> the usual file mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`train` with ``torch.load(..., weights_only=True)``.

    Returns the dict: ``format``, ``config`` (a :class:`TrainConfig` as a dict), ``model`` (state
    dict), ``iteration``, ``metrics``, ``history`` and, in resumable ``last.pt`` files, the
    optimizer, AMP scaler and RNG states. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a deeplab_lessons training checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def load_model(path: Path | str, device: torch.device | str | None = None) -> nn.Module:
    """Rebuild the model stored in a checkpoint from its config and load its weights; returned in eval mode.

    ``device`` defaults to ``config.device()``. The model's ``train_config`` attribute holds the
    stored :class:`TrainConfig` and ``checkpoint_metrics`` the scores recorded with it.
    """
    state = load_checkpoint(path)
    cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in _config_fields()})
    model = build_model(cfg.model, num_classes=cfg.num_classes, width=cfg.width, norm=cfg.norm)
    model.load_state_dict(state["model"])
    model.train_config = cfg
    model.checkpoint_metrics = state.get("metrics", {})
    return model.to(device if device is not None else config.device()).eval()


def _config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def _plain_metrics(scores: dict) -> dict:
    return {"pixel_accuracy": scores["pixel_accuracy"], "mean_accuracy": scores["mean_accuracy"],
            "mean_iou": scores["mean_iou"], "iou": [float(v) for v in scores["iou"]]}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` (unwrapped, eval mode), ``metrics`` (final evaluation, as :func:`evaluate` minus the
    matrix), ``history`` (``iteration``/``loss``/``lr`` every ``log_every`` steps and
    ``eval_iteration``/``mean_iou`` at every evaluation), ``checkpoint`` (path of ``model.pt`` or
    None without ``out``), ``train_seconds`` (optimizer steps only, evaluation excluded),
    ``images_per_second`` (training images per second over all processes) and ``iteration`` (last one run).
    """

    model: nn.Module
    metrics: dict
    history: dict
    checkpoint: Path | None
    train_seconds: float
    images_per_second: float
    iteration: int


def _freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm in eval mode with frozen affine parameters; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            count += 1
    return count


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device):
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on VOC (or the embedded set) with DeepLab's recipe; evaluate on ``cfg.val_split``.

    SGD + momentum, poly learning rate with the classifier at ``classifier_lr_mult`` x, cross-entropy
    on logits upsampled to the labels with 255 ignored (arXiv 1606.00915 Sec. 4.1). Writes
    ``cfg.out/last.pt`` every ``checkpoint_every`` iterations and at the end (resumable),
    ``cfg.out/model.pt`` (weights + config + final metrics, for :func:`load_model`) and
    ``cfg.out/history.json``. A non-finite loss stops the run with ``FloatingPointError`` before
    anything is overwritten, so the last good ``last.pt`` stays. Under ``torchrun`` the model is
    wrapped in ``DistributedDataParallel``; only rank 0 writes files and shows progress.

    ``callback(history)`` is called on rank 0 after every logged step and every evaluation
    (the notebook's live loss/mIoU plot).
    """
    from tqdm.auto import tqdm

    rank, world, local_rank = _dist_env()
    own_group = False
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend=backend)
        own_group = True
    if cfg.device is not None:
        device = torch.device(cfg.device)
    elif world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = config.device()
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    amp = device.type == "cuda" if cfg.amp is None else (cfg.amp and device.type == "cuda")
    out = Path(cfg.out) if cfg.out else None
    try:
        with _deterministic(cfg.deterministic, device):
            return _train(cfg, callback, tqdm, rank, world, device, amp, out)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _train(cfg, callback, tqdm, rank, world, device, amp, out) -> TrainResult:
    root = Path(cfg.data) if cfg.data else config.voc_root()
    train_set = VOCSegmentation(root, cfg.train_split)
    val_set = VOCSegmentation(root, cfg.val_split)
    if train_set.num_classes != cfg.num_classes:
        raise ValueError(f"num_classes={cfg.num_classes} but the data set has {train_set.num_classes} classes")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=cfg.num_classes, width=cfg.width, norm=cfg.norm,
                        pretrained=cfg.pretrained, init=cfg.init, dropout=cfg.dropout)
    model.to(device)
    freeze_bn = (cfg.pretrained and cfg.batch_size < 16) if cfg.freeze_bn is None else cfg.freeze_bn

    head = {id(p) for p in classifier_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in head], "lr_mult": 1.0},
              {"params": [p for p in params if id(p) in head], "lr_mult": cfg.classifier_lr_mult}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start, history = 0, {"iteration": [], "loss": [], "lr": [], "eval_iteration": [], "mean_iou": []}
    last_path = out / "last.pt" if out else None
    if cfg.resume:
        state = load_checkpoint(last_path, map_location=device)
        saved = state["config"]
        differ = [k for k in _RUN_FIELDS if saved.get(k) != getattr(cfg, k)]
        if differ:
            raise ValueError(f"--resume: {last_path} was trained with different "
                             f"{', '.join(f'{k}={saved.get(k)!r}' for k in differ)}; pass the same settings")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), device)
        start, history = int(state["iteration"]), state["history"]

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    stop = cfg.stop_at if cfg.stop_at is not None else cfg.iterations
    transform = train_transforms(cfg.crop_size, (cfg.scale_min, cfg.scale_max), cfg.flip)
    samples = AugmentedSamples(train_set, transform, cache=len(train_set) <= 2000 and cfg.num_workers == 0)
    loader = torch.utils.data.DataLoader(
        samples, batch_sampler=SampleStream(len(train_set), cfg.batch_size, cfg.seed, start, stop, rank, world),
        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", generator=torch.Generator(),
        persistent_workers=False)
    val_indices = list(range(rank, len(val_set), world))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, val_indices), batch_size=1,
                                             num_workers=cfg.num_workers, generator=torch.Generator())

    def checkpoint_state(iteration: int) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {"format": CHECKPOINT_FORMAT, "config": cfg.as_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                "iteration": iteration, "history": history, "metrics": {},
                "torch_version": str(torch.__version__), "num_threads": torch.get_num_threads()}

    def run_eval(iteration: int) -> dict:
        cm = ConfusionMatrix(cfg.num_classes, IGNORE_INDEX)
        scores = evaluate(model, val_loader, cfg.num_classes, device=device, scales=cfg.eval_scales,
                          flip=cfg.eval_flip, amp=amp, confusion=cm)
        if world > 1:
            cm.all_reduce()
            scores = {**cm.compute(), "confusion": cm}
        history["eval_iteration"].append(iteration)
        history["mean_iou"].append(scores["mean_iou"])
        if callback is not None and rank == 0:
            callback(history)
        return scores

    bar = tqdm(total=stop, initial=start, desc=f"train {cfg.model}", disable=not cfg.progress or rank != 0,
               dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)
    steps_in_window, train_seconds, iteration = 0, 0.0, start
    good_iteration, scores = start, None
    model.train()
    if freeze_bn:
        _freeze_batchnorm(model)
    tick = time.perf_counter()
    for images, targets in loader:
        lr = poly_lr(cfg.lr, iteration, cfg.iterations, cfg.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast("cuda", enabled=amp):
            logits = _forward_logits(net, normalize(images))
        logits = upsample_logits(logits.float(), targets.shape[-2:], _output_stride(model))
        labelled = (targets != IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        iteration += 1
        loss_sum += loss.detach()
        steps_in_window += 1

        log_now = iteration % cfg.log_every == 0 or iteration == stop
        save_now = last_path is not None and rank == 0 and (
            (cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0) or iteration == stop)
        eval_now = (cfg.eval_every and iteration % cfg.eval_every == 0) or iteration == cfg.iterations
        if log_now or save_now or eval_now:
            mean_loss = float(loss_sum) / steps_in_window
            problem = None
            if not math.isfinite(mean_loss):
                problem = (f"training loss became {mean_loss} between iterations "
                           f"{iteration - steps_in_window + 1} and {iteration}")
            elif save_now and not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                problem = f"weights became non-finite at iteration {iteration}"
            if problem is not None:
                bar.close()
                kept = f"The last good checkpoint {last_path} (iteration {good_iteration}) is kept" \
                    if last_path is not None and last_path.exists() else "No checkpoint was written"
                raise FloatingPointError(f"{problem}; stopped. {kept}. Lower --lr (now {cfg.lr}) or check "
                                         f"the data, then --resume.")
            history["iteration"].append(iteration)
            history["loss"].append(mean_loss)
            history["lr"].append(lr)
            loss_sum.zero_()
            steps_in_window = 0
            bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
            if callback is not None and rank == 0 and log_now:
                callback(history)
        bar.update(1)
        if save_now or eval_now:
            train_seconds += time.perf_counter() - tick
        if save_now:
            save_checkpoint(checkpoint_state(iteration), last_path)
            good_iteration = iteration
        if eval_now:
            scores = run_eval(iteration)
            model.train()
            if freeze_bn:
                _freeze_batchnorm(model)
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", lr=f"{lr:.2e}", miou=f"{scores['mean_iou']:.3f}",
                            refresh=False)
        if save_now or eval_now:
            tick = time.perf_counter()
    train_seconds += time.perf_counter() - tick
    bar.close()

    model.eval()
    metrics: dict = {}
    final_path = None
    if iteration == cfg.iterations:
        if not history["eval_iteration"] or history["eval_iteration"][-1] != iteration or scores is None:
            scores = run_eval(iteration)
        metrics = _plain_metrics(scores)
        if out is not None and rank == 0:
            final = {"format": CHECKPOINT_FORMAT, "config": cfg.as_dict(), "model": model.state_dict(),
                     "iteration": iteration, "metrics": metrics, "history": history,
                     "torch_version": str(torch.__version__), "num_threads": torch.get_num_threads()}
            final_path = save_checkpoint(final, out / "model.pt")
    if out is not None and rank == 0:
        (out / "history.json").write_text(json.dumps({"config": cfg.as_dict(), "history": history,
                                                      "metrics": metrics}, indent=1) + "\n")
    steps = iteration - start
    return TrainResult(model=model, metrics=metrics, history=history, checkpoint=final_path,
                       train_seconds=train_seconds,
                       images_per_second=steps * cfg.batch_size * world / train_seconds if train_seconds > 0 else 0.0,
                       iteration=iteration)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``python -m deeplab_lessons.train`` argument parser (one option per :class:`TrainConfig` field)."""
    parser = argparse.ArgumentParser(
        prog="python -m deeplab_lessons.train",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=30),
        description="Train a DeepLab model on PASCAL VOC 2012 (or the embedded VOC-layout set) with the "
                    "papers' recipe: SGD, poly learning rate, 10x LR on the classifier, cross-entropy "
                    "ignoring label 255; then report mean IoU on the validation split. Defaults are the "
                    "CPU lesson run (a few minutes on 2 cores); --paper uses the GPU settings.",
        epilog="Examples:\n"
               "  python -m deeplab_lessons.train --model largefov --iters 600 --out runs/cpu\n"
               "  python -m deeplab_lessons.train --paper --data ~/VOCdevkit/VOC2012 --train-split trainaug "
               "--model aspp-l --out runs/aspp-l\n"
               "  python -m deeplab_lessons.train --out runs/cpu --resume      # continue after an interruption\n"
               "  torchrun --nproc_per_node 2 -m deeplab_lessons.train --out runs/ddp   # one process per GPU/CPU share")
    parser.add_argument("--paper", action="store_true",
                        help="start from the GPU/paper settings (width 1, crop 321, batch 10, 20k iterations, "
                             "lr 1e-3, ImageNet weights, multi-scale + flip evaluation) instead of the CPU ones")
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif f.type in ("bool | None",):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text + "; --no-... forces off")
        elif f.name == "eval_scales":
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str, "str | None": str, "int | None": int,
                    "float | None": float}[f.type]
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a :class:`TrainConfig` (unset options keep their defaults)."""
    args = vars(build_parser().parse_args(argv))
    paper = args.pop("paper")
    given = {k: v for k, v in args.items() if v is not None}
    if paper:
        return TrainConfig.from_settings(config.GPU_SETTINGS, **given)
    return TrainConfig(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: train, print the final scores (per-class IoU table on rank 0)."""
    cfg = config_from_args(argv)
    try:
        result = train(cfg)
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if _dist_env()[0] == 0 and result.metrics:
        m = result.metrics
        print(f"iterations {result.iteration}  train {result.train_seconds:.1f} s  "
              f"{result.images_per_second:.1f} images/s")
        print(f"mean IoU {m['mean_iou']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}  "
              f"mean accuracy {m['mean_accuracy']:.4f}")
        for name, iou in zip(VOC_CLASSES, m["iou"]):
            print(f"  {name:<12s} {iou:.4f}")
        if result.checkpoint is not None:
            print(f"model: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
