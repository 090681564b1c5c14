"""Where the CRF goes in DeepLab: after upsampling (the papers) or before (a common simplification).

DeepLab v1/v2 (arXiv 1412.7062 sec. 4.2, arXiv 1606.00915 sec. 3.3) upsample the stride-8
score map bilinearly to the image and run the dense CRF at full resolution, where the
bilateral kernel sees the image's real edges. A cheaper reading runs the CRF on the stride-8
map itself (image box-filtered and sampled at the score map's centres, spatial widths divided
by the stride) and upsamples its marginals afterwards. :func:`refine` does either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeplab_lessons.models.common import upsample_logits

from .api import dense_crf
from .core import CRFParams

#: ``"upsample_first"``: the papers' order; ``"crf_first"``: CRF at stride 8, then upsample.
ORDERS = ("upsample_first", "crf_first")


def downsample_image(image: torch.Tensor, size: tuple[int, int], output_stride: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[h, w, 3]`` uint8: the mean colour of the ``(stride+1)^2`` box
    centred on each score-map position ``(i * stride, j * stride)``."""
    x = image.permute(2, 0, 1)[None].to(torch.float32)
    k = output_stride + 1
    pooled = F.avg_pool2d(x, k, stride=output_stride, padding=output_stride // 2, count_include_pad=False)
    pooled = F.pad(pooled, (0, max(0, size[1] - pooled.shape[-1]), 0, max(0, size[0] - pooled.shape[-2])),
                   mode="replicate")[..., :size[0], :size[1]]
    return pooled[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).contiguous()


def refine(image, logits: torch.Tensor, params: CRFParams | None = None, order: str = "upsample_first",
           output_stride: int = 8, backend: str = "torch") -> torch.Tensor:
    """Full-resolution class probabilities ``[C, H, W]`` from stride-``output_stride`` logits + the CRF.

    ``image``: ``[H, W, 3]`` uint8 (numpy or torch); ``logits``: ``[C, h, w]`` network scores at
    ``output_stride`` (pre-softmax). ``order="upsample_first"`` upsamples the logits bilinearly
    (:func:`~deeplab_lessons.models.common.upsample_logits`), takes the softmax and runs the CRF
    at full resolution; ``"crf_first"`` runs it on the ``h x w`` map with the image
    downsampled by :func:`downsample_image` and ``bi_xy_std``, ``pos_xy_std`` divided by the
    stride (the same physical widths), then upsamples the marginals bilinearly.
    """
    params = params if params is not None else CRFParams()
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    img = torch.as_tensor(image)
    if logits.dim() != 3:
        raise ValueError(f"logits must be [C, h, w], got shape {tuple(logits.shape)}")
    size = tuple(img.shape[:2])
    logits = logits.detach().to(torch.float32).cpu()
    if order == "upsample_first":
        probs = torch.softmax(upsample_logits(logits[None], size, output_stride)[0], dim=0)
        return dense_crf(img.cpu(), probs, params, backend=backend)
    small = downsample_image(img.cpu(), tuple(logits.shape[-2:]), output_stride)
    scaled = params.replace(bi_xy_std=params.bi_xy_std / output_stride, pos_xy_std=params.pos_xy_std / output_stride)
    q = dense_crf(small, torch.softmax(logits, dim=0), scaled, backend=backend)
    return upsample_logits(q[None], size, output_stride)[0]
