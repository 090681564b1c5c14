"""The dense CRF: torch (permutohedral) vs naive vs pydensecrf, invariances, gradients, errors."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from deeplab_lessons.crf import CRFParams, DenseCRF, PermutohedralLattice, dense_crf, lattice_features
from deeplab_lessons.crf import gaussian_kernel_matrix, naive_steps, unary_from_probs
from deeplab_lessons.data import synthesize_image

HAS_PYDENSECRF = importlib.util.find_spec("pydensecrf") is not None
needs_pydensecrf = pytest.mark.skipif(not HAS_PYDENSECRF, reason="pydensecrf2 not installed")


def noisy_probs(labels: np.ndarray, num_classes: int, seed: int, signal: float = 1.0) -> np.ndarray:
    """Softmax of Gaussian noise plus ``signal`` on the true class: a weak, speckled unary."""
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    logits = rng.normal(0.0, 1.0, (num_classes, h, w))
    truth = np.where(labels == 255, 0, labels) % num_classes
    logits[truth, np.arange(h)[:, None], np.arange(w)] += signal
    p = np.exp(logits - logits.max(0))
    return (p / p.sum(0)).astype(np.float32)


@pytest.fixture(scope="module")
def small_case():
    image, labels = synthesize_image(0, 2, size=(40, 48))
    return image, labels, noisy_probs(labels, 5, seed=1)


def agreement(a, b) -> float:
    return float((np.asarray(a).argmax(0) == np.asarray(b).argmax(0)).mean())


# ---------------------------------------------------------------------------------------------
# The lattice itself


def test_lattice_filter_approximates_the_gaussian_kernel():
    """Normalised lattice filtering vs the exact Gaussian sum, on a 2-D and a 5-D feature set."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    regions = np.full((24, 32, 3), 90.0)
    regions[5:18, 6:20] = (200, 40, 40)                       # two colour regions with grain
    regions = np.clip(regions + rng.normal(0, 6, regions.shape), 0, 255).astype(np.uint8)
    striped, _ = synthesize_image(3, 0, size=(24, 32))        # the embedded set: stripes, clutter, badges
    for image, worst, mean in ((None, 0.08, 0.01), (regions, 0.08, 0.01), (striped, None, 0.01)):
        feats = (lattice_features(None, 24, 32, 3.0) if image is None
                 else lattice_features(torch.from_numpy(image)[None], 24, 32, 20.0, 13.0))
        lat = PermutohedralLattice(feats)
        values = torch.rand(24 * 32, 3)
        exact = gaussian_kernel_matrix(feats[0]) @ values.double()
        ones_exact = gaussian_kernel_matrix(feats[0]).sum(1, keepdim=True)
        approx = lat.filter(values).double()
        ones_approx = lat.filter(torch.ones(24 * 32, 1)).double()
        # the lattice's overall scale is arbitrary: compare normalised (weighted-mean) outputs
        err = ((approx / ones_approx) - (exact / ones_exact)).abs() / values.max()
        assert err.mean() < mean, err.mean()
        # the largest error sits at a pixel whose colour has almost no neighbours (a tiny
        # normaliser); on a textured image that pixel exists, so only the mean is bounded there
        if worst is not None:
            assert err.max() < worst, err.max()


def test_lattice_splat_weights_are_barycentric_and_blur_symmetric():
    image, _ = synthesize_image(1, 0, size=(16, 20))
    lat = PermutohedralLattice(lattice_features(torch.from_numpy(image)[None], 16, 20, 5.0, 9.0))
    weights = lat.splat.weights
    assert torch.all(weights >= -1e-6)
    per_pixel = torch.zeros(16 * 20).index_add_(0, lat.splat.index, weights)
    torch.testing.assert_close(per_pixel, torch.ones(16 * 20), atol=1e-5, rtol=0)
    m = lat.num_points
    for blur in lat.blur:
        dense = torch.zeros(m, m).index_put_((torch.arange(m).repeat_interleave(3), blur.index.reshape(-1)),
                                             blur.weights.reshape(-1), accumulate=True)
        torch.testing.assert_close(dense, dense.T)


