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
    """``[H, W, 3]`` (or ``[B, H, W, 3]``) uint8 -> ``[h, w, 3]`` (``[B, h, w, 3]``) uint8: the mean colour
    of the ``(stride+1)^2`` box centred on each score-map position ``(i * stride, j * stride)``."""
    batched = image.dim() == 4
    x = (image if batched else image[None]).permute(0, 3, 1, 2).to(torch.float32)
    k = output_stride + 1
    pooled = F.avg_pool2d(x, k, stride=output_stride, padding=output_stride // 2, count_include_pad=False)
    pooled = F.pad(pooled, (0, max(0, size[1] - pooled.shape[-1]), 0, max(0, size[0] - pooled.shape[-2])),
                   mode="replicate")[..., :size[0], :size[1]]
    out = pooled.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).contiguous()
    return out if batched else out[0]


def refine(image, logits: torch.Tensor, params: CRFParams | None = None, order: str = "upsample_first",
           output_stride: int = 8, backend: str = "torch") -> torch.Tensor:
    """Full-resolution class probabilities from stride-``output_stride`` logits + the CRF.

    ``image``: ``[H, W, 3]`` uint8 (numpy or torch); ``logits``: ``[C, h, w]`` network scores at
    ``output_stride`` (pre-softmax); returns ``[C, H, W]``. A batch of same-sized images
    (``[B, H, W, 3]`` with ``[B, C, h, w]`` logits, -> ``[B, C, H, W]``) runs as one batched mean
    field on the torch backend (one lattice per image, all images' messages in each operation:
    the GPU path of lessons 06 and 07); the other backends take the images one by one. The torch
    backend runs on the logits' device and the result stays there; the others run on the CPU.

    ``order="upsample_first"`` upsamples the logits bilinearly
    (:func:`~deeplab_lessons.models.common.upsample_logits`), takes the softmax and runs the CRF
    at full resolution; ``"crf_first"`` runs it on the ``h x w`` map with the image
    downsampled by :func:`downsample_image` and ``bi_xy_std``, ``pos_xy_std`` divided by the
    stride (the same physical widths), then upsamples the marginals bilinearly.
    """
    params = params if params is not None else CRFParams()
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    img = torch.as_tensor(image)
    if logits.dim() not in (3, 4) or img.dim() != logits.dim():
        raise ValueError(f"logits must be [C, h, w] with an [H, W, 3] image or [B, C, h, w] with [B, H, W, 3] "
                         f"images, got logits {tuple(logits.shape)} and image {tuple(img.shape)}")
    if img.dim() == 4 and img.shape[0] != logits.shape[0]:
        raise ValueError(f"{img.shape[0]} images but {logits.shape[0]} logit maps")
    if img.dim() == 4 and backend != "torch":
        return torch.stack([refine(i, l, params, order, output_stride, backend) for i, l in zip(img, logits)])
    dev = logits.device if backend == "torch" else torch.device("cpu")
    batch = logits.dim() == 4
    lg = (logits if batch else logits[None]).detach().to(dev, torch.float32)
    im = (img if batch else img[None]).to(dev)
    size = tuple(im.shape[1:3])
    if order == "upsample_first":
        probs = torch.softmax(upsample_logits(lg, size, output_stride), dim=1)
        q = dense_crf(im, probs, params, backend=backend)
    else:
        small = downsample_image(im, tuple(lg.shape[-2:]), output_stride)
        scaled = params.replace(bi_xy_std=params.bi_xy_std / output_stride,
                                pos_xy_std=params.pos_xy_std / output_stride)
        q = upsample_logits(dense_crf(small, torch.softmax(lg, dim=1), scaled, backend=backend), size, output_stride)
    return q if batch else q[0]
