"""The exact fully connected CRF: every pixel pair summed explicitly, O(N^2) per iteration.

The reference the fast backends are tested against, and the version a learner can read in
one screen: kernel matrices ``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` over the same scaled
features (Krähenbühl & Koltun 2011, eq. 3), the same normalisation (``CRFParams.normalization``) and the same
mean-field loop (:func:`.core.mean_field`) as the permutohedral backend. Small images only.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .core import (CRFParams, Kernel, check_image, check_probs, kernel_norm, make_kernel, mean_field,
                  unary_from_probs)
from .lattice import lattice_features


#: Largest image (pixels) the naive backend accepts: its kernel matrices are N x N float64.
MAX_PIXELS = 4096


def gaussian_kernel_matrix(features: torch.Tensor, include_self: bool = True) -> torch.Tensor:
    """``K[i, j] = exp(-|f_i - f_j|^2 / 2)`` for features ``[N, d]``; float64 ``[N, N]``.

    ``include_self=False`` zeroes the diagonal (the paper's sum over j != i).
    """
    f = features.to(torch.float64)
    sq = (f * f).sum(dim=1)
    dist2 = (sq[:, None] + sq[None, :] - 2.0 * f @ f.T).clamp_min(0.0)
    k = torch.exp(-0.5 * dist2)
    if not include_self:
        k.fill_diagonal_(0.0)
    return k


def naive_kernels(image: torch.Tensor, params: CRFParams, include_self: bool = True) -> list[Kernel]:
    """The bilateral and Gaussian pairwise terms of one ``[H, W, 3]`` uint8 image as dense matrices."""
    height, width = image.shape[:2]
    if height * width > MAX_PIXELS:
        raise ValueError(f"the naive backend sums over all pixel pairs: at most {MAX_PIXELS} pixels, "
                         f"got {height}x{width}; use backend='torch' for larger images")
    terms = []
    if params.bi_w != 0:
        feats = lattice_features(image.unsqueeze(0), height, width, params.bi_xy_std, params.bi_rgb_std)[0]
        terms.append((params.bi_w, gaussian_kernel_matrix(feats, include_self)))
    if params.pos_w != 0:
        feats = lattice_features(None, height, width, params.pos_xy_std, device=image.device)[0]
        terms.append((params.pos_w, gaussian_kernel_matrix(feats, include_self)))
    out = []
    for weight, matrix in terms:
        before, after = kernel_norm(matrix.__matmul__, height * width, params.normalization, image.device,
                                    torch.float64)
        out.append(make_kernel(weight, (after * matrix * before.T).__matmul__, height * width, image.device,
                               torch.float64))
    return out


def naive_steps(image, probs, params: CRFParams | None = None, include_self: bool = True) -> Iterator[torch.Tensor]:
    """Yield the exact mean-field marginals ``[B, C, H, W]`` (float64) after each iteration.

    ``image`` ``[H, W, 3]`` / ``[B, H, W, 3]`` uint8 and ``probs`` ``[C, H, W]`` / ``[B, C, H, W]``,
    as :func:`.api.dense_crf`. Images of a batch are run one after the other.
    """
    params = params if params is not None else CRFParams()
    img = check_image(image)
    p = check_probs(probs, img)
    b, c, h, w = p.shape
    runs = []
    for i in range(b):
        unary = unary_from_probs(p[i].to(torch.float64)).permute(1, 2, 0).reshape(h * w, c).contiguous()
        runs.append(mean_field(unary, naive_kernels(img[i].to(p.device), params, include_self),
                               int(params.iterations)))
    for qs in zip(*runs):
        yield torch.stack([q.reshape(h, w, c).permute(2, 0, 1) for q in qs])