def test_lattice_keeps_images_of_a_batch_apart():
    a, _ = synthesize_image(0, 0, size=(20, 24))
    b, _ = synthesize_image(0, 1, size=(20, 24))
    feats = lattice_features(torch.from_numpy(np.stack([a, b])), 20, 24, 10.0, 8.0)
    joint = PermutohedralLattice(feats)
    values = torch.rand(2 * 20 * 24, 4)
    out = joint.filter(values)
    for i in range(2):
        alone = PermutohedralLattice(feats[i:i + 1]).filter(values[i * 480:(i + 1) * 480])
        torch.testing.assert_close(out[i * 480:(i + 1) * 480], alone)


# ---------------------------------------------------------------------------------------------
# Backends against each other


@pytest.mark.parametrize("params", [CRFParams(), CRFParams(bi_xy_std=10, bi_rgb_std=13, iterations=5),
                                    CRFParams(pos_w=0), CRFParams(bi_w=0, pos_w=5),
                                    CRFParams(normalization="symmetric"),
                                    CRFParams(bi_xy_std=10, bi_rgb_std=13, normalization="symmetric")])
def test_torch_agrees_with_naive(small_case, params):
    image, _, probs = small_case
    q_naive = dense_crf(image, probs, params, backend="naive")
    q_torch = dense_crf(image, probs, params, backend="torch")
    assert agreement(q_naive, q_torch) >= 0.99
    np.testing.assert_allclose(q_torch.sum(0), 1.0, atol=1e-5)


@needs_pydensecrf
@pytest.mark.parametrize("normalization", ["after", "symmetric"])
def test_torch_matches_pydensecrf_numerically(normalization):
    """Same lattice, normalisation (NORMALIZE_AFTER / NORMALIZE_SYMMETRIC), compatibility and
    update: equal to float32 rounding."""
    image, labels = synthesize_image(0, 1, size=(96, 128))
    probs = noisy_probs(labels, 21, seed=2, signal=1.5)
    for params in (CRFParams(normalization=normalization),
                   CRFParams(bi_w=5, bi_xy_std=67, bi_rgb_std=3, pos_w=3, pos_xy_std=1, normalization=normalization)):
        q_pd = dense_crf(image, probs, params, backend="pydensecrf")
        q_torch = dense_crf(image, probs, params, backend="torch")
        assert np.abs(q_pd - q_torch).max() < 1e-4
        assert agreement(q_pd, q_torch) >= 0.999


@needs_pydensecrf
def test_steps_follow_pydensecrf_iteration_by_iteration(small_case):
    image, _, probs = small_case
    params = CRFParams(iterations=4)
    torch_steps = list(dense_crf(image, probs, params, steps=True))
    pd_steps = list(dense_crf(image, probs, params, backend="pydensecrf", steps=True))
    assert len(torch_steps) == len(pd_steps) == 4
    for a, b in zip(torch_steps, pd_steps):
        assert np.abs(a - b).max() < 1e-4


def test_naive_after_normalisation_is_a_weighted_average_by_hand(small_case):
    """One mean-field step with D^-1 K written out in numpy (rows of D^-1 K sum to 1) against the
    naive backend; the symmetric normalisation gives another answer on the same input."""
    image, _, probs = small_case
    crop, p = image[:12, :14], probs[:, :12, :14] / probs[:, :12, :14].sum(0)
    params = CRFParams(pos_w=2.0, pos_xy_std=2.0, bi_w=3.0, bi_xy_std=6.0, bi_rgb_std=20.0, iterations=1)
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    pos = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    rgb = crop.reshape(-1, 3).astype(np.float64)

    def gauss(f):
        d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
        return np.exp(-0.5 * d2)

    k_bi = gauss(np.concatenate([pos / params.bi_xy_std, rgb / params.bi_rgb_std], 1))
    k_pos = gauss(pos / params.pos_xy_std)
    q0 = p.reshape(p.shape[0], -1).T.astype(np.float64)
    unary = -np.log(np.maximum(q0, 1e-5))
    message = sum(weight * (k / k.sum(1, keepdims=True)) @ q0 for weight, k in ((params.bi_w, k_bi),
                                                                               (params.pos_w, k_pos)))
    energy = -unary + message
    expected = np.exp(energy - energy.max(1, keepdims=True))
    expected = (expected / expected.sum(1, keepdims=True)).T.reshape(p.shape)
    q_naive = dense_crf(crop, p, params, backend="naive")
    np.testing.assert_allclose(q_naive, expected, atol=1e-5)
    q_sym = dense_crf(crop, p, params.replace(normalization="symmetric"), backend="naive")
    assert np.abs(q_sym - expected).max() > 1e-3


