"""The fully connected CRF of DeepLab v1/v2 (Krähenbühl & Koltun 2011), three ways.

- :func:`dense_crf` / :class:`DenseCRF`: mean field with the project's own permutohedral
  lattice in PyTorch (:mod:`.lattice`), or the exact O(N^2) sums (:mod:`.naive`), or
  pydensecrf when installed (:mod:`.pydensecrf_backend`, imported only when asked for).
- :mod:`.boundary`: accuracy and mIoU inside a band around object boundaries (the trimap of
  DeepLab v1, fig. 5).
"""

from .api import BACKENDS, CRFParams, DenseCRF, dense_crf, mean_field, unary_from_probs
from .lattice import PermutohedralLattice, lattice_features

__all__ = ["BACKENDS", "CRFParams", "DenseCRF", "dense_crf", "mean_field", "unary_from_probs",
           "PermutohedralLattice", "lattice_features"]
