"""The CRF's front door: :func:`dense_crf` runs mean field with the backend asked for.

Backends: ``"torch"`` (:mod:`.torch_backend`: the permutohedral lattice of :mod:`.lattice`,
linear in pixels, CPU/GPU, batched, differentiable), ``"naive"`` (:mod:`.naive`: the exact
O(N^2) sums, small images only, the reference), ``"pydensecrf"`` (:mod:`.pydensecrf_backend`:
the C++ library, when installed; it is imported only when called). The model they share, its
parameters and the mean-field loop are in :mod:`.core`.
"""

from __future__ import annotations

import torch

from .core import CRFParams, as_tensor, check_image, check_probs, to_kind, unary_from_probs
from .naive import naive_steps
from .pydensecrf_backend import pydensecrf_steps
from .torch_backend import DenseCRF

#: The backends :func:`dense_crf` accepts.
BACKENDS = ("torch", "naive", "pydensecrf")


def dense_crf(image, probs, params: CRFParams | None = None, backend: str = "torch", steps: bool = False):
    """Mean-field marginals of the fully connected CRF (Krähenbühl & Koltun 2011; DeepLab v1 sec. 4.2).

    ``image``: ``[H, W, 3]`` uint8 RGB (or ``[B, H, W, 3]``); ``probs``: ``[C, H, W]`` class
    probabilities summing to 1 over C at the image's resolution (or ``[B, C, H, W]``), numpy or
    torch. Returns the marginals Q with the shape, array kind, dtype and device of ``probs``
    (their argmax over C is the refined segmentation). With ``steps=True`` returns an iterator
    over Q after each of the ``params.iterations`` iterations instead.

    ``backend``: ``"torch"`` (own permutohedral lattice, any size, CPU/GPU, differentiable),
    ``"naive"`` (exact O(N^2) sums; at most :data:`naive.MAX_PIXELS` pixels),
    ``"pydensecrf"`` (needs the ``pydensecrf2`` package).
    """
    params = params if params is not None else CRFParams()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    img = check_image(image)
    p = check_probs(probs, img)
    batched = as_tensor(probs, "probs").dim() == 4

    if backend == "torch":
        unary = unary_from_probs(p.to(torch.float32), classes_last=True)       # each pixel's energies side by side
        gen = DenseCRF(img, params, device=p.device).steps(params=params, unary=unary)
    elif backend == "naive":
        gen = naive_steps(img, p, params)
    else:
        gen = pydensecrf_steps(img, p, params)

    def convert(q: torch.Tensor):
        return to_kind(q if batched else q[0], probs)

    if steps:
        return (convert(q) for q in gen)
    q = None
    for q in gen:
        pass
    if q is None:
        q = torch.softmax(-unary_from_probs(p.float()), dim=1)
    return convert(q)