def test_crf_cleans_a_noisy_unary(small_case):
    image, labels, probs = small_case
    truth = np.where(labels == 255, 0, labels) % 5
    scored = labels != 255
    before = (probs.argmax(0) == truth)[scored].mean()
    after = (dense_crf(image, probs).argmax(0) == truth)[scored].mean()
    assert after > before + 0.2


def test_self_term_barely_matters(small_case):
    """densecrf keeps j = i in the message; the paper's sum over j != i gives nearly the same labels."""
    image, _, probs = small_case
    with_self = list(naive_steps(image, probs))[-1][0].numpy()
    without = list(naive_steps(image, probs, include_self=False))[-1][0].numpy()
    assert agreement(with_self, without) >= 0.98


# ---------------------------------------------------------------------------------------------
# Invariances


def test_zero_weights_return_the_normalised_probs(small_case):
    image, _, probs = small_case
    probs = probs.copy()
    probs[0, :5, :5] = 0.0                                     # zeros are clipped to 1e-5, not -inf
    probs /= probs.sum(0, keepdims=True)
    for backend in ("torch", "naive"):
        q = dense_crf(image, probs, CRFParams(bi_w=0, pos_w=0), backend=backend)
        clipped = np.maximum(probs, 1e-5)
        np.testing.assert_allclose(q, clipped / clipped.sum(0), atol=1e-6)


def test_zero_iterations_is_the_initialisation(small_case):
    image, _, probs = small_case
    q = dense_crf(image, probs, CRFParams(iterations=0))
    np.testing.assert_allclose(q, probs, atol=1e-4)


def test_per_pixel_constant_in_the_unary_changes_nothing(small_case):
    image, _, probs = small_case
    crf = DenseCRF(image)
    unary = -torch.log(torch.from_numpy(probs))
    shift = torch.rand(1, *unary.shape[1:]) * 5.0
    torch.testing.assert_close(crf(unary=unary), crf(unary=unary + shift), atol=1e-5, rtol=0)


def test_transposing_the_image_transposes_the_result(small_case):
    image, _, probs = small_case
    image_t = np.ascontiguousarray(image.transpose(1, 0, 2))
    probs_t = np.ascontiguousarray(probs.transpose(0, 2, 1))
    exact = dense_crf(image, probs, backend="naive")
    exact_t = dense_crf(image_t, probs_t, backend="naive")
    np.testing.assert_allclose(exact_t, exact.transpose(0, 2, 1), atol=1e-6)
    # the lattice is not symmetric in its feature axes, so the torch result transposes approximately
    fast_t = dense_crf(image_t, probs_t)
    assert agreement(fast_t.transpose(0, 2, 1), dense_crf(image, probs)) >= 0.99


def test_batch_equals_one_at_a_time():
    images, probs = [], []
    for i in range(2):
        image, labels = synthesize_image(4, i, size=(32, 40))
        images.append(image)
        probs.append(noisy_probs(labels, 6, seed=i))
    batched = dense_crf(np.stack(images), np.stack(probs))
    assert batched.shape == (2, 6, 32, 40)
    for i in range(2):
        np.testing.assert_allclose(batched[i], dense_crf(images[i], probs[i]), atol=1e-5)


