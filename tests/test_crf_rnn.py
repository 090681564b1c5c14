"""CRF as RNN (deeplab_lessons.crf.rnn): equal to the dense CRF at initialisation, exact gradients, it learns."""

import numpy as np
import pytest
import torch

from deeplab_lessons.crf import CRFasRNN, CRFParams, dense_crf


def _scene(batch=1, height=24, width=32, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, height, width, 3), generator=g, dtype=torch.uint8)
    images[:, :, : width // 2] //= 4                      # two regions of different brightness: edges to follow
    logits = 2 * torch.randn(batch, classes, height, width, generator=g)
    return images, logits


@pytest.mark.parametrize("normalization", ["after", "symmetric"])
def test_at_initialisation_it_is_the_dense_crf(normalization):
    images, logits = _scene(batch=2)
    params = CRFParams(normalization=normalization, bi_xy_std=20.0, bi_rgb_std=10.0)
    layer = CRFasRNN(4, params, iterations=10)
    with torch.no_grad():
        q = torch.softmax(layer(images, logits), dim=1)
    for b in range(2):
        ref = dense_crf(images[b], torch.softmax(logits[b], 0), params.replace(iterations=10), backend="torch")
        torch.testing.assert_close(q[b], ref, rtol=0, atol=1e-4)
    zero = CRFasRNN(4, params, iterations=0)
    torch.testing.assert_close(zero(images, logits), torch.log_softmax(logits, 1))


def test_gradcheck_in_double_precision():
    images, logits = _scene(height=5, width=6, classes=3, seed=1)
    layer = CRFasRNN(3, CRFParams(bi_xy_std=3.0, bi_rgb_std=20.0, pos_xy_std=1.5), iterations=2).double()
    with torch.no_grad():
        layer.compatibility.add_(0.1 * torch.randn(3, 3, dtype=torch.float64))   # away from the identity
    logits = logits.double().requires_grad_(True)

    def f(lg, log_w, compat):
        return torch.func.functional_call(layer, {"log_weights": log_w, "compatibility": compat}, (images, lg))

    inputs = (logits, layer.log_weights.detach().clone().requires_grad_(True),
              layer.compatibility.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_a_few_steps_lower_the_loss():
    images, logits = _scene(classes=3, seed=2)
    target = torch.zeros(1, 24, 32, dtype=torch.long)
    target[:, :, 16:] = 2                                      # the bright half is class 2
    layer = CRFasRNN(3, CRFParams(bi_xy_std=20.0, bi_rgb_std=10.0), iterations=3)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(layer(images, logits), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert (layer.weights > 0).all() and not torch.equal(layer.compatibility.detach(), torch.eye(3))
    assert layer.current_params().bi_w == pytest.approx(float(layer.weights[0].detach()))


def test_clear_errors_for_bad_input():
    images, logits = _scene()
    layer = CRFasRNN(4)
    with pytest.raises(ValueError, match="uint8"):
        layer(images.float(), logits)
    with pytest.raises(ValueError, match="at the images' size"):
        layer(images, logits[..., :-1])
    with pytest.raises(ValueError, match="this CRF 4"):
        layer(images, logits[:, :3])
    with pytest.raises(TypeError):
        layer(np.asarray(images), logits)
    for bad in (1, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            CRFasRNN(bad)
    with pytest.raises(ValueError, match="iterations"):
        CRFasRNN(4, iterations=-1)
