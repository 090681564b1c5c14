"""Receptive fields: closed form vs VGG16 reference numbers, vs independent counts, vs gradients."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from deeplab_lessons.receptive_field import (
    LayerRF, LayerSpec, effective_receptive_field, footprint_1d, footprint_2d, format_rf_table,
    gradient_receptive_field, gradient_support, level_footprints, receptive_fields,
    receptive_fields_from_specs,
)


def _hand_recurrence(specs):
    """The recurrence written out once more, as in lesson 01: (size, jump, start) per layer."""
    size, jump, start, out = 1, 1, 0.0, []
    for k, s, d, p in specs:
        eff = d * (k - 1) + 1
        size, start, jump = size + (eff - 1) * jump, start + ((eff - 1) / 2 - p) * jump, jump * s
        out.append((size, jump, start))
    return out


def _random_specs(rng: random.Random, n_layers: int, max_stride: int = 2):
    return [(rng.choice([1, 2, 3, 5]), rng.randint(1, max_stride), rng.randint(1, 3), rng.randint(0, 2))
            for _ in range(n_layers)]


@pytest.fixture(scope="module")
def vgg16_rows():
    with torch.device("meta"):  # geometry only: no 138M random numbers to draw
        vgg = torchvision.models.vgg16(weights=None)
    return receptive_fields(vgg.features, input_size=224)


def test_vgg16_reference_numbers(vgg16_rows):
    rows = vgg16_rows
    assert len(rows) == 18 and [r.kind for r in rows].count("MaxPool2d") == 5
    conv5_3, pool5 = rows[-2], rows[-1]
    assert (conv5_3.size, conv5_3.jump) == (196, 16)
    assert (pool5.size, pool5.jump, pool5.output_size) == (212, 32, (7, 7))
    assert [r.size for r in rows if r.kind == "MaxPool2d"] == [6, 16, 44, 100, 212]
    assert pool5.start == 15.5  # centre of the 2x2 pools' first window, in pixel indices


def test_vgg16_whole_model_names_the_linear_layer():
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    with pytest.raises(ValueError, match=r"classifier\.0.*Linear.*features"):
        receptive_fields(vgg)


def test_real_weights_and_meta_tracing_agree():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.Dropout(0.5),
                        nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.GELU()),
                        nn.AvgPool2d(2), nn.Conv2d(4, 2, 1))
    rows = receptive_fields(net, input_size=(37, 50))
    assert [r.name for r in rows] == ["0", "3", "5.0", "6", "7"]
    # output sizes against a real forward pass, layer prefix by layer prefix
    x = torch.randn(1, 3, 37, 50)
    shapes, h = [], x
    for layer in net:
        h = layer(h)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Sequential)):
            shapes.append(tuple(h.shape[-2:]))
    assert [r.output_size for r in rows] == shapes
    assert [(r.size, r.jump, r.start) for r in rows] == _hand_recurrence(
        [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (2, 2, 1, 0), (1, 1, 1, 0)])


@pytest.mark.parametrize("seed", range(20))
def test_closed_form_matches_hand_recurrence_and_path_counts(seed):
    rng = random.Random(seed)
    specs = _random_specs(rng, rng.randint(1, 6), max_stride=3)
    rows = receptive_fields_from_specs(specs)
    assert [(r.size, r.jump, r.start) for r in rows] == _hand_recurrence(specs)
    # independent algorithm: the transposed walk from the top unit spans exactly `size` pixels
    counts = footprint_1d(specs)
    assert len(counts) == rows[-1].size and counts[0] > 0 and counts[-1] > 0
    assert rows[-1].jump == math.prod(s for _, s, _, _ in specs)
    assert len(level_footprints(specs)) == len(specs) + 1


def _positive_stack(specs, kinds, ones: bool):
    layers = []
    for (k, s, d, p), kind in zip(specs, kinds):
        if kind == "avg":
            layers.append(nn.AvgPool2d(k, s, min(p, k // 2)))
        else:
            conv = nn.Conv2d(2, 2, k, s, p, d, bias=False)
            with torch.no_grad():  # positive weights: no path can cancel another
                conv.weight.copy_(torch.ones_like(conv.weight) if ones else conv.weight.abs() + 0.05)
            layers.append(conv)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("seed", range(12))
def test_gradient_support_is_the_closed_form_field(seed):
    rng = random.Random(100 + seed)
    torch.manual_seed(seed)
    n = rng.randint(2, 4)
    kinds = [rng.choice(["conv", "conv", "avg"]) for _ in range(n)]
    specs = [(rng.choice([2, 3, 5]) if kind == "conv" else rng.choice([2, 3]), rng.randint(1, 2),
              rng.randint(1, 3) if kind == "conv" else 1, rng.randint(0, 2)) for kind in kinds]
    specs = [(k, s, d, min(p, k // 2)) if kind == "avg" else (k, s, d, p)
             for (k, s, d, p), kind in zip(specs, kinds)]
    net = _positive_stack(specs, kinds, ones=False)
    size = 96
    rows = receptive_fields(net, input_size=size)
    top = rows[-1]
    out_h = top.output_size[0]
    centre = out_h // 2
    (r0, r1) = top.span(centre)
    assert 0 <= r0 and r1 <= size - 1  # the field of the centre unit lies inside the image
    grad = gradient_receptive_field(net, size, (centre, centre), inputs=torch.ones(1, 2, size, size))
    assert gradient_support(grad) == (r0, r1, r0, r1)
    # at the border the field runs into padding: the support is the clipped field or less
    # (pixels reached only through padded units of inner layers get no gradient)
    grad = gradient_receptive_field(net, size, (0, out_h - 1), inputs=torch.ones(1, 2, size, size))
    top_, bottom, left, right = gradient_support(grad)
    (r0, r1), (c0, c1) = top.span(0), top.span(out_h - 1)
    assert max(0, r0) <= top_ <= bottom <= r1 and c0 <= left <= right <= min(size - 1, c1)
    assert bottom == r1  # the side away from the border is not clipped


def test_gradient_of_all_ones_stack_is_the_footprint():
    specs = [(3, 1, 2, 0), (3, 2, 1, 0), (2, 1, 3, 0)]
    net = _positive_stack(specs, ["conv"] * 3, ones=True)
    rows = receptive_fields(net, input_size=64)
    grad = gradient_receptive_field(net, 64, (5, 7), inputs=torch.ones(1, 2, 64, 64))
    (r0, r1), (c0, c1) = rows[-1].span(5), rows[-1].span(7)
    window = grad[int(r0):int(r1) + 1, int(c0):int(c1) + 1].numpy()
    # channel paths: 2 output channels summed x 2 channels at each of the 2 inner levels
    # x 2 input channels summed = 16 per spatial path
    np.testing.assert_allclose(window, 16 * footprint_2d(specs), rtol=1e-6)
    assert float(grad.sum()) == pytest.approx(16 * footprint_2d(specs).sum(), rel=1e-6)


def test_gridding_holes_are_zero_gradient():
    counts = footprint_1d([(3, 1, 2)] * 3)
    assert len(counts) == 13 and (counts[1::2] == 0).all() and (counts[::2] > 0).all()
    assert (footprint_1d([(3, 1, 1), (3, 1, 2), (3, 1, 3)]) > 0).all()  # hybrid rates fill them


def test_effective_field_on_known_maps():
    square = np.zeros((41, 41))
    square[15:26, 10:21] = 1.0  # 11 x 11, centroid (20, 15)
    assert effective_receptive_field(square, mass=1.0) == 11
    assert effective_receptive_field(square, mass=0.5) == 9  # 81/121 >= 0.5 > 49/121
    # Luo et al.: a deep linear stack of 3x3 averages has a Gaussian field of width ~ sqrt(n)
    deep = footprint_2d([(3, 1, 1)] * 16).astype(float)
    erf_16 = effective_receptive_field(deep, 0.95)
    erf_4 = effective_receptive_field(footprint_2d([(3, 1, 1)] * 4).astype(float), 0.95)
    assert deep.shape[0] == 33 and erf_16 < 33 / 2
    assert 1.5 < erf_16 / erf_4 < 2.5  # 4x the depth, about 2x the width
    very_deep = footprint_1d([(3, 1, 1)] * 64)  # 3**64 paths in all: no integer overflow
    assert very_deep.sum() == pytest.approx(3.0 ** 64) and (very_deep > 0).all()


def test_gradient_receptive_field_defaults_and_training_mode_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.9), nn.Conv2d(4, 4, 3))
    net.train()
    a = gradient_receptive_field(net, (20, 24))
    b = gradient_receptive_field(net, (20, 24))
    assert net.training and a.shape == (20, 24) and torch.equal(a, b)  # eval mode: no dropout noise
    # output 18 x 22, centre unit (9, 11); start = 1 (the second conv has no padding), size 5
    assert gradient_support(a) == (8, 12, 10, 14)
    with pytest.raises(ValueError, match="position"):
        gradient_receptive_field(net, 20, (18, 0))
    with pytest.raises(ValueError, match="inputs"):
        gradient_receptive_field(net, 20, inputs=torch.ones(1, 3, 10, 10))


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.branches = nn.ModuleList([nn.Conv2d(4, 2, 3, padding=r, dilation=r) for r in (2, 4)])

    def forward(self, x):
        x = self.trunk(x)
        return sum(branch(x) for branch in self.branches)


class _Skip(nn.Module):
    def __init__(self, into_layer: bool):
        super().__init__()
        self.into_layer = into_layer
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if self.into_layer:  # b reads the block's input again: a shortcut around a
            return self.b(x) + self.a(x)
        return self.b(torch.relu(self.a(x))) + x  # residual: the main path holds the field


class _FunctionalChain(nn.Module):
    def __init__(self, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.a, self.b = nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x * 2.0))
        if self.upsample:
            h = torch.nn.functional.interpolate(h, scale_factor=2.0)
        return self.b(h)


def test_chains_in_forward_code_and_clear_errors_for_non_chains():
    rows = receptive_fields(_FunctionalChain(), 32)
    assert [(r.name, r.size, r.jump, r.output_size) for r in rows] == [
        ("a", 3, 2, (16, 16)), ("b", 7, 2, (16, 16))]
    with pytest.raises(ValueError, match=r"branches\.1.*same tensor.*branches\.0.*parallel"):
        receptive_fields(_TwoBranches(), 32)
    model = _TwoBranches()
    branch_rf = receptive_fields(nn.Sequential(model.trunk, model.branches[1]))
    assert branch_rf[-1].size == 3 + 2 * 4
    with pytest.raises(ValueError, match=r"'a'.*same tensor as layer 'b'"):
        receptive_fields(_Skip(into_layer=True), 16)
    assert receptive_fields(_Skip(into_layer=False), 16)[-1].size == 5
    with pytest.raises(ValueError, match="resamples"):
        receptive_fields(_FunctionalChain(upsample=True), 32)
    with pytest.raises(ValueError, match="Upsample"):
        receptive_fields(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3)), 16)
    with pytest.raises(ValueError, match="no Conv2d"):
        receptive_fields(nn.Sequential(nn.ReLU()), 8)


def test_non_square_layers_need_an_axis():
    net = nn.Sequential(nn.Conv2d(1, 1, (1, 7), padding=(0, 3)), nn.Conv2d(1, 1, 3, stride=(2, 1)))
    with pytest.raises(ValueError, match="axis"):
        receptive_fields(net)
    h, w = receptive_fields(net, 20, axis="h"), receptive_fields(net, 20, axis="w")
    assert (h[-1].size, h[-1].jump, w[-1].size, w[-1].jump) == (3, 2, 9, 1)
    assert h[-1].output_size == w[-1].output_size == (9, 18)
    same = receptive_fields(nn.Conv2d(1, 1, 4, padding="same", dilation=2), 10)[0]
    assert (same.padding, same.size, same.output_size) == (3, 7, (10, 10))


def test_bad_specs_and_inputs():
    with pytest.raises(ValueError, match="stride"):
        receptive_fields_from_specs([(3, 0, 1, 0)])
    with pytest.raises(ValueError, match="too small"):
        receptive_fields_from_specs([(5, 1, 2, 0)], input_size=6)
    with pytest.raises(ValueError, match="one entry per spec"):
        receptive_fields_from_specs([(3, 1)], names=["a", "b"])
    with pytest.raises(ValueError, match="axis"):
        receptive_fields(nn.Conv2d(1, 1, 3), axis="x")


def test_layer_rf_helpers_and_table():
    row = receptive_fields_from_specs([LayerSpec(3, 2, 2, 2)], input_size=11, names=["c"])[0]
    assert isinstance(row, LayerRF) and row.effective_kernel == 5
    assert row.output_size == (6, 6) and row.span(1) == (0.0, 4.0)  # (-2 .. 2) + 1 * 2
    table = format_rf_table([row], names=["conv"])
    assert "conv" in table and table.splitlines()[-1].split()[:8] == ["conv", "Conv2d", "3", "2", "2",
                                                                   "2", "5", "2"]


class _NoMetaKernel(nn.Module):
    """A chain whose forward calls an op the meta device cannot run (.item()), so it is traced for real."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, stride=2)

    def forward(self, x):
        h = self.bn(self.a(x))
        return self.b(h * (1.0 + 0.0 * float(h.mean().item())))


def test_real_forward_fallback_leaves_the_model_as_it_was():
    model = _NoMetaKernel().train()
    rows = receptive_fields(model, input_size=21)
    assert [(r.size, r.jump, r.output_size) for r in rows] == [(3, 1, (19, 19)), (5, 2, (9, 9))]
    assert model.training and model.bn.num_batches_tracked.item() == 0  # no statistics updated
    torch.testing.assert_close(model.bn.running_mean, torch.zeros(4))
