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
encoded as integer keys (int32 when they fit, else int64), deduplicated with one stable sort (the points
are numbered in key order), and each blur neighbour is found with ``torch.searchsorted`` (a neighbour's key
is the point's key plus one of two constants, because the encoding is linear in the coordinates). Gathers and scatters use ``index_select`` /
``index_copy_`` / ``scatter_``, many times faster on the CPU than advanced indexing (``x[idx]``) for large index
arrays. The operators are stored as fixed sparse maps
("bags": for each output row, the input rows and weights it sums) applied with
``F.embedding_bag``, so a filter pass is 2 + (d+1) sparse products for all label channels at
once, on CPU or GPU, and differentiable with respect to the filtered values (the backward pass
applies the transposed maps, built on the first backward pass).
"""

from __future__ import annotations

import copy
import math
from functools import partial

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

    def __init__(self, index: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor | None = None,
                 row_length: int | None = None):
        if offsets is None:
            rows, row_length = index.shape
            offsets = torch.arange(0, rows * row_length, row_length, device=index.device)
        self.row_length = row_length                   # entries per row when every row has as many, else None
        self.index = index.reshape(-1).contiguous()
        self.weights = weights.reshape(-1).contiguous()
        self.offsets = offsets.contiguous()

    def scaled(self, by_entry: torch.Tensor) -> "_Bags":
        """The same map with every entry's weight multiplied by ``by_entry`` ([nnz], or one number for all)."""
        return _Bags(self.index, self.weights * by_entry, self.offsets, self.row_length)

    def scaled_columns(self, by_column: torch.Tensor) -> "_Bags":
        """For a map with ``row_length`` entries per row: entry k of every row times ``by_column[k]``."""
        weights = self.weights.view(-1, self.row_length) * by_column.reshape(1, -1)
        return _Bags(self.index, weights.reshape(-1), self.offsets, self.row_length)

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
    """``forward(values)`` through a constant sparse map, ``backward`` through its transpose
    (a :class:`_Bags`, or a function returning one: built only when a gradient is asked for)."""

    @staticmethod
    def forward(ctx, forward: _Bags, transpose, values: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return forward(values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        transpose = ctx.transpose if isinstance(ctx.transpose, _Bags) else ctx.transpose()
        return None, None, transpose(grad.contiguous())


def _apply(forward: _Bags, transpose, values: torch.Tensor) -> torch.Tensor:
    """``forward(values)``, through :class:`_LinearOp` only when a gradient can be asked for (its bookkeeping
    costs a little on every one of a filter pass's calls)."""
    if torch.is_grad_enabled() and values.requires_grad:
        return _LinearOp.apply(forward, transpose, values)
    return forward(values)


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
        if features.numel():
            low, high = (float(x) for x in torch.aminmax(features))             # one pass; NaN propagates
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError("features must be finite (check the kernel widths: they must be > 0)")
            if max(-low, high) * (features.shape[-1] + 1) >= 2 ** 22:
                raise LatticeRangeError("features too large for float32 lattice coordinates (kernel widths too small)")
        batch, n, d = features.shape
        self.batch, self.num_pixels, self.dim = batch, n, d
        device = features.device
        f = features.reshape(batch * n, d).to(torch.float32).t().contiguous()   # [d, P]
        quotient, rank, bary = _simplex(f)                                      # [d+1, P] each

        # Corner r of a point's simplex has lattice coordinates rem0_i + canonical(r, rank_i),
        # canonical(r, k) = r - (d+1) [k > d - r] (Adams et al., sec. 3.1). rem0 is a multiple of d+1,
        # so every coordinate of corner r is r modulo d+1: the corner is r and the quotients
        # q_i = rem0_i / (d+1) - [rank_i > d - r]. Each corner gets one integer code,
        # r + (d+1) (image index, then the d stored quotients; the last coordinate is implied by the
        # zero sum), the quotients offset to be >= 0 with a margin of 2 so that blur neighbours (a
        # further step of at most 1) encode without spilling into the next one. Storing quotients rather
        # than coordinates makes the codes (d+1)^(d-1) times denser: a VOC photo's fit in 31 bits.
        quotient = quotient[:d]
        lo = quotient.amin(dim=1) - 2
        span = quotient.amax(dim=1) - lo + 3
        strides = [1] * d
        for i in range(d - 2, -1, -1):
            strides[i] = strides[i + 1] * int(span[i + 1])
        per_image = strides[0] * int(span[0])
        if (d + 1) * per_image * batch >= 2 ** 62:
            raise LatticeRangeError("kernel widths too small for the lattice's key encoding: increase xy_std / rgb_std")
        # When every code fits in 31 bits (a VOC-sized image with DeepLab's kernel widths), codes are
        # int32: the sort below runs about 3x faster than on int64 keys.
        key_type = torch.int32 if (d + 1) * per_image * batch < 2 ** 31 else torch.int64
        image_id = torch.arange(batch, device=device, dtype=key_type).repeat_interleave(n)
        base = image_id * per_image
        for i in range(d):
            base += ((quotient[i] - lo[i]) * strides[i]).to(key_type)
        # wrapped[r] = sum_i strides[i] [rank_i > d - r]: stride i joins every corner r >= d + 1 - rank_i,
        # so scatter it to that row and take a cumulative sum down the corners.
        steps = torch.zeros(d + 2, batch * n, dtype=key_type, device=device)
        steps.scatter_add_(0, d + 1 - rank[:d],
                           torch.tensor(strides, device=device, dtype=key_type).unsqueeze(1).expand(d, batch * n))
        wrapped = steps.cumsum(0, dtype=key_type)[: d + 1]
        codes = torch.empty(batch * n, d + 1, dtype=key_type, device=device)     # [P, d+1], pixel-major
        torch.sub(base.unsqueeze(1), wrapped.t(), out=codes)
        codes.mul_(d + 1).add_(torch.arange(d + 1, device=device, dtype=key_type))

        # Deduplicate the (pixel, corner) codes with one stable sort: runs of equal codes are the
        # lattice points, numbered in code order, and each run lists (in pixel order) the pixels that
        # splat onto that point. The numbering changes no sum: each output row adds the same terms in
        # the same order whatever the rows are called.
        flat = codes.reshape(-1)
        point_codes, entry = torch.sort(flat, stable=True)
        is_new = torch.ones_like(point_codes, dtype=torch.bool)
        is_new[1:] = point_codes[1:] != point_codes[:-1]
        starts = torch.nonzero(is_new).squeeze(1)
        m = starts.numel()
        self.num_points = m
        number = torch.cumsum(is_new, 0, dtype=torch.int32).sub_(1).to(torch.int64)   # int32: a bool cumsum to int64 is slow
        point_of = torch.empty_like(entry).scatter_(0, entry, number)
        point_codes = point_codes.index_select(0, starts).to(torch.int64)     # sorted, one per point

        # splat: lattice point k gathers its run of (pixel, weight) entries of the sorted order; slice:
        # pixel i reads its d+1 corners. Per-pixel factors (before the splat, after the slice: the kernel's
        # normalisation, see scaled()) are folded into the weights; the transposed maps that the backward
        # pass needs are built on its first use (inference never builds them).
        self._alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._bary = bary.t().contiguous()                                    # [P, d+1]
        self._point_of = point_of.reshape(batch * n, d + 1)
        self._splat_index = torch.div(entry, d + 1, rounding_mode="floor")     # pixel of each sorted entry
        self._run_weights = self._bary.reshape(-1).index_select(0, entry)
        self._starts = starts
        self._before = self._after = None
        self._set_maps()

        # Neighbours along lattice direction j: n1 = key - 1 in every coordinate except key[j] + d
        # (for j = d, the implicit last coordinate, every stored coordinate moves by -1); n2 is the
        # opposite step. Both keep every coordinate congruent (to r - 1, then r + 1, modulo d+1). In
        # codes, from corner r >= 1 the quotients stay and q_j grows by 1; from r = 0 the corner wraps
        # to d, every quotient but q_j drops by 1: a constant shift for each case, looked up in the
        # sorted codes. A missing neighbour is replaced by the point itself with weight 0.
        points = torch.arange(m, device=device)
        half = torch.tensor(0.5, dtype=torch.float32, device=device)
        wraps = (point_codes % (d + 1)) == 0
        self.blur = []
        for j in range(d + 1):
            step = (d + 1) * strides[j] if j < d else 0
            target = torch.where(wraps, point_codes + (d + step - (d + 1) * sum(strides)), point_codes + (step - 1))
            pos = torch.searchsorted(point_codes, target).clamp_max(m - 1)
            found = point_codes.index_select(0, pos) == target
            minus = torch.where(found, pos, points)
            # The opposite step undoes this one: if minus(i) = k then plus(k) = i.
            have = torch.nonzero(found).squeeze(1)
            plus = points.clone().index_copy_(0, minus.index_select(0, have), have)
            has_plus = torch.zeros(m, dtype=torch.bool, device=device).index_fill_(0, minus.index_select(0, have), True)
            index = torch.stack([minus, points, plus], dim=1)
            value = torch.stack([found * half, torch.ones_like(half).expand(m),
                                 has_plus * half], dim=1).to(torch.float32)
            self.blur.append(_Bags(index, value))

    def _set_maps(self) -> None:
        """The splat and slice maps with the factors folded in; the transposes left to :meth:`_transpose`."""
        weights = self._run_weights
        if self._before is not None:
            weights = weights * self._before.index_select(0, self._splat_index)
        self.splat = _Bags(self._splat_index, weights, self._starts)
        slice_weights = self._bary * self._alpha
        if self._after is not None:
            slice_weights = slice_weights * self._after.unsqueeze(1)
        self.slice = _Bags(self._point_of, slice_weights)
        self._transposes = None

    def _transpose(self, which: str) -> "_Bags":
        """``splat^T`` or ``slice^T`` (``which``), built once on the first backward pass."""
        if self._transposes is None:
            splat_t = self._bary if self._before is None else self._bary * self._before.unsqueeze(1)
            slice_t = self._run_weights * self._alpha
            if self._after is not None:
                slice_t = slice_t * self._after.index_select(0, self._splat_index)
            self._transposes = {"splat": _Bags(self._point_of, splat_t),
                                "slice": _Bags(self._splat_index, slice_t, self._starts)}
        return self._transposes[which]

    def scaled(self, before: torch.Tensor | None, after: torch.Tensor) -> "PermutohedralLattice":
        """The filter ``v -> diag(after) K diag(before) v``, sharing this lattice's structure.

        ``before``/``after`` are per-pixel factors ``[B*N]`` (or ``[B*N, 1]``), folded into the
        splat and slice weights, so they cost nothing per pass (the CRF's symmetric normalisation);
        ``before`` None (or all ones) leaves the splat as it is.
        """
        out = copy.copy(self)
        if before is not None and not bool((before == 1).all()):        # D^-1 K has no factor before
            out._before = before.reshape(-1) if self._before is None else self._before * before.reshape(-1)
        after = after.reshape(-1)
        out._after = after if self._after is None else self._after * after
        out._set_maps()
        return out

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Filter ``[B*N, C]`` (or ``[B, N, C]``) values; same shape out, float32 (float64 for float64 values:
        the same linear map, applied in double precision, e.g. for ``torch.autograd.gradcheck``).

        Differentiable with respect to ``values``. Blur order 0..d, as densecrf's forward pass.
        """
        shape = values.shape
        dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
        v = values.reshape(self.batch * self.num_pixels, -1).to(dtype)
        v = _apply(self.splat, partial(self._transpose, "splat"), v)
        for blur in self.blur:                         # each blur is symmetric: its own transpose
            v = _apply(blur, blur, v)
        v = _apply(self.slice, partial(self._transpose, "slice"), v)
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
        self._lattices, self._starts = lattices, starts
        self.splat = _Bags.stack_rows([lat.splat for lat in lattices], [0] * len(lattices))
        self.blur = []
        for j in range(max(lat.dim for lat in lattices) + 1):
            parts = [lat.blur[j] if j < len(lat.blur) else _Bags.identity(lat.num_points, device)
                     for lat in lattices]
            self.blur.append(_Bags.stack_rows(parts, starts))
        self._slice = _Bags.join_columns([lat.slice for lat in lattices], starts)
        self._slice_columns = torch.tensor([lat.dim + 1 for lat in lattices], device=device)   # columns per lattice
        self._gains: tuple | None = None
        self._splat_t = self._slice_t = None                                    # built on the first backward

    def _set_gains(self, gains: tuple[float, ...]) -> None:
        if gains != self._gains:
            g = torch.tensor(gains, dtype=torch.float32, device=self._slice.weights.device)
            self.slice = self._slice.scaled_columns(torch.repeat_interleave(g, self._slice_columns))
            self._gains = gains

    def _splat_transpose(self) -> _Bags:
        """``splat^T``, built on first use."""
        if self._splat_t is None:
            self._splat_t = _Bags.join_columns([lat._transpose("splat") for lat in self._lattices], self._starts)
        return self._splat_t

    def _slice_transpose(self, gains: tuple[float, ...]) -> _Bags:
        """``slice^T`` with the ``gains`` of the forward pass it belongs to, built on first use (the last one kept)."""
        if self._slice_t is None or self._slice_t[0] != gains:
            parts = [lat._transpose("slice") for lat in self._lattices]
            scaled = [p.scaled(torch.tensor(g, dtype=p.weights.dtype)) for p, g in zip(parts, gains)]
            self._slice_t = (gains, _Bags.stack_rows(scaled, [0] * len(parts)))
        return self._slice_t[1]

    def filter(self, values: torch.Tensor, gains: tuple[float, ...]) -> torch.Tensor:
        """``sum_k gains[k] K_k values`` for ``[B*N, C]`` values (differentiable in ``values``)."""
        if len(gains) != self.num_lattices:
            raise ValueError(f"need {self.num_lattices} gains, got {len(gains)}")
        gains = tuple(float(g) for g in gains)
        self._set_gains(gains)
        v = _apply(self.splat, self._splat_transpose, values.to(torch.float32))
        for blur in self.blur:
            v = _apply(blur, blur, v)
        return _apply(self.slice, partial(self._slice_transpose, gains), v)   # the gains of this pass


def _simplex(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The simplex of the permutohedral lattice enclosing each feature vector.

    ``f`` is ``[d, P]`` float32 (one column per pixel). Returns, each ``[d+1, P]``: ``quotient``
    (int64, the nearest remainder-0 lattice point ``rem0`` divided by d+1: its coordinates are multiples of d+1), ``rank``
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
            c = residual[i] < residual[j]
            rank[i] += c
            rank[j] += ~c

    # If the point is off the plane (total != 0), fold it back (Adams et al., p. 6).
    rank += total
    wrap = torch.div(rank, d + 1, rounding_mode="floor")          # -1, 0 or 1: a rank outside 0..d wraps around
    rank.sub_(wrap, alpha=d + 1)
    rem0.sub_(wrap, alpha=d + 1)
    rank_i = rank.to(torch.int64)

    # Barycentric weights (Adams et al., p. 10): coordinate i adds vbar_i to weight d - rank_i and
    # subtracts it from weight d - rank_i + 1. With s_k the vbar of the coordinate ranked k, weight
    # m >= 1 is s_(d-m) - s_(d-m+1) and weight 0 is s_d + (1 - s_0) (densecrf's sums, term by term).
    vbar = (elevated - rem0) * down
    # s[m] = s_(d-m) is the m-th smallest vbar (the ranks order the residuals from the largest; equal values are
    # interchangeable): d+1 rounds of an odd-even transposition network, a few elementwise passes instead of a
    # scatter of the ranks and a gather.
    s = list(vbar.unbind(0))
    for r in range(d + 1):
        for i in range(r % 2, d, 2):
            low = torch.minimum(s[i], s[i + 1])
            s[i + 1] = torch.maximum(s[i], s[i + 1])
            s[i] = low
    bary = torch.empty(d + 1, p, dtype=torch.float32, device=device)
    for m in range(1, d + 1):
        torch.sub(s[m], s[m - 1], out=bary[m])
    bary[0] = s[0] + (1.0 - s[d])
    return v.sub_(wrap).to(torch.int64), rank_i, bary                     # rem0 / (d+1)
