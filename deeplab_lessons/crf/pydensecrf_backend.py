"""A thin wrapper over pydensecrf (the ``pydensecrf2`` distribution): Krähenbühl's C++ code.

Imported only when ``backend="pydensecrf"`` is asked for, so the package works without it.
The unary is :func:`.core.unary_from_probs` (pydensecrf's ``unary_from_softmax``), kernels are
added exactly as DeepLab's scripts do (``addPairwiseGaussian`` then ``addPairwiseBilateral``,
Potts compatibility, diagonal kernels) with the normalisation ``params.normalization`` asks for:
``NORMALIZE_AFTER`` (DeepLab's) or ``NORMALIZE_SYMMETRIC`` (pydensecrf's default).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .core import CRFParams, check_image, check_probs, unary_from_probs



def import_pydensecrf():
    """``pydensecrf.densecrf``, or an ImportError that says how to get it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as err:
        raise ImportError("backend='pydensecrf' needs the pydensecrf2 package (pip install pydensecrf2; "
                          "it compiles C++ with gcc). backend='torch' needs nothing extra.") from err
    return dcrf


def pydensecrf_model(image: np.ndarray, probs: np.ndarray, params: CRFParams):
    """A ready ``DenseCRF2D`` for one ``[H, W, 3]`` uint8 image and ``[C, H, W]`` probabilities."""
    dcrf = import_pydensecrf()
    c, h, w = probs.shape
    model = dcrf.DenseCRF2D(w, h, c)
    unary = unary_from_probs(torch.from_numpy(probs.astype(np.float32))).numpy()
    model.setUnaryEnergy(np.ascontiguousarray(unary.reshape(c, h * w)))
    normalization = {"after": dcrf.NORMALIZE_AFTER, "symmetric": dcrf.NORMALIZE_SYMMETRIC}[params.normalization]
    if params.pos_w != 0:
        model.addPairwiseGaussian(sxy=float(params.pos_xy_std), compat=float(params.pos_w),
                                  normalization=normalization)
    if params.bi_w != 0:
        model.addPairwiseBilateral(sxy=float(params.bi_xy_std), srgb=float(params.bi_rgb_std),
                                   rgbim=np.ascontiguousarray(image), compat=float(params.bi_w),
                                   normalization=normalization)
    return model


def pydensecrf_steps(image, probs, params: CRFParams | None = None) -> Iterator[torch.Tensor]:
    """Yield pydensecrf's marginals ``[B, C, H, W]`` (float32 tensor) after each iteration."""
    params = params if params is not None else CRFParams()
    img = check_image(image).cpu().numpy()
    p = check_probs(probs, torch.from_numpy(img)).detach().cpu().numpy()
    b, c, h, w = p.shape
    states = []
    for i in range(b):
        model = pydensecrf_model(img[i], p[i], params)
        states.append((model, *model.startInference()))
    for _ in range(int(params.iterations)):
        out = []
        for model, q, tmp1, tmp2 in states:
            model.stepInference(q, tmp1, tmp2)
            out.append(torch.from_numpy(np.array(q, dtype=np.float32).reshape(c, h, w)))
        yield torch.stack(out)