def test_array_kind_and_dtype_follow_probs(small_case):
    image, _, probs = small_case
    q_np = dense_crf(image, probs.astype(np.float64))
    assert isinstance(q_np, np.ndarray) and q_np.dtype == np.float64
    q_t = dense_crf(torch.from_numpy(image), torch.from_numpy(probs))
    assert isinstance(q_t, torch.Tensor) and q_t.dtype == torch.float32 and q_t.shape == probs.shape


def test_unary_with_classes_last_is_the_same_energy_laid_out_by_pixel(small_case):
    """classes_last writes -log(max(p, clip)) with each pixel's C energies side by side (mean field's [P, C] rows are
    a view of it), for one image and a batch; with a gradient asked for it is still differentiable."""
    _, _, probs = small_case
    p = torch.from_numpy(probs)
    p[0, 0, 0], p[1, 0, 0] = 0.0, p[1, 0, 0] + p[0, 0, 0]                # a zero probability: clipped, finite
    for x in (p, torch.stack([p, p.flip(-1)])):
        plain, rows = unary_from_probs(x), unary_from_probs(x, classes_last=True)
        assert torch.equal(plain, rows) and torch.isfinite(rows).all()
        assert rows.movedim(-3, -1).is_contiguous() and not rows.is_contiguous()
    leaf = p.clone().requires_grad_(True)
    energy = unary_from_probs(leaf, classes_last=True)
    energy.sum().backward()
    assert torch.equal(energy.detach(), unary_from_probs(p)) and torch.isfinite(leaf.grad).all()


# ---------------------------------------------------------------------------------------------
# Gradients, zeros, devices


def test_gradients_reach_the_unary_and_are_finite(small_case):
    image, _, probs = small_case
    logits = torch.log(torch.from_numpy(probs)).requires_grad_(True)
    crf = DenseCRF(image, CRFParams(iterations=3))
    q = crf(unary=-torch.log_softmax(logits, dim=0))
    loss = -(q[0, 1] + 1e-6).log().mean()
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_lattice_gradient_is_the_transposed_filter():
    """The filter is linear, v -> K v, so d<probe, K v>/dv = K^T probe (K read off column by column)."""
    image, _ = synthesize_image(2, 0, size=(8, 10))
    lat = PermutohedralLattice(lattice_features(torch.from_numpy(image)[None], 8, 10, 4.0, 20.0))
    kernel = lat.filter(torch.eye(80))                                  # column j is K e_j
    values = torch.rand(80, 2, requires_grad=True)
    probe = torch.rand(80, 2)
    (lat.filter(values) * probe).sum().backward()
    torch.testing.assert_close(values.grad, kernel.T @ probe, atol=1e-5, rtol=1e-5)


def test_lattice_sum_gradient_uses_the_gains_of_its_own_pass():
    """Two passes with other gains before one backward: each output's gradient is its own transposed filter."""
    from deeplab_lessons.crf import LatticeSum

    image, _ = synthesize_image(2, 0, size=(8, 10))
    img = torch.from_numpy(image)[None]
    total = LatticeSum([PermutohedralLattice(lattice_features(img, 8, 10, 4.0, 20.0)),
                        PermutohedralLattice(lattice_features(None, 8, 10, 2.0))])
    first, second = (2.0, 0.5), (0.1, 3.0)
    values = torch.rand(80, 2, requires_grad=True)
    probe = torch.rand(80, 2)
    out_first = total.filter(values, first)
    total.filter(values, second)                                          # another pass, not differentiated
    (out_first * probe).sum().backward()
    kernel = total.filter(torch.eye(80), first)                           # column j is K e_j, with the first gains
    torch.testing.assert_close(values.grad, kernel.T @ probe, atol=1e-5, rtol=1e-5)


