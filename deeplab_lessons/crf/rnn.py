"""CRF as RNN (Zheng et al. 2015, arXiv 1502.03240): the dense CRF's mean field as trainable layers.

One mean-field iteration is a stack of differentiable steps (the paper's Sec. 4, Fig. 1):

1. *message passing*: filter the current marginals ``Q`` with each Gaussian kernel (here the
   permutohedral lattice of :mod:`.lattice`, normalised as :class:`~.core.CRFParams` says);
2. *weighting*: add the filtered maps with the kernel weights ``w_m`` (learnt, kept positive);
3. *compatibility transform*: mix the labels with a ``C x C`` matrix (learnt);
4. *adding the unary*: ``logits_t = -U + (sum_m w_m k~_m Q) R^T``;
5. *normalising*: ``Q = softmax(logits_t)``.

``R`` is a *reward* matrix: entry ``R[l, l']`` is how much mass of label ``l'`` nearby raises label ``l``.
The identity is the Potts model of DeepLab's CRF (Potts penalises every other label by the same
amount, ``sum_l' k~Q_l' - k~Q_l``; the sum is the same for every label of a pixel, and softmax ignores
it), so at initialisation :class:`CRFasRNN` computes exactly :func:`~.api.dense_crf`'s mean field.
The kernel widths stay fixed: which lattice cell a pixel falls in is not differentiable in them.

Where this layer departs from the paper: its two kernel weights are shared by all labels (the paper
learns one weight per label and kernel, its Sec. 4.3) and kept positive; its messages include each
pixel's own term, as ``densecrf`` and :func:`~.api.dense_crf` do (the paper's Algorithm 1 sums over
``j != i``), which is what makes it equal to the lessons' CRF at initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .core import CRFParams
from .torch_backend import DenseCRF


class CRFasRNN(nn.Module):
    """The dense CRF as a layer with learnable kernel weights and label compatibility.

    ``forward(images, logits)``: ``images`` ``[B, H, W, 3]`` uint8, ``logits`` ``[B, C, H, W]`` at the
    images' size (e.g. upsampled network scores); returns refined logits ``[B, C, H, W]`` whose softmax
    is the CRF's marginals after :attr:`iterations` mean-field steps. Runs on the logits' device; the
    lattices are built per call (they depend on the images), without gradients.

    Learnable: :attr:`log_weights` (``log w1, log w2``: the appearance and smoothness kernels' weights,
    positive by construction) and :attr:`compatibility` (``C x C``, identity = Potts). At
    initialisation the softmax of the output equals ``dense_crf(image, softmax(logits), params)``
    (torch backend) up to the probability clip ``dense_crf`` applies below 1e-5.

    Args:
        num_classes: labels C.
        params: widths, normalisation and initial weights (DeepLab's released values by default); its
            ``iterations`` is not used.
        iterations: mean-field steps (CRF as RNN trains with 5 and tests with 10; set the attribute).
    """

    def __init__(self, num_classes: int, params: CRFParams | None = None, iterations: int = 5) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        self.params = params if params is not None else CRFParams()
        if not isinstance(self.params, CRFParams):
            raise TypeError(f"params must be a CRFParams, got {type(self.params).__name__}")
        weights = [self.params.bi_w, self.params.pos_w]
        # a zero weight starts at exp(-30): that kernel is off, yet it can still learn
        self.log_weights = nn.Parameter(torch.tensor([math.log(w) if w > 0 else -30.0 for w in weights]))
        self.compatibility = nn.Parameter(torch.eye(num_classes))
        self.num_classes = num_classes
        self.iterations = iterations

    @property
    def weights(self) -> torch.Tensor:
        """The kernel weights ``(w1, w2)`` (appearance, smoothness), positive."""
        return self.log_weights.exp()

    def current_params(self) -> CRFParams:
        """:class:`CRFParams` with the learnt kernel weights (the compatibility is not a CRFParams field)."""
        w1, w2 = (float(w) for w in self.weights.detach())
        return self.params.replace(bi_w=w1, pos_w=w2, iterations=self.iterations)

    def _check(self, images: torch.Tensor, logits: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or not isinstance(logits, torch.Tensor):
            raise TypeError("images and logits must be torch tensors")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3] uint8, got {tuple(images.shape)} {images.dtype}")
        if not logits.is_floating_point() or logits.dim() != 4:
            raise ValueError(f"logits must be [B, C, H, W] floats, got {tuple(logits.shape)} {logits.dtype}")
        b, c, h, w = logits.shape
        if c != self.num_classes:
            raise ValueError(f"logits have {c} classes, this CRF {self.num_classes}")
        if (b, h, w) != tuple(images.shape[:3]):
            raise ValueError(f"logits {tuple(logits.shape)} do not match images {tuple(images.shape)}: give logits "
                             "at the images' size (upsample the network's scores first)")

    def forward(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        self._check(images, logits)
        b, c, h, w = logits.shape
        p = self.params
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32   # the lattice's precision
        with torch.no_grad():
            crf = DenseCRF(images, p, device=logits.device)
            lattices = [crf.normalised_lattice(p.bi_xy_std, p.bi_rgb_std, p.normalization)[0],
                        crf.normalised_lattice(p.pos_xy_std, None, p.normalization)[0]]
        with torch.autocast(logits.device.type, enabled=False):
            neg_unary = torch.log_softmax(logits.to(dtype), dim=1).permute(0, 2, 3, 1).reshape(b * h * w, c)
            weights, compat = self.weights.to(dtype), self.compatibility.to(dtype)
            energy = neg_unary
            for _ in range(self.iterations):
                q = torch.softmax(energy, dim=1)
                messages = sum(wm * lat.filter(q) for wm, lat in zip(weights, lattices))
                energy = neg_unary + messages @ compat.t()
        return energy.reshape(b, h, w, c).permute(0, 3, 1, 2).to(logits.dtype)
