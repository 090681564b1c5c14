"""The bottom of the CRF package: parameters, input checks, kernel normalisation and mean field.

Every backend (:mod:`.torch_backend`, :mod:`.naive`, :mod:`.pydensecrf_backend`) builds on this
module and on nothing above it; :mod:`.api` dispatches between them.

The model, after Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials" (NIPS 2011, arXiv 1210.5644), used by DeepLab v1 (arXiv 1412.7062, sec. 4.2) and
v2 (arXiv 1606.00915, sec. 3.3) on the bilinearly upsampled softmax. The energy of a labelling
``x`` is

    E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) [ w1 exp(-|p_i-p_j|^2/(2 theta_alpha^2)
                                                           - |I_i-I_j|^2/(2 theta_beta^2))
                                                      + w2 exp(-|p_i-p_j|^2/(2 theta_gamma^2)) ]

with ``psi_u(x_i) = -log P(x_i)`` from the network and the Potts compatibility
``mu(l, l') = [l != l']``. Mean field approximates P(x) by a product Q(x) = prod_i Q_i(x_i)
and iterates

    Q_i(l) <- softmax_l( -psi_u(l) + sum_m w_m sum_j k~_m(i, j) Q_j(l) )

where ``k~_m`` is kernel m normalised by its row sums ``D = diag(K 1)``, one of two ways
(``CRFParams.normalization``):

- ``"after"``: ``k~ = D^-1 K``, each pixel's message a weighted *average* of its neighbours'
  marginals. This is what DeepLab ran: deeplab-public ships Krähenbühl's 2011 densecrf code,
  whose kernels normalise this way (densecrf's ``NORMALIZE_AFTER``).
- ``"symmetric"``: ``k~ = D^-1/2 K D^-1/2`` (``NORMALIZE_SYMMETRIC``), the default of the 2013
  densecrf release and so of pydensecrf. The matrix stays symmetric, but its rows no longer sum
  to 1: row ``i`` sums to ``sum_j K_ij / sqrt(d_i d_j)``, above 1 where a pixel is better
  connected than its neighbours, below 1 where it is less (a rare colour next to common ones).

Every number
means what it means in pydensecrf's ``DenseCRF2D``: ``bi_w`` = w1 (``compat`` of
``addPairwiseBilateral``), ``bi_xy_std`` = theta_alpha (``sxy``), ``bi_rgb_std`` = theta_beta
(``srgb``), ``pos_w`` = w2, ``pos_xy_std`` = theta_gamma, all in pixels and 0-255 intensity units.

Like densecrf's code (not the paper's formula), the sum over j includes j = i: the lattice
filter returns each pixel's own value with the rest, and neither implementation subtracts it.
The ``naive`` backend can drop it (``include_self=False``) to show how little that changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

#: Kernel normalisations: DeepLab's ``D^-1 K`` and pydensecrf's default ``D^-1/2 K D^-1/2``.
NORMALIZATIONS = ("after", "symmetric")

#: Probabilities are clipped to this before the log, as pydensecrf's ``unary_from_softmax``.
PROB_CLIP = 1e-5


#: The narrowest kernel width :class:`CRFParams` accepts (pixels, or intensity levels for ``bi_rgb_std``):
#: far below one pixel a kernel couples nothing, and the lattice's coordinates would leave float32's range.
MIN_KERNEL_WIDTH = 1e-3


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters, each with its pydensecrf meaning (DeepLab v1 LargeFOV defaults).

    - ``pos_w`` (w2): weight of the smoothness kernel (``addPairwiseGaussian(compat=...)``)
    - ``pos_xy_std`` (theta_gamma): its spatial width, pixels
    - ``bi_w`` (w1): weight of the appearance kernel (``addPairwiseBilateral(compat=...)``)
    - ``bi_xy_std`` (theta_alpha): its spatial width, pixels
    - ``bi_rgb_std`` (theta_beta): its colour width, 0-255 intensity units
    - ``iterations``: mean-field iterations
    - ``normalization``: ``"after"`` (``D^-1 K``, DeepLab's densecrf) or ``"symmetric"``
      (``D^-1/2 K D^-1/2``, pydensecrf's default); see the module docstring

    DeepLab v2 with ResNet-101 used ``bi_w=4, bi_xy_std=67, bi_rgb_std=3, pos_w=3, pos_xy_std=1``.
    """

    pos_w: float = 3.0
    pos_xy_std: float = 3.0
    bi_w: float = 4.0
    bi_xy_std: float = 121.0
    bi_rgb_std: float = 5.0
    iterations: int = 10
    normalization: str = "after"

    def __post_init__(self):
        if not isinstance(self.normalization, str) or self.normalization not in NORMALIZATIONS:
            raise ValueError(f"CRFParams.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        for name in ("pos_w", "bi_w"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CRFParams.{name} must be a finite weight >= 0, got {value!r}")
        for name in ("pos_w", "bi_w", "pos_xy_std", "bi_xy_std", "bi_rgb_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"CRFParams.{name} must be a number, got {value!r}")
        for name in ("pos_w", "bi_w"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CRFParams.{name} must be a finite weight >= 0, got {value!r}")
        for name in ("pos_xy_std", "bi_xy_std", "bi_rgb_std"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < MIN_KERNEL_WIDTH:
                raise ValueError(f"CRFParams.{name} must be a finite kernel width >= {MIN_KERNEL_WIDTH:g} "
                                 f"({'intensity levels' if 'rgb' in name else 'pixels'}), got {value!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, (int, np.integer)) \
                or self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be an integer >= 0, got {self.iterations!r}")

    def replace(self, **changes) -> "CRFParams":
        """A copy with some fields changed (``params.replace(bi_w=5)``)."""
        return replace(self, **changes)


# ----------------------------------------------------------------------------------------------
# Input handling


def as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def check_image(image) -> torch.Tensor:
    """``[H, W, 3]`` or ``[B, H, W, 3]`` uint8 -> ``[B, H, W, 3]`` uint8 tensor."""
    img = as_tensor(image, "image")
    if img.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 RGB (0-255), got dtype {img.dtype}; "
                         "convert with (image * 255).round().astype(np.uint8) if it is in [0, 1]")
    if img.dim() == 3:
        img = img.unsqueeze(0)
    if img.dim() != 4 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] (or [B, H, W, 3]) RGB, got shape {tuple(img.shape)}")
    return img


def check_probs(probs, image: torch.Tensor | None) -> torch.Tensor:
    """``[C, H, W]`` or ``[B, C, H, W]`` probabilities summing to 1 over C -> ``[B, C, H, W]``."""
    p = as_tensor(probs, "probs")
    if not torch.is_floating_point(p):
        raise ValueError(f"probs must be floating point probabilities, got dtype {p.dtype}")
    if p.dim() == 3:
        p = p.unsqueeze(0)
    if p.dim() != 4:
        raise ValueError(f"probs must be [C, H, W] (or [B, C, H, W]), got shape {tuple(p.shape)}")
    if image is not None and (p.shape[0], *p.shape[2:]) != (image.shape[0], *image.shape[1:3]):
        raise ValueError(f"probs {tuple(p.shape)} and image {tuple(image.shape)} disagree: "
                         "probs must be [C, H, W] with the image's H and W (upsample the scores first)")
    with torch.no_grad():
        low, high = torch.aminmax(p) if p.numel() else (p.new_zeros(()), p.new_zeros(()))   # one pass; NaN propagates
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError("probs contains NaN or inf")
        if low < 0:
            raise ValueError("probs must be >= 0 (pass softmax probabilities, not logits)")
        sums = p.sum(dim=1)
        worst = float((sums - 1).abs().max())
        if worst > 1e-3:
            raise ValueError(f"probs must sum to 1 over the class axis (dim 0 of [C, H, W]); "
                             f"largest deviation {worst:.3g} (apply softmax over classes first)")
    return p


def unary_from_probs(probs: torch.Tensor, clip: float = PROB_CLIP, classes_last: bool = False) -> torch.Tensor:
    """Unary energy ``-log(max(p, clip))`` (same shape), as pydensecrf's ``unary_from_softmax``.

    The clip keeps zero probabilities finite (energy ``-log(1e-5) = 11.5``). With ``classes_last``, ``[C, H, W]``
    or ``[B, C, H, W]`` probabilities give energies of the same shape stored with each pixel's C values side by
    side (the ``[pixels, C]`` rows that mean field works on, a view away), in one pass and no other buffer.
    """
    if not classes_last or probs.dim() < 3 or (torch.is_grad_enabled() and probs.requires_grad):
        energy = -torch.log(probs.clamp_min(clip))
        return energy if not classes_last else energy.movedim(-3, -1).contiguous().movedim(-1, -3)
    out = torch.empty(probs.movedim(-3, -1).shape, dtype=probs.dtype, device=probs.device).movedim(-1, -3)
    return torch.clamp_min(probs, clip, out=out).log_().neg_()


def to_kind(result: torch.Tensor, like) -> np.ndarray | torch.Tensor:
    """Return ``result`` as the same array kind (numpy/torch), dtype and device as ``like``."""
    if isinstance(like, np.ndarray):
        return result.detach().cpu().numpy().astype(like.dtype, copy=False)
    return result.to(device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------------------------
# Mean field, independent of how the kernels are computed


@dataclass
class Kernel:
    """One pairwise term: weight w and the normalised filter ``v -> k~ v`` ([P, C]).

    ``peak`` is the largest entry of ``k~ 1`` (1 for ``D^-1 K``), so every message ``w k~ Q`` lies
    in ``[0, w * peak]``; it decides whether the softmax needs its max-subtraction.
    """

    weight: float
    filter_fn: Callable[[torch.Tensor], torch.Tensor]
    peak: float

    def add_message(self, energy: torch.Tensor, q: torch.Tensor, inplace: bool = True) -> torch.Tensor:
        """``energy + w k~ q`` for [P, C] tensors: into ``energy`` when ``inplace`` and nothing needs gradients, else
        into the filter's output when that is a new buffer of ``energy``'s type (never into ``q``)."""
        filtered = self.filter_fn(q)
        if torch.is_grad_enabled() and (energy.requires_grad or filtered.requires_grad):
            return energy + self.weight * filtered
        if inplace:
            return energy.add_(filtered, alpha=self.weight)
        if (filtered.dtype == energy.dtype and filtered.shape == energy.shape
                and filtered.untyped_storage().data_ptr() != q.untyped_storage().data_ptr()):
            return torch.add(energy, filtered, alpha=self.weight, out=filtered)   # a fresh buffer: one pass, no new one
        return energy + self.weight * filtered


def kernel_norm(filter_fn: Callable[[torch.Tensor], torch.Tensor], num_rows: int, normalization: str,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors ``(before, after)``, ``[P, 1]`` columns, that make ``diag(after) K diag(before)``
    the normalised kernel: ``(1, 1 / (K 1))`` for ``"after"``, ``(D^-1/2, D^-1/2)`` for ``"symmetric"``.

    As densecrf's ``DenseKernel::initLattice``: ``D = K 1`` (plus 1e-20), computed with the
    unnormalised filter ``filter_fn``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    with torch.no_grad():
        degree = filter_fn(torch.ones(num_rows, 1, device=device, dtype=dtype)) + 1e-20
    if normalization == "after":
        return torch.ones_like(degree), 1.0 / degree
    root = 1.0 / torch.sqrt(degree)
    return root, root


def make_kernel(weight: float, normalised_fn: Callable[[torch.Tensor], torch.Tensor], num_rows: int,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Kernel:
    """A :class:`Kernel` from an already normalised filter (measures its ``peak``)."""
    with torch.no_grad():
        peak = float(normalised_fn(torch.ones(num_rows, 1, device=device, dtype=dtype)).max())
    return Kernel(float(weight), normalised_fn, peak)


def _softmax_rows(energy: torch.Tensor, shift_free: bool, owned: bool = False) -> torch.Tensor:
    """Softmax over the class axis of [P, C]; skips the max-subtraction when ``shift_free``; overwrites
    ``energy`` when ``owned`` (a buffer no one else holds) and nothing needs gradients."""
    if not shift_free:
        return torch.softmax(energy, dim=1)
    if torch.is_grad_enabled() and energy.requires_grad:
        e = energy.exp()
        return e / e.sum(dim=1, keepdim=True)
    e = energy.exp_() if owned else energy.exp()
    return e.div_(e @ e.new_ones(e.shape[1], 1))          # row sums as a matrix product: twice as fast as sum(dim=1)


def mean_field(unary: torch.Tensor, kernels: Sequence[Kernel], iterations: int) -> Iterator[torch.Tensor]:
    """Yield Q after each mean-field iteration; ``unary`` is [P, C] energies, Q is [P, C].

    Q starts at ``softmax(-unary)``; each step is
    ``Q <- softmax(-unary + sum_m w_m k~_m Q)`` (Potts compatibility: a label is rewarded by the
    kernel-weighted mass of the same label around it), densecrf's ``DenseCRF::inference``.
    """
    kernels = [k for k in kernels if k.weight != 0]
    # Softmax ignores a per-pixel constant: shift -unary so its largest entry is 0. Messages are
    # >= 0 and at most sum_m w_m peak_m, so when that is small exp() cannot overflow, the best
    # label keeps exp >= 1, and the max-subtraction inside the softmax can be skipped.
    unary = unary.contiguous()
    neg = unary.detach().amin(dim=1, keepdim=True) - unary        # -unary shifted by its row maximum: two passes
    shift_free = sum(k.weight * k.peak for k in kernels) < 60.0
    q = _softmax_rows(neg, shift_free)
    for _ in range(iterations):
        energy = neg
        for i, kernel in enumerate(kernels):     # the first message writes a new buffer, the others add to it
            energy = kernel.add_message(energy, q, inplace=i > 0)
        q = _softmax_rows(energy, shift_free, owned=energy is not neg)
        yield q