def test_mean_field_never_overwrites_what_it_yielded():
    """A filter that returns its input (a view of q) and a float32 filter under a float64 unary: each yielded Q
    stays as it was, and the result is what energy + w * filter computes."""
    from deeplab_lessons.crf import Kernel
    from deeplab_lessons.crf.core import mean_field

    unary = -torch.log_softmax(torch.randn(30, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    identity = Kernel(2.0, lambda q: q, 1.0)
    steps = [q.clone() for q in mean_field(unary, [identity], 3)]
    yielded = list(mean_field(unary, [identity], 3))
    for kept, q in zip(steps, yielded):
        torch.testing.assert_close(q, kept)
    q = torch.softmax(-unary, dim=1)
    for expected in yielded:
        q = torch.softmax(-unary + 2.0 * q, dim=1)
        torch.testing.assert_close(expected, q)
    as_float = Kernel(1.0, lambda q: q.float() * 0.5, 1.0)
    assert next(mean_field(unary.double(), [as_float], 1)).dtype == torch.float64


def test_no_nan_for_zero_probabilities(small_case):
    image, _, probs = small_case
    hard = np.zeros_like(probs)
    hard[probs.argmax(0), np.arange(probs.shape[1])[:, None], np.arange(probs.shape[2])] = 1.0
    q = dense_crf(image, hard)
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu(small_case):
    image, _, probs = small_case
    q_gpu = dense_crf(torch.from_numpy(image).cuda(), torch.from_numpy(probs).cuda())
    assert q_gpu.is_cuda
    np.testing.assert_allclose(q_gpu.cpu().numpy(), dense_crf(image, probs), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The cached lattice


def test_weights_and_iterations_reuse_the_lattice(small_case):
    image, _, probs = small_case
    crf = DenseCRF(image)
    crf(probs)
    assert crf.lattice_builds == 2                                     # bilateral + Gaussian
    for params in (CRFParams(bi_w=7), CRFParams(pos_w=1, iterations=3), CRFParams(bi_w=0)):
        crf(probs, params=params)
    assert crf.lattice_builds == 2
    crf(probs, params=CRFParams(bi_rgb_std=9))
    assert crf.lattice_builds == 3
    crf(probs, params=CRFParams())                                     # back to a cached one
    assert crf.lattice_builds == 3


def test_cached_crf_equals_a_fresh_one(small_case):
    image, _, probs = small_case
    crf = DenseCRF(image)
    crf(probs, params=CRFParams(bi_w=9))
    params = CRFParams(bi_w=2, pos_w=6, iterations=4)
    np.testing.assert_allclose(crf(probs, params=params).numpy(), DenseCRF(image)(probs, params).numpy())


# ---------------------------------------------------------------------------------------------
# Errors


def test_bad_inputs_raise_clear_errors(small_case):
    image, _, probs = small_case
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match="H, W, 3"):
        dense_crf(image[..., :2].copy(), probs)
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(image, probs * 2)
    with pytest.raises(ValueError, match=">= 0"):
        dense_crf(image, -probs)
    with pytest.raises(ValueError, match="disagree"):
        dense_crf(image, probs[:, :-1])
    with pytest.raises(ValueError, match="backend"):
        dense_crf(image, probs, backend="cuda")
    with pytest.raises(ValueError, match="bi_xy_std"):
        CRFParams(bi_xy_std=0)
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=2.5)
    with pytest.raises(ValueError, match="normalization must be one of"):
        CRFParams(normalization="before")
    big, big_labels = synthesize_image(0, 0, size=(80, 80))
    with pytest.raises(ValueError, match="naive"):
        dense_crf(big, noisy_probs(big_labels, 3, seed=0), backend="naive")


def test_package_works_without_pydensecrf(small_case, monkeypatch):
    image, _, probs = small_case
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert dense_crf(image, probs, backend="naive").shape == probs.shape
    assert dense_crf(image, probs).shape == probs.shape
    with pytest.raises(ImportError, match="pydensecrf2"):
        dense_crf(image, probs, backend="pydensecrf")


# ---------------------------------------------------------------------------------------------
# Where the CRF runs: after or before upsampling


def test_refine_in_both_orders():
    from deeplab_lessons.crf import downsample_image, refine
    from deeplab_lessons.models import upsample_logits

    image, labels = synthesize_image(5, 0, size=(64, 80))
    torch.manual_seed(0)
    logits = torch.randn(4, 8, 10)
    up = refine(image, logits, CRFParams(iterations=3))
    expected = dense_crf(image, torch.softmax(upsample_logits(logits[None], (64, 80), 8)[0], 0),
                         CRFParams(iterations=3))
    torch.testing.assert_close(up, expected)
    # with both weights 0 the stride-8 CRF is the softmax, and only the upsampling remains
    first = refine(image, logits, CRFParams(bi_w=0, pos_w=0), order="crf_first")
    assert first.shape == (4, 64, 80)
    torch.testing.assert_close(first, upsample_logits(torch.softmax(logits, 0)[None], (64, 80), 8)[0],
                               atol=1e-4, rtol=0)
    small = downsample_image(torch.from_numpy(image), (8, 10), 8)
    assert small.shape == (8, 10, 3) and small.dtype == torch.uint8
    # the box centred on (0, 0) covers rows/cols 0..4
    np.testing.assert_allclose(small[0, 0].numpy(), image[:5, :5].reshape(-1, 3).mean(0), atol=0.51)
    with pytest.raises(ValueError, match="order"):
        refine(image, logits, order="sideways")


def test_refine_runs_a_batch_as_one_mean_field():
    """A batch of images (the GPU path of lessons 06/07) gives each image's own result, in both orders."""
    from deeplab_lessons.crf import refine

    images = np.stack([synthesize_image(5, k, size=(48, 64))[0] for k in range(3)])
    torch.manual_seed(1)
    logits = 3 * torch.randn(3, 6, 6, 8)
    for order in ("upsample_first", "crf_first"):
        batched = refine(images, logits, CRFParams(iterations=4), order=order)
        one_by_one = torch.stack([refine(i, l, CRFParams(iterations=4), order=order) for i, l in zip(images, logits)])
        assert batched.shape == (3, 6, 48, 64)
        torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="3 images but 2 logit maps"):
        refine(images, logits[:2])
    with pytest.raises(ValueError, match=r"logits must be \[C, h, w\]"):
        refine(images[0], logits)


