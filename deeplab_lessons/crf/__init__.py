"""The fully connected CRF of DeepLab v1/v2 (Krähenbühl & Koltun 2011), three ways.

Layers, bottom to top (each imports only from the ones below it):

- :mod:`.core`: :class:`CRFParams`, input checks, the unary, kernel normalisation and the
  mean-field loop that every backend shares; :mod:`.lattice`: the permutohedral lattice.
- the backends: :mod:`.torch_backend` (:class:`DenseCRF`, the lattice in PyTorch),
  :mod:`.naive` (the exact O(N^2) sums, the reference) and :mod:`.pydensecrf_backend`
  (the C++ library, imported only when asked for).
- :mod:`.api`: :func:`dense_crf`, which dispatches to a backend.
- on top: :mod:`.pipeline` (:func:`refine`: where the CRF goes after the network),
  :mod:`.boundary` (accuracy and mIoU in a band around object boundaries, DeepLab v1's trimap experiment) and
  :mod:`.search` (v1's coarse-to-fine cross-validation of the parameters), :mod:`.rnn`
  (:class:`CRFasRNN`: the mean field as layers whose kernel weights and label compatibility are
  learnt by backpropagation, Zheng et al. 2015).

Import every name from here: ``from deeplab_lessons.crf import dense_crf, CRFParams``.
"""

from .api import BACKENDS, dense_crf
from .boundary import boundary_pixels, trimap_band, trimap_scores
from .core import (NORMALIZATIONS, PROB_CLIP, CRFParams, Kernel, check_image, check_probs, kernel_norm, make_kernel,
                   mean_field, unary_from_probs)
from .lattice import LatticeSum, PermutohedralLattice, lattice_features
from .naive import gaussian_kernel_matrix, naive_kernels, naive_steps
from .pipeline import ORDERS, downsample_image, refine
from .pydensecrf_backend import import_pydensecrf, pydensecrf_model, pydensecrf_steps
from .rnn import CRFasRNN
from .search import V1_SEARCH_RANGES, CRFSample, coarse_to_fine, grid_search
from .torch_backend import DenseCRF

__all__ = [
    "BACKENDS", "dense_crf",
    "boundary_pixels", "trimap_band", "trimap_scores",
    "NORMALIZATIONS", "PROB_CLIP", "CRFParams", "Kernel", "check_image", "check_probs", "kernel_norm", "make_kernel",
    "mean_field", "unary_from_probs",
    "LatticeSum", "PermutohedralLattice", "lattice_features",
    "gaussian_kernel_matrix", "naive_kernels", "naive_steps",
    "ORDERS", "downsample_image", "refine",
    "import_pydensecrf", "pydensecrf_model", "pydensecrf_steps",
    "CRFasRNN",
    "V1_SEARCH_RANGES", "CRFSample", "coarse_to_fine", "grid_search",
    "DenseCRF",
]
