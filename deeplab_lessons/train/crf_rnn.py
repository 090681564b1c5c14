"""Training the CRF as RNN (Zheng et al. 2015; lesson 08): the dense CRF's weights learnt by backpropagation.

Three modes, the same loop, the same images and the same number of steps:

- ``"crf"``: only the CRF's parameters (:class:`~deeplab_lessons.crf.CRFasRNN`: two kernel weights
  and the ``C x C`` compatibility) learn, on top of a frozen network. The network's logits of a
  training image are computed once and reused.
- ``"end-to-end"``: network and CRF learn together, the loss on the CRF's output only (the
  paper's protocol, its Sec. 5: 5 mean-field iterations in training, 10 at test time).
- ``"network"``: the network alone is fine-tuned, the loss on its own upsampled logits: the control
  that tells what end-to-end training gains from the CRF rather than from more training.

The loss is the per-pixel cross-entropy of the (refined) logits at image size, 255 (void) ignored.
Optimiser: Adam, the CRF's parameters at :attr:`CRFTraining.crf_lr`, the network's at
:attr:`CRFTraining.network_lr` (a tenth of the lesson's base rate; the paper used SGD at a fixed tiny
rate on an unnormalised loss). BatchNorm statistics stay frozen while the network is fine-tuned (as v3
does when it fine-tunes at a small batch), dropout stays as the network was trained. Whole images, no
augmentation (the paper trained on whole 500 x 500 padded images).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from deeplab_lessons.crf import CRFasRNN
from deeplab_lessons.data.palette import IGNORE_INDEX
from deeplab_lessons.inference import forward_logits, output_stride_of
from deeplab_lessons.metrics import ConfusionMatrix
from deeplab_lessons.models.common import normalize, upsample_logits

#: What learns: the CRF alone, network and CRF together, or the network alone (the control).
CRF_TRAINING_MODES = ("crf", "end-to-end", "network")


@dataclass(frozen=True)
class CRFTraining:
    """How a CRF as RNN is trained (:func:`train_crf_as_rnn`).

    ``steps`` optimiser steps of ``batch_size`` whole training images (drawn without replacement,
    reshuffled every pass, from ``seed``); ``train_iterations`` mean-field steps during training
    (the paper's 5; testing uses the layer's own ``iterations``, set by the caller: the paper's 10);
    ``eval_every`` steps between evaluations of the learning curve (0: none).
    """

    mode: str = "crf"
    steps: int = 100
    batch_size: int = 4
    crf_lr: float = 0.01
    network_lr: float = 5e-5
    train_iterations: int = 5
    seed: int = 0
    eval_every: int = 0

    def __post_init__(self) -> None:
        if self.mode not in CRF_TRAINING_MODES:
            raise ValueError(f"mode must be one of {CRF_TRAINING_MODES}, got {self.mode!r}")
        for name in ("steps", "batch_size", "train_iterations", "seed", "eval_every"):
            value = getattr(self, name)
            low = 1 if name in ("steps", "batch_size") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("crf_lr", "network_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CRFTrainResult:
    """What :func:`train_crf_as_rnn` returns: the trained layers, the loss per step, the learning
    curve (``[{"step", "mean_iou"}]`` from the ``evaluate`` callback) and the cost."""

    crf: CRFasRNN
    model: nn.Module
    losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    seconds_per_step: float = math.nan
    seconds_per_image: float = math.nan


def _freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def upsampled_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The network's scores for uint8 images ``[B, 3, H, W]``, bilinearly upsampled to ``[B, C, H, W]``."""
    logits = forward_logits(model, normalize(images))
    return upsample_logits(logits.float(), tuple(images.shape[-2:]), output_stride_of(model))


@torch.no_grad()
def refined_miou(model: nn.Module, crf: CRFasRNN | None, pairs: Sequence) -> float:
    """Mean IoU (one confusion matrix) of ``crf`` applied to ``model``'s upsampled scores over ``(image [3, H, W]
    uint8, target [H, W])`` pairs, on ``crf``'s device; ``crf=None`` scores the network alone. Both must be in the
    state to score (e.g. eval mode); the learning-curve callback of :func:`train_crf_as_rnn`."""
    device = next(model.parameters()).device
    cm = None
    for image, target in pairs:
        image = torch.as_tensor(image).to(device)
        scores = upsampled_logits(model, image[None])
        if crf is not None:
            scores = crf(image.permute(1, 2, 0)[None].contiguous(), scores)
        cm = cm if cm is not None else ConfusionMatrix(scores.shape[1], IGNORE_INDEX)
        cm.update(scores[0].argmax(0).cpu(), torch.as_tensor(target))
    if cm is None:
        raise ValueError("refined_miou: no (image, target) pairs to score")
    return float(cm.compute()["mean_iou"])


def _batches(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of sample indices: passes over a seeded permutation, reshuffled each pass."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += torch.randperm(count, generator=g).tolist()
    return [order[k * batch_size:(k + 1) * batch_size] for k in range(steps)]


def train_crf_as_rnn(model: nn.Module, crf: CRFasRNN, data: Sequence, cfg: CRFTraining = CRFTraining(),
                     evaluate: Callable[[nn.Module, CRFasRNN], float] | None = None,
                     log: Callable[[str], None] | None = None) -> CRFTrainResult:
    """Train ``crf`` (and, in the modes that say so, ``model``) on ``data`` as :class:`CRFTraining` says.

    Args:
        model: the network (its ``output_stride`` attribute places its logits), trained already.
        crf: the layer to train; its ``iterations`` is set to ``cfg.train_iterations`` during training
            and restored afterwards.
        data: a sequence of ``(image [3, H, W] uint8, target [H, W])`` pairs of one size (e.g.
            :class:`~deeplab_lessons.data.VOCSegmentation`).
        evaluate: called as ``evaluate(model, crf)`` (both in eval mode, the test-time iterations) before
            the first step and every ``cfg.eval_every`` steps; returns a mean IoU for the learning curve.
        log: called with one line per evaluation.

    The layers are updated in place and returned in eval mode.
    """
    if len(data) == 0:
        raise ValueError("train_crf_as_rnn: the training data is empty")
    sizes = {tuple(data[i][0].shape[-2:]) for i in range(min(len(data), 64))}
    if len(sizes) > 1:
        raise ValueError(f"train_crf_as_rnn trains on whole images of one size; the data has sizes {sorted(sizes)}")
    device = next(crf.parameters()).device
    torch.manual_seed(cfg.seed)
    learn_net, learn_crf = cfg.mode in ("end-to-end", "network"), cfg.mode in ("crf", "end-to-end")
    groups = []
    if learn_crf:
        groups.append({"params": list(crf.parameters()), "lr": cfg.crf_lr})
    if learn_net:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.network_lr})
    optimizer = torch.optim.Adam(groups)
    cached: dict[int, torch.Tensor] = {}            # frozen network: its logits of each image, computed once
    test_iterations = crf.iterations
    result = CRFTrainResult(crf, model)

    def record(step: int) -> None:
        if evaluate is None:
            return
        model.eval()
        crf.eval()
        with torch.no_grad():
            miou = float(evaluate(model, crf))
        result.history.append({"step": step, "mean_iou": round(miou, 5)})
        if log is not None:
            log(f"  step {step:>4}: validation mIoU {100 * miou:.2f}")

    record(0)
    busy = 0.0
    for step, batch in enumerate(_batches(len(data), cfg.batch_size, cfg.steps, cfg.seed), start=1):
        pairs = [data[i] for i in batch]
        images = torch.stack([torch.as_tensor(p[0]) for p in pairs]).to(device)
        targets = torch.stack([torch.as_tensor(p[1]).long() for p in pairs]).to(device)
        if not learn_net:                           # the frozen network's scores: not part of a step's cost
            model.eval()
            with torch.no_grad():
                for i, image in zip(batch, images):
                    if i not in cached:
                        cached[i] = upsampled_logits(model, image[None])[0]
        start = time.perf_counter()
        if learn_net:
            model.train()
            _freeze_batchnorm(model)
            logits = upsampled_logits(model, images)
        else:
            logits = torch.stack([cached[i] for i in batch])
        if cfg.mode == "network":
            out = logits
        else:
            crf.train()
            crf.iterations = cfg.train_iterations
            try:
                out = crf(images.permute(0, 2, 3, 1).contiguous(), logits)
            finally:
                crf.iterations = test_iterations
        loss = nn.functional.cross_entropy(out, targets, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"CRF as RNN training: the loss became {float(loss)} at step {step}; "
                                     "lower crf_lr / network_lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        busy += time.perf_counter() - start
        result.losses.append(float(loss.detach()))
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            record(step)
    if cfg.eval_every and evaluate is not None and result.history[-1]["step"] != cfg.steps:
        record(cfg.steps)
    result.seconds_per_step = busy / cfg.steps
    result.seconds_per_image = busy / (cfg.steps * cfg.batch_size)
    model.eval()
    crf.eval()
    return result