def test_grid_search_scores_each_combination_like_a_direct_evaluation():
    from deeplab_lessons.crf import CRFSample, coarse_to_fine, grid_search
    from deeplab_lessons.metrics import ConfusionMatrix

    samples = []
    for index in range(2):
        image, labels = synthesize_image(5, index, size=(32, 40))
        probs = torch.from_numpy(noisy_probs(labels, 21, seed=index, signal=1.2))
        samples.append(CRFSample(torch.from_numpy(image), probs, torch.from_numpy(labels.astype(np.int64))))
    grid = {"bi_w": [0.0, 5.0], "bi_rgb_std": [3.0, 10.0]}
    scored = grid_search(samples, grid)
    assert len(scored) == 4 and [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    for params, miou in scored:
        cm = ConfusionMatrix(21)
        for s in samples:
            cm.update(torch.as_tensor(dense_crf(s.image.numpy(), s.probs, params)).argmax(0), s.target)
        assert miou == pytest.approx(cm.compute()["mean_iou"], abs=1e-9)
    best, best_miou, everything = coarse_to_fine(samples, {"bi_w": [5.0, 10.0], "bi_xy_std": [50.0, 100.0]})
    assert best_miou == max(s for _, s in everything)
    assert all(5.0 <= p.bi_w <= 10.0 and 50.0 <= p.bi_xy_std <= 100.0 for p, _ in everything)
    assert len({(p.bi_w, p.bi_xy_std) for p, _ in everything}) > 4          # the fine stage tried new points
    with pytest.raises(ValueError, match="unknown CRFParams fields"):
        grid_search(samples, {"theta": [1.0]})
