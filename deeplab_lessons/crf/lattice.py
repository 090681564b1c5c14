"""The permutohedral lattice (Adams, Baek & Davis 2010) in PyTorch, as three sparse operators.

High-dimensional Gaussian filtering, ``out_i = sum_j k(f_i, f_j) v_j`` with
``k(f_i, f_j) ~ exp(-|f_i - f_j|^2 / 2)``, costs O(N^2) when done directly. The permutohedral
lattice makes it linear in N: every feature vector ``f_i`` (in R^d) is lifted onto the hyperplane
``x . 1 = 0`` of R^(d+1), which is tiled by simplices whose d+1 corners are lattice points, and

1. **splat**: each pixel's value is spread onto the d+1 corners of its simplex with barycentric
   weights (a sparse M x N matrix ``S``, M = number of lattice points that received anything);
2. **blur**: along each of the d+1 lattice directions, ``v <- v + (v[n-] + v[n+]) / 2`` (the
   kernel [1/2, 1, 1/2] applied in turn, d+1 sparse M x M matrices);
3. **slice**: each pixel reads back the same barycentric mix of its corners (``alpha S^T``).

This module reproduces exactly the lattice of Krähenbühl's ``densecrf`` (``permutohedral.cpp``),
the code behind pydensecrf and DeepLab's CRF: same elevation matrix and scale
``sqrt(2/3) (d+1)``, the same rounding to the nearest remainder-0 point (ties to even, float32),
the same blur order and the same "magic" output scale ``alpha = 1 / (1 + 2^-d)``. The result
*includes* the pixel's own contribution (there is no self-term subtraction in that code either).

The construction is vectorised over all pixels (and all images of a batch): lattice points are
encoded as int64 keys, deduplicated with ``torch.unique(return_inverse=True)``, and each blur
neighbour is found with ``torch.searchsorted`` (a neighbour's key is the point's key plus a
constant, because the encoding is linear). The operators are stored as fixed sparse maps
("bags": for each output row, the input rows and weights it sums) applied with
``F.embedding_bag``, so a filter pass is 2 + (d+1) sparse products for all label channels at
once, on CPU or GPU, and differentiable with respect to the filtered values (the backward pass
applies the transposed maps, also precomputed).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F



class _Bags:
    """A sparse linear map written as weighted bags: ``out[r] = sum_k weights[r, k] * values[index[r, k]]``.

    ``index``/``weights`` are ``[R, k]`` (every row the same length) or flat with ``offsets``
    (row r uses entries ``offsets[r]:offsets[r+1]``). Applied with ``F.embedding_bag``, whose
    CPU kernel reads each output row's inputs in one go and never materialises the
    ``[nnz, C]`` intermediate a gather + sum would. Everything is stored flat with explicit
    offsets, so a call allocates nothing but its output.
    """

    def __init__(self, index: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor | None = None):
        if offsets is None:
            rows, k = index.shape
            offsets = torch.arange(0, rows * k, k, device=index.device)
        self.index = index.reshape(-1).contiguous()
        self.weights = weights.reshape(-1).contiguous()
        self.offsets = offsets.contiguous()

    def rows(self) -> torch.Tensor:
        """Output row of every entry (``[nnz]`` int64)."""
        counts = torch.diff(self.offsets, append=torch.tensor([self.index.numel()], device=self.index.device))
        return torch.repeat_interleave(torch.arange(self.offsets.numel(), device=self.index.device), counts)

    def scaled(self, by_entry: torch.Tensor) -> "_Bags":
        """The same map with every entry's weight multiplied by ``by_entry`` ([nnz])."""
        return _Bags(self.index, self.weights * by_entry, self.offsets)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        weights = self.weights if self.weights.dtype == values.dtype else self.weights.to(values.dtype)
        return F.embedding_bag(self.index, values, self.offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def identity(rows: int, device) -> "_Bags":
        """The identity map on ``rows`` rows."""
        return _Bags(torch.arange(rows, device=device).unsqueeze(1), torch.ones(rows, 1, device=device))

    @staticmethod
    def stack_rows(parts: list["_Bags"], column_offsets: list[int]) -> "_Bags":
        """Block matrix: the rows of each part one after the other, part i's columns shifted by its offset."""
        index = torch.cat([p.index + c for p, c in zip(parts, column_offsets)])
        starts = [0]
        for p in parts[:-1]:
            starts.append(starts[-1] + p.index.numel())
        offsets = torch.cat([p.offsets + s for p, s in zip(parts, starts)])
        return _Bags(index, torch.cat([p.weights for p in parts]), offsets)

    @staticmethod
    def join_columns(parts: list["_Bags"], column_offsets: list[int]) -> "_Bags":
        """Block matrix ``[A_1 A_2 ...]`` of parts with the same rows and a fixed entry count per row."""
        rows = parts[0].offsets.numel()
        index = torch.cat([(p.index + c).view(rows, -1) for p, c in zip(parts, column_offsets)], dim=1)
        weights = torch.cat([p.weights.view(rows, -1) for p in parts], dim=1)
        return _Bags(index, weights)


class _LinearOp(torch.autograd.Function):
    """``forward(values)`` through a constant sparse map, ``backward`` through its transpose."""

    @staticmethod
    def forward(ctx, forward: _Bags, transpose: _Bags, values: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return forward(values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.transpose(grad.contiguous())


class LatticeRangeError(ValueError):
    """The features span more lattice cells than the int64 keys (or float32 coordinates) can address."""


def lattice_features(image: torch.Tensor | None, height: int, width: int, xy_std: float,
                     rgb_std: float | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-pixel feature vectors scaled by the kernel widths, as densecrf's ``DenseCRF2D`` builds them.

    Returns ``[B, H*W, d]`` float32 (row-major pixel order): ``(x / xy_std, y / xy_std)`` for the
    Gaussian (smoothness) kernel (``d = 2``, ``image`` may be None), and
    ``(x / xy_std, y / xy_std, r / rgb_std, g / rgb_std, b / rgb_std)`` for the bilateral
    (appearance) kernel (``d = 5``) of Krähenbühl & Koltun 2011, eq. (3). ``x, y`` are pixel
    column and row indices, ``r, g, b`` the uint8 intensities; ``image`` is ``[B, H, W, 3]``.
    The divisions are float32, like the C++ code, so the lattice matches it bit for bit.
    """
    if image is not None:
        device = image.device
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                            torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    std = torch.tensor(float(xy_std), dtype=torch.float32)
    pos = torch.stack([xs.reshape(-1) / std, ys.reshape(-1) / std], dim=1)
    if rgb_std is None:
        batch = 1 if image is None else image.shape[0]
        return pos.unsqueeze(0).expand(batch, -1, -1).contiguous()
    colour = image.reshape(image.shape[0], height * width, 3).to(torch.float32)
    colour = colour / torch.tensor(float(rgb_std), dtype=torch.float32)
    return torch.cat([pos.unsqueeze(0).expand(image.shape[0], -1, -1), colour], dim=2).contiguous()


class PermutohedralLattice:
    """Gaussian filtering ``out_i = alpha * sum_j k~(f_i, f_j) v_j`` over the features of a batch.

    ``features`` is ``[B, N, d]`` float32 (each image's N pixels, already divided by the kernel
    widths, see :func:`lattice_features`). Images never mix: each has its own lattice points.
    Build once per image and kernel, then call :meth:`filter` any number of times (every
    mean-field iteration, every label, every weight setting).

    Attributes: ``num_points`` (M, lattice points of all images), ``dim`` (d), and the sparse
    operators ``splat`` [M, B*N], ``blur`` (d+1 of [M, M]), ``slice`` [B*N, M].
    """

    def __init__(self, features: torch.Tensor):
        if features.dim() != 3:
            raise ValueError(f"features must be [B, N, d], got shape {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("features must be finite (check the kernel widths: they must be > 0)")
        if features.numel() and float(features.abs().max()) * (features.shape[-1] + 1) >= 2 ** 22:
            raise LatticeRangeError("features too large for float32 lattice coordinates (kernel widths too small)")
        batch, n, d = features.shape
        self.batch, self.num_pixels, self.dim = batch, n, d
        device = features.device
        f = features.reshape(batch * n, d).to(torch.float32).t().contiguous()   # [d, P]
        rem0, rank, bary = _simplex(f)                                          # [d+1, P] each

        # Corner r of a point's simplex has lattice coordinates rem0_i + canonical(r, rank_i),
        # canonical(r, k) = r - (d+1) [k > d - r] (Adams et al., sec. 3.1), all within d of
        # rem0. Each corner gets one int64 code: image index first, then the d stored
        # coordinates (the last is implied by the zero sum), each offset to be >= 0 with a
        # margin of 2d+1 so that blur neighbours (a further step of at most d) encode without
        # spilling into the next coordinate. The code is linear in the coordinates, so a
        # neighbour's code is the point's code plus a constant.
        pad = 2 * d + 1
        lo = rem0[:d].amin(dim=1) - pad
        span = rem0[:d].amax(dim=1) - lo + pad + 1
        strides = [1] * d
        for i in range(d - 2, -1, -1):
            strides[i] = strides[i + 1] * int(span[i + 1])
        per_image = strides[0] * int(span[0])
        if per_image * batch >= 2 ** 62:
            raise LatticeRangeError("kernel widths too small for the lattice's key encoding: increase xy_std / rgb_std")
        image_id = torch.arange(batch, device=device).repeat_interleave(n)
        base = image_id * per_image
        for i in range(d):
            base += (rem0[i] - lo[i]) * strides[i]
        codes = torch.empty(batch * n, d + 1, dtype=torch.int64, device=device)
        for r in range(d + 1):
            wrapped = torch.zeros_like(base)
            for i in range(d):
                wrapped += (rank[i] > d - r).to(torch.int64) * strides[i]
            codes[:, r] = base + r * sum(strides) - (d + 1) * wrapped

        # Deduplicate the (pixel, corner) codes with one stable sort: runs of equal codes are the
        # lattice points, and each run lists the pixels that splat onto that point.
        flat = codes.reshape(-1)
        sorted_codes, entry = torch.sort(flat, stable=True)
        is_new = torch.ones_like(sorted_codes, dtype=torch.bool)
        is_new[1:] = sorted_codes[1:] != sorted_codes[:-1]
        starts = torch.nonzero(is_new).squeeze(1)
        m = starts.numel()
        self.num_points = m
        counts = torch.diff(starts, append=torch.tensor([flat.numel()], device=device))

        # Number the points in order of first appearance (as densecrf's hash table does), so that
        # points shared by neighbouring pixels sit close in memory; the stable sort makes the
        # first entry of each run its first appearance.
        order = torch.argsort(entry[starts])
        renumber = torch.empty_like(order)
        renumber[order] = torch.arange(m, device=device)
        point_of = torch.empty_like(flat)
        point_of[entry] = renumber[torch.cumsum(is_new.to(torch.int64), 0) - 1]
        point_codes = sorted_codes[starts][order]

        alpha = 1.0 / (1.0 + 2.0 ** (-d))
        bary_2d = bary.t().contiguous()                                         # [P, d+1]
        weights = bary_2d.reshape(-1)
        point_of_2d = point_of.reshape(batch * n, d + 1)
        # splat: lattice point r gathers its run of (pixel, weight) entries, runs in the new order.
        new_counts = counts[order]
        new_starts = torch.cumsum(new_counts, 0) - new_counts
        within = torch.arange(flat.numel(), device=device) - torch.repeat_interleave(new_starts, new_counts)
        run_entries = entry[torch.repeat_interleave(starts[order], new_counts) + within]
        splat_index = torch.div(run_entries, d + 1, rounding_mode="floor")
        self.splat = _Bags(splat_index, weights[run_entries], new_starts)
        self.slice = _Bags(point_of_2d, bary_2d * alpha)
        self._splat_t = _Bags(point_of_2d, bary_2d)                            # splat^T
        self._slice_t = _Bags(splat_index, weights[run_entries] * alpha, new_starts)   # slice^T

        # Neighbours along lattice direction j: n1 = key - 1 everywhere except key[j] + d
        # (for j = d, the implicit last coordinate, every stored coordinate moves by -1);
        # n2 is the opposite step. In code space each is a constant shift, looked up in the
        # sorted codes. A missing neighbour is replaced by the point itself with weight 0.
        unique_sorted = sorted_codes[starts]
        points = torch.arange(m, device=device)
        half = torch.tensor(0.5, dtype=torch.float32, device=device)
        self.blur = []
        for j in range(d + 1):
            shift = -sum(strides) + ((d + 1) * strides[j] if j < d else 0)
            target = point_codes + shift
            pos = torch.searchsorted(unique_sorted, target).clamp_max(m - 1)
            found = unique_sorted[pos] == target
            minus = torch.where(found, renumber[pos], points)
            # The opposite step undoes this one: if minus(i) = k then plus(k) = i.
            plus = points.clone()
            plus[minus[found]] = points[found]
            has_plus = torch.zeros(m, dtype=torch.bool, device=device)
            has_plus[minus[found]] = True
            index = torch.stack([minus, points, plus], dim=1)
            value = torch.stack([found * half, torch.ones_like(half).expand(m),
                                 has_plus * half], dim=1).to(torch.float32)
            self.blur.append(_Bags(index, value))

    def scaled(self, before: torch.Tensor, after: torch.Tensor) -> "PermutohedralLattice":
        """The filter ``v -> diag(after) K diag(before) v``, sharing this lattice's structure.

        ``before``/``after`` are per-pixel factors ``[B*N]`` (or ``[B*N, 1]``), folded into the
        splat and slice weights, so they cost nothing per pass (the CRF's symmetric normalisation).
        """
        before, after = before.reshape(-1), after.reshape(-1)
        out = copy.copy(self)
        out.splat = self.splat.scaled(before[self.splat.index])
        out._splat_t = self._splat_t.scaled(before[self._splat_t.rows()])
        out.slice = self.slice.scaled(after[self.slice.rows()])
        out._slice_t = self._slice_t.scaled(after[self._slice_t.index])
        return out

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Filter ``[B*N, C]`` (or ``[B, N, C]``) values; same shape out, float32 (float64 for float64 values:
        the same linear map, applied in double precision, e.g. for ``torch.autograd.gradcheck``).

        Differentiable with respect to ``values``. Blur order 0..d, as densecrf's forward pass.
        """
        shape = values.shape
        dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
        v = values.reshape(self.batch * self.num_pixels, -1).to(dtype)
        v = _LinearOp.apply(self.splat, self._splat_t, v)
        for blur in self.blur:                         # each blur is symmetric: its own transpose
            v = _LinearOp.apply(blur, blur, v)
        v = _LinearOp.apply(self.slice, self._slice_t, v)
        return v.reshape(shape)


class LatticeSum:
    """``v -> sum_k gain_k K_k v`` for several lattices over the same pixels, in one pass.

    The mean-field message of the dense CRF adds a bilateral and a Gaussian filter of the same
    values. Stacking their lattice points (bilateral points first) makes that one splat, d+1
    blurs (a lattice with fewer directions is left unchanged by the extra ones) and one slice
    whose per-corner weights carry each kernel's gain, instead of two separate passes.
    """

    def __init__(self, lattices: list[PermutohedralLattice]):
        if not lattices:
            raise ValueError("LatticeSum needs at least one lattice")
        pixels = lattices[0].batch * lattices[0].num_pixels
        if any(lat.batch * lat.num_pixels != pixels for lat in lattices):
            raise ValueError("every lattice of a LatticeSum must cover the same pixels")
        device = lattices[0].splat.index.device
        starts = [0]
        for lat in lattices[:-1]:
            starts.append(starts[-1] + lat.num_points)
        self.num_lattices = len(lattices)
        self.num_pixels = pixels
        self.splat = _Bags.stack_rows([lat.splat for lat in lattices], [0] * len(lattices))
        self._splat_t = _Bags.join_columns([lat._splat_t for lat in lattices], starts)
        self.blur = []
        for j in range(max(lat.dim for lat in lattices) + 1):
            parts = [lat.blur[j] if j < len(lat.blur) else _Bags.identity(lat.num_points, device)
                     for lat in lattices]
            self.blur.append(_Bags.stack_rows(parts, starts))
        self._slice = _Bags.join_columns([lat.slice for lat in lattices], starts)
        self._slice_source = torch.cat([torch.full((lat.dim + 1,), k, device=device)
                                        for k, lat in enumerate(lattices)]).repeat(pixels)
        self._slice_t = _Bags.stack_rows([lat._slice_t for lat in lattices], [0] * len(lattices))
        self._slice_t_source = torch.cat([torch.full((lat._slice_t.index.numel(),), k, device=device)
                                          for k, lat in enumerate(lattices)])
        self._gains: tuple | None = None

    def _set_gains(self, gains: tuple[float, ...]) -> None:
        if gains != self._gains:
            g = torch.tensor(gains, dtype=torch.float32, device=self._slice.weights.device)
            self.slice = self._slice.scaled(g[self._slice_source])
            self.slice_t = self._slice_t.scaled(g[self._slice_t_source])
            self._gains = gains

    def filter(self, values: torch.Tensor, gains: tuple[float, ...]) -> torch.Tensor:
        """``sum_k gains[k] K_k values`` for ``[B*N, C]`` values (differentiable in ``values``)."""
        if len(gains) != self.num_lattices:
            raise ValueError(f"need {self.num_lattices} gains, got {len(gains)}")
        self._set_gains(tuple(float(g) for g in gains))
        v = _LinearOp.apply(self.splat, self._splat_t, values.to(torch.float32))
        for blur in self.blur:
            v = _LinearOp.apply(blur, blur, v)
        return _LinearOp.apply(self.slice, self.slice_t, v)


def _simplex(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The simplex of the permutohedral lattice enclosing each feature vector.

    ``f`` is ``[d, P]`` float32 (one column per pixel). Returns, each ``[d+1, P]``: ``rem0``
    (int64, the nearest remainder-0 lattice point, coordinates multiples of d+1), ``rank``
    (int64, the rank of each coordinate's residual, 0 = largest) and the barycentric weights
    (float32, summing to 1 over the d+1 corners). Adams et al. 2010, sec. 3.1-3.2, with
    densecrf's float32 arithmetic and ties-to-even rounding.
    """
    d, p = f.shape
    device = f.device
    inv_std_dev = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    scale = [float(torch.tensor(1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev, dtype=torch.float32))
             for i in range(d)]

    # Elevate onto the hyperplane x . 1 = 0 of R^(d+1): y = E f (Adams et al., p. 5).
    elevated = torch.empty(d + 1, p, dtype=torch.float32, device=device)
    sm = torch.zeros(p, dtype=torch.float32, device=device)
    for j in range(d, 0, -1):
        cf = f[j - 1] * scale[j - 1]
        elevated[j] = sm - float(j) * cf
        sm = sm + cf
    elevated[0] = sm

    # Nearest remainder-0 lattice point, then the rank of each residual.
    down = float(torch.tensor(1.0 / (d + 1), dtype=torch.float32))
    v = torch.round(elevated * down)
    rem0 = v * (d + 1)
    total = v.sum(dim=0)
    residual = elevated - rem0
    rank = torch.zeros(d + 1, p, dtype=torch.float32, device=device)
    for i in range(d):
        for j in range(i + 1, d + 1):
            c = (residual[i] < residual[j]).to(torch.float32)
            rank[i] += c
            rank[j] += 1.0 - c

    # If the point is off the plane (total != 0), fold it back (Adams et al., p. 6).
    rank += total
    fold = ((rank < 0).to(torch.float32) - (rank >= d + 1).to(torch.float32)) * (d + 1)
    rank += fold
    rem0 += fold
    rank_i = rank.to(torch.int64)

    # Barycentric weights (Adams et al., p. 10).
    vbar = (elevated - rem0) * down
    bary = torch.zeros(d + 2, p, dtype=torch.float32, device=device)
    bary.scatter_add_(0, d - rank_i, vbar)
    bary.scatter_add_(0, d - rank_i + 1, -vbar)
    bary[0] += 1.0 + bary[d + 1]
    return rem0.to(torch.int64), rank_i, bary[: d + 1]
