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


# --- training (deeplab_lessons.train.crf_rnn) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from deeplab_lessons.data import make_synthetic_voc
    from deeplab_lessons.data.voc import VOCSegmentation

    root = make_synthetic_voc(tmp_path_factory.mktemp("crf_rnn"), n_train=6, n_val=2, size=(48, 64), seed=3)
    return VOCSegmentation(root, "train"), VOCSegmentation(root, "val")


def _tiny_model():
    from deeplab_lessons.train import TrainConfig

    torch.manual_seed(0)
    return TrainConfig(model="largefov", width=0.125).build(pretrained=False).eval()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}


@pytest.mark.parametrize("mode", ["crf", "end-to-end", "network"])
def test_each_mode_trains_only_its_part_and_is_reproducible(tiny_set, mode):
    from deeplab_lessons.train import CRFTraining, train_crf_as_rnn

    train_split, val_split = tiny_set
    cfg = CRFTraining(mode=mode, steps=3, batch_size=2, seed=4, eval_every=2)
    calls = []

    def evaluate(model, crf):
        assert not model.training and not crf.training and crf.iterations == 10   # test time: the layer's own T
        calls.append(1)
        return 0.5

    outs = []
    for _ in range(2):
        model, crf = _tiny_model(), CRFasRNN(21, CRFParams(), iterations=10)
        net0, crf0 = _snapshot(model), _snapshot(crf)
        result = train_crf_as_rnn(model, crf, train_split, cfg, evaluate=evaluate)
        outs.append((result.losses, _snapshot(crf), _snapshot(model)))
        net_changed, crf_changed = _changed(net0, model), _changed(crf0, crf)
        assert bool(crf_changed) == (mode != "network")
        assert bool(net_changed) == (mode != "crf")
        # BatchNorm's running statistics stay frozen while the network learns
        assert not any(k.endswith(("running_mean", "running_var")) for k in net_changed)
        assert crf.iterations == 10 and not model.training
    assert [h["step"] for h in result.history] == [0, 2, 3] and len(calls) == 6
    assert len(result.losses) == 3 and result.seconds_per_step > 0
    assert outs[0][0] == outs[1][0]                                   # the same seed, the same run
    for a, b in zip(outs[0][1:], outs[1][1:]):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_training_the_crf_alone_lowers_its_loss_on_the_set(tiny_set):
    """With a frozen network, 20 steps on the CRF's three kinds of parameter lower the mean training loss."""
    from deeplab_lessons.train import CRFTraining, train_crf_as_rnn

    train_split, _ = tiny_set
    model, crf = _tiny_model(), CRFasRNN(21, CRFParams(), iterations=5)
    result = train_crf_as_rnn(model, crf, train_split, CRFTraining(steps=24, batch_size=2, crf_lr=0.05))
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last < first


def test_training_config_and_data_are_checked(tiny_set):
    from deeplab_lessons.train import CRFTraining, train_crf_as_rnn

    for bad in ({"mode": "both"}, {"steps": 0}, {"batch_size": 1.5}, {"crf_lr": -1.0}, {"network_lr": float("nan")},
                {"seed": -1}, {"train_iterations": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CRFTraining(**bad)
    with pytest.raises(ValueError, match="empty"):
        train_crf_as_rnn(_tiny_model(), CRFasRNN(21), [], CRFTraining(steps=1))
    train_split, _ = tiny_set
    mixed = [train_split[0], (torch.zeros(3, 40, 40, dtype=torch.uint8), torch.zeros(40, 40, dtype=torch.long))]
    with pytest.raises(ValueError, match="one size"):
        train_crf_as_rnn(_tiny_model(), CRFasRNN(21), mixed, CRFTraining(steps=1))


def test_compatibility_heatmap_shows_the_change_from_potts():
    from deeplab_lessons.viz import plot_compatibility, plot_mean_field_as_layers

    R = torch.eye(4) + 0.1 * torch.arange(16.0).reshape(4, 4)
    fig = plot_compatibility(R, class_names=["a", "b", "c", "d"])
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), (R - torch.eye(4)).numpy(), atol=1e-6)
    lo, hi = fig.axes[0].images[0].get_clim()
    assert lo == -hi == pytest.approx(-1.5)                      # symmetric colour scale around "no change"
    raw = plot_compatibility(R, class_names="abcd", identity_removed=False).axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(raw), R.numpy(), atol=1e-6)
    texts = " ".join(t.get_text() for t in plot_mean_field_as_layers().axes[0].texts)
    assert all(name in texts for name in ("message passing", "weighting", "compatibility", "adding the unary"))


def test_refined_miou_scores_the_network_and_the_layer(tiny_set):
    from deeplab_lessons.metrics import ConfusionMatrix
    from deeplab_lessons.train import refined_miou, upsampled_logits

    _, val_split = tiny_set
    pairs = [val_split[i] for i in range(len(val_split))]
    model = _tiny_model()
    cm = ConfusionMatrix(21, 255)
    with torch.no_grad():
        for image, target in pairs:
            cm.update(upsampled_logits(model, image[None])[0].argmax(0), target)
    assert refined_miou(model, None, pairs) == pytest.approx(float(cm.compute()["mean_iou"]))
    # zero mean-field steps return the network's log-probabilities: the same labels as the network alone
    assert refined_miou(model, CRFasRNN(21, iterations=0), pairs) == pytest.approx(refined_miou(model, None, pairs))
    with pytest.raises(ValueError, match="no"):
        refined_miou(model, None, [])
