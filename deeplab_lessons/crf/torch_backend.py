"""The ``"torch"`` backend: mean field on the permutohedral lattice (:mod:`.lattice`), in PyTorch.

Linear in the number of pixels, on the CPU or a GPU, batched over images and differentiable
with respect to the unary. :class:`DenseCRF` binds the CRF to one image (or a batch) and caches
each kernel's lattice, so re-running it with other weights or iteration counts is cheap (the
CRF explorer of lesson 06).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import torch

from .core import CRFParams, Kernel, as_tensor, check_image, check_probs, kernel_norm, make_kernel, mean_field, unary_from_probs
from .lattice import LatticeRangeError, LatticeSum, PermutohedralLattice, lattice_features


#: From this many labels on, the two kernels' messages are computed in one pass over their stacked lattices
#: (:class:`~.lattice.LatticeSum`); below it, two passes cost less than building the stack
#: (``benchmarks/crf_speed.py``: 2 labels on a 451x300 photo).
FUSE_MIN_LABELS = 4

#: Normalised Gaussian-kernel lattices shared by every :class:`DenseCRF`, keyed by (batch, height, width,
#: device, xy_std, rgb_std=None, normalization), most recently used last; at most :data:`MAX_POSITION_LATTICES`.
POSITION_LATTICES: OrderedDict[tuple, tuple[PermutohedralLattice, float]] = OrderedDict()
MAX_POSITION_LATTICES = 4


class DenseCRF:
    """A dense CRF bound to one image (or a batch): builds each kernel's lattice once, reuses it.

    ``image`` is ``[H, W, 3]`` or ``[B, H, W, 3]`` uint8 (numpy or torch). The lattice of a
    kernel depends only on the image and that kernel's widths (``bi_xy_std``, ``bi_rgb_std``,
    ``pos_xy_std``); changing ``bi_w``, ``pos_w`` or ``iterations`` reuses it, changing a width
    builds a new one (kept in a small cache, so moving a slider back is instant).
    ``lattice_builds`` counts the lattices this CRF built or took from the Gaussian kernels shared by image size
    (:data:`POSITION_LATTICES`).

    >>> crf = DenseCRF(image)                       # doctest: +SKIP
    >>> q = crf(probs)                              # [1, C, H, W] marginals after 10 iterations
    >>> q5 = crf(probs, params=crf.params.replace(bi_w=5, iterations=5))
    """

    def __init__(self, image, params: CRFParams | None = None, device: torch.device | str | None = None,
                 max_cached_lattices: int = 6):
        img = check_image(image)
        self.device = torch.device(device) if device is not None else img.device
        self.image = img.to(self.device)
        self.batch, self.height, self.width = self.image.shape[:3]
        self.params = params if params is not None else CRFParams()
        self.lattice_builds = 0
        self._cache: OrderedDict[tuple, tuple[PermutohedralLattice, float]] = OrderedDict()
        self._sums: dict[tuple, LatticeSum] = {}
        self._max_cached = max_cached_lattices

    @property
    def num_pixels(self) -> int:
        """Pixels of all images together (rows of the [P, C] arrays mean field works on)."""
        return self.batch * self.height * self.width

    def normalised_lattice(self, xy_std: float, rgb_std: float | None = None,
                           normalization: str = "after") -> tuple[PermutohedralLattice, float]:
        """The lattice of the bilateral (``rgb_std`` given) or Gaussian kernel with its
        normalisation folded in (``D^-1 K`` for ``"after"``, ``D^-1/2 K D^-1/2`` for
        ``"symmetric"``), and its peak response; cached.

        The Gaussian kernel's lattice depends only on the image's size, so it is also shared between
        CRFs (:data:`POSITION_LATTICES`): the next image of the same size (most of a data set) reuses it.
        """
        key = (float(xy_std), None if rgb_std is None else float(rgb_std), normalization)
        if key not in self._cache:
            shared = (self.batch, self.height, self.width, self.device) + key if rgb_std is None else None
            if shared is not None and shared in POSITION_LATTICES:
                POSITION_LATTICES.move_to_end(shared)
                self._cache[key] = POSITION_LATTICES[shared]
            else:
                self._cache[key] = self._build(xy_std, rgb_std, normalization)
                if shared is not None:
                    POSITION_LATTICES[shared] = self._cache[key]
                    while len(POSITION_LATTICES) > MAX_POSITION_LATTICES:
                        POSITION_LATTICES.popitem(last=False)
            self.lattice_builds += 1
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
            self._sums.clear()
        self._cache.move_to_end(key)
        return self._cache[key]

    def _build(self, xy_std: float, rgb_std: float | None, normalization: str) -> tuple[PermutohedralLattice, float]:
        feats = lattice_features(self.image if rgb_std is not None else None, self.height, self.width,
                                 xy_std, rgb_std, device=self.device)
        try:
            lat = PermutohedralLattice(feats.expand(self.batch, -1, -1))
        except LatticeRangeError:
            widths = f"xy_std={xy_std:g}" + ("" if rgb_std is None else f", rgb_std={rgb_std:g}")
            raise ValueError(f"CRF kernel widths {widths} are too small for the torch backend on a "
                             f"{self.height}x{self.width} image: its lattice needs fewer than about 2^62 cells. "
                             "Widen the kernel (CRFParams pos_xy_std / bi_xy_std / bi_rgb_std) or use "
                             "backend='pydensecrf'") from None
        before, after = kernel_norm(lat.filter, self.num_pixels, normalization, self.device)
        lat = lat.scaled(before, after)
        # D^-1 K averages: its rows sum to 1, so its peak is 1 without a filter pass to measure it.
        peak = 1.0 if normalization == "after" else make_kernel(1.0, lat.filter, self.num_pixels, self.device).peak
        return lat, peak

    def kernels(self, params: CRFParams | None = None, num_labels: int | None = None) -> list[Kernel]:
        """The pairwise terms of ``params`` with non-zero weight.

        With ``num_labels`` at least :data:`FUSE_MIN_LABELS` (or not given) they are one :class:`Kernel` whose filter
        is ``w1 k~_bilateral + w2 k~_gaussian`` computed in a single pass over the stacked lattices
        (:class:`~.lattice.LatticeSum`); with fewer labels, stacking costs more than the passes it saves, and each
        term is its own :class:`Kernel`. An empty list when both weights are 0.
        """
        params = params if params is not None else self.params
        terms = []
        if params.bi_w != 0:
            terms.append(((params.bi_xy_std, params.bi_rgb_std, params.normalization), float(params.bi_w)))
        if params.pos_w != 0:
            terms.append(((params.pos_xy_std, None, params.normalization), float(params.pos_w)))
        if not terms:
            return []
        parts = [self.normalised_lattice(*key) for key, _ in terms]
        if num_labels is not None and num_labels < FUSE_MIN_LABELS:
            return [Kernel(w, lat.filter, peak) for (_, w), (lat, peak) in zip(terms, parts)]
        keys = tuple(key for key, _ in terms)
        if keys not in self._sums:
            self._sums[keys] = LatticeSum([lat for lat, _ in parts])
        lattice_sum, gains = self._sums[keys], tuple(w for _, w in terms)
        peak = sum(w * p for (_, w), (_, p) in zip(terms, parts))
        return [Kernel(1.0, lambda values: lattice_sum.filter(values, gains), peak)]

    def flat_unary(self, probs=None, unary=None) -> torch.Tensor:
        """Unary energies as [P, C] float32 on the CRF's device, from ``probs`` or ``unary``."""
        if (probs is None) == (unary is None):
            raise ValueError("give exactly one of probs (softmax probabilities) or unary (energies)")
        if unary is None:
            u = unary_from_probs(check_probs(probs, self.image).to(self.device, torch.float32), classes_last=True)
        else:
            u = as_tensor(unary, "unary").to(self.device, torch.float32)
            u = u.unsqueeze(0) if u.dim() == 3 else u
            if u.dim() != 4 or (u.shape[0], *u.shape[2:]) != (self.batch, self.height, self.width):
                raise ValueError(f"unary must be [C, H, W] / [B, C, H, W] matching the image, got {tuple(u.shape)}")
        return u.permute(0, 2, 3, 1).reshape(self.num_pixels, -1).contiguous()   # rows = pixels (a view when classes last)

    def _unflat(self, q: torch.Tensor) -> torch.Tensor:
        return q.reshape(self.batch, self.height, self.width, -1).permute(0, 3, 1, 2)

    def steps(self, probs=None, params: CRFParams | None = None, unary=None) -> Iterator[torch.Tensor]:
        """Yield the marginals ``[B, C, H, W]`` (float32 tensor) after each mean-field iteration.

        Give ``probs`` (``[C, H, W]`` / ``[B, C, H, W]`` softmax output, unary = -log p) or
        ``unary`` (energies of the same shape, e.g. ``-log_softmax(logits)``; gradients flow to it).
        """
        params = params if params is not None else self.params
        flat = self.flat_unary(probs, unary)
        for q in mean_field(flat, self.kernels(params, flat.shape[1]), int(params.iterations)):
            yield self._unflat(q)

    def __call__(self, probs=None, params: CRFParams | None = None, unary=None) -> torch.Tensor:
        """Marginals ``[B, C, H, W]`` float32 after ``params.iterations`` (``softmax(-unary)`` for 0)."""
        params = params if params is not None else self.params
        flat = self.flat_unary(probs, unary)
        q = torch.softmax(-flat, dim=1)
        for q in mean_field(flat, self.kernels(params, flat.shape[1]), int(params.iterations)):
            pass
        return self._unflat(q)

    def cached_lattices(self) -> list[tuple]:
        """Keys ``(xy_std, rgb_std or None, normalization)`` of the kernels built so far, oldest first."""
        return list(self._cache)
