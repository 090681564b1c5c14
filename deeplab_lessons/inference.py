"""Inference: from ``uint8`` images to class probabilities, labels and a validation score.

One place for the sequence every lesson, the trainer and the benchmarks run: ImageNet-normalise
(:func:`deeplab_lessons.models.normalize`), forward in eval mode, bring the stride-``s`` logits to
image size (:func:`deeplab_lessons.models.upsample_logits`), softmax; optionally averaged over
input scales and a left-right flip (v3's evaluation, arXiv 1706.05587 Table 6).
:func:`evaluate` scores whole images with one confusion matrix over the data set.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deeplab_lessons.data.palette import IGNORE_INDEX
from deeplab_lessons.metrics import ConfusionMatrix
from deeplab_lessons.models.common import normalize, upsample_logits
from deeplab_lessons.models.msc import check_scales, unwrap_msc

__all__ = ["forward_logits", "output_stride_of", "at_output_stride", "predict_proba", "predict", "evaluate"]


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, or its ``"out"`` entry when the model returns a dict (torchvision's models)."""
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


def output_stride_of(model: nn.Module) -> int:
    """Input pixels per logit of ``model`` (inside ``DistributedDataParallel`` too)."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    stride = getattr(inner, "output_stride", None)
    if stride is None:
        raise ValueError("model has no output_stride attribute (input pixels per logit)")
    return int(stride)


@contextlib.contextmanager
def at_output_stride(model: nn.Module, stride: int | None, name: str = "this model"):
    """Run the block with ``model`` (v3/v3+, through an MSC wrapper too) at output stride ``stride``,
    then put it back at the stride it had; ``None`` changes nothing."""
    if stride is None:
        yield model
        return
    inner = unwrap_msc(model)
    if not hasattr(inner, "set_output_stride"):
        raise ValueError(f"eval_output_stride={stride}: model {name} cannot change its output stride "
                         "(only v3 / v3+ can)")
    previous = inner.backbone.output_stride
    model.set_output_stride(stride)
    try:
        yield model
    finally:
        model.set_output_stride(previous)


def autocast_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The mixed-precision type for a CUDA ``device`` (default: the current one): ``bfloat16`` where the
    card computes it natively (compute capability 8.0 on: A100, L4, H100; no gradient scaling needed),
    else ``float16`` (T4, V100: the trainer adds a gradient scaler). ``torch.cuda.is_bf16_supported()``
    alone is not the test: it also says yes where bfloat16 is only emulated, slowly."""
    if not torch.cuda.is_available():
        return torch.float16
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
                  flip: bool = False, amp: bool = False) -> torch.Tensor:
    """Class probabilities at full image resolution, averaged over input scales and flips.

    Each scale ``s`` resizes the batch to ``round(s * H) x round(s * W)`` (bilinear), runs the
    model, upsamples the logits to ``H x W`` and takes the softmax; with ``flip`` the mirrored
    batch is scored too and mirrored back. The probabilities are averaged: DeepLab v3's evaluation
    with "multi-scale inputs" and "left-right flipped inputs" (arXiv 1706.05587, Table 6). It is
    not v2's MSC, which fuses the scales by a max and trains them jointly.

    Args:
        model: a model whose logits come out at ``model.output_stride``; run in eval mode here.
        images: ``uint8`` ``[N, 3, H, W]`` (or ``[3, H, W]``) RGB (moved to the model's device).
        scales: input scales, e.g. ``(0.5, 0.75, 1.0)``.
        flip: add left-right flipped inputs.
        amp: run the forward passes under CUDA autocast.

    Returns:
        ``float32`` probabilities ``[N, C, H, W]`` (``[C, H, W]`` for one image), summing to 1 over C.
    """
    scales = check_scales(scales, first_is_one=False)
    single = images.ndim == 3
    x = normalize(images[None] if single else images)
    param = next(model.parameters(), None)
    x = x.to(param.device) if param is not None else x
    height, width = x.shape[-2:]
    stride = output_stride_of(model)
    was_training = model.training
    model.eval()
    total = None
    try:
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            xs = x if size == (height, width) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if flip else (False,)):
                inp = xs.flip(-1) if mirrored else xs
                with torch.autocast("cuda", dtype=autocast_dtype(x.device) if x.is_cuda else torch.float16,
                                    enabled=amp and x.is_cuda):
                    logits = forward_logits(model, inp)
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


def predict(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
            amp: bool = False) -> torch.Tensor:
    """Label map for each image: :func:`predict_proba` (normalise, forward in eval mode, upsample
    the logits, softmax), then the most probable class.

    Returns ``int64`` labels ``[H, W]`` or ``[N, H, W]`` on the model's device; the model's
    train/eval mode is restored afterwards.
    """
    return predict_proba(model, images, scales=scales, flip=flip, amp=amp).argmax(dim=-3)


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
