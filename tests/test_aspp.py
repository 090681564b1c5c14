"""ASPP: DeepLab v2's summed head, DeepLab v3's module, and the valid-tap count behind v3's image pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeplab_lessons.models import ASPP, ASPPv2Head, aspp_rates, valid_tap_counts, valid_tap_fraction


def test_aspp_rates_follow_output_stride():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    with pytest.raises(ValueError, match="output_stride"):
        aspp_rates(32)


@pytest.mark.parametrize("output_stride,size", [(16, (5, 6)), (8, (9, 11))])
def test_v3_aspp_shapes_and_rates(output_stride, size):
    torch.manual_seed(0)
    aspp = ASPP(in_channels=32, out_channels=16, atrous_rates=aspp_rates(output_stride)).eval()
    out = aspp(torch.randn(2, 32, *size))
    assert out.shape == (2, 16, *size)
    rates = [b.conv.dilation[0] for b in aspp.branches[1:4]]
    assert rates == list(aspp_rates(output_stride))
    assert [b.conv.padding[0] for b in aspp.branches[1:4]] == rates
    assert aspp.branches[0].conv.kernel_size == (1, 1)
    assert all(isinstance(b.bn, nn.BatchNorm2d) for b in aspp.branches[:4])


def test_v3_aspp_concatenates_five_branches_then_projects():
    torch.manual_seed(0)
    aspp = ASPP(8, out_channels=4, atrous_rates=(1, 2, 3)).eval()
    assert aspp.project.conv.in_channels == 5 * 4
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        branches = aspp.branch_outputs(x)
        reference = aspp.project(torch.cat(branches, dim=1))
        torch.testing.assert_close(aspp(x), reference)
        # silencing the projection's columns of branch 1 (rate 1) makes that branch irrelevant
        aspp.project.conv.weight[:, 4:8] = 0
        before = aspp(x)
        aspp.branches[1].conv.weight.normal_()
        after = aspp(x)
    assert [b.shape for b in branches] == [(2, 4, 7, 7)] * 5
    torch.testing.assert_close(before, after)
    assert not torch.allclose(before, reference)


def test_image_pooling_branch_is_global_and_constant_in_space():
    torch.manual_seed(0)
    aspp = ASPP(4, out_channels=3, atrous_rates=(1, 2, 3)).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        pooled = aspp.branches[-1](x)
        expected = aspp.branches[-1].relu(aspp.branches[-1].bn(
            F.conv2d(x.mean(dim=(2, 3), keepdim=True), aspp.branches[-1].conv.weight)))
        assert torch.allclose(pooled, expected.expand_as(pooled), atol=1e-6)
        # a change in one corner pixel reaches the opposite corner through image pooling
        y = x.clone()
        y[:, :, 0, 0] += 5.0
        assert not torch.allclose(aspp(x)[:, :, -1, -1], aspp(y)[:, :, -1, -1])


def test_v3_aspp_parameter_count_at_paper_size():
    with torch.device("meta"):
        aspp = ASPP(2048, 256, aspp_rates(16))
    conv = 2048 * 256 * (1 + 3 * 9 + 1) + 5 * 256 * 256
    bn = 2 * 256 * 6
    assert sum(p.numel() for p in aspp.parameters()) == conv + bn


def test_v3_aspp_groupnorm_allows_batch_of_one_in_training():
    aspp = ASPP(8, 4, (1, 2, 3), norm_layer=lambda c: nn.GroupNorm(2, c)).train()
    assert aspp(torch.randn(1, 8, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError):  # BatchNorm cannot normalise one value per channel
        ASPP(8, 4, (1, 2, 3)).train()(torch.randn(1, 8, 5, 5))


@pytest.mark.parametrize("rates", [(0, 6, 12), (6, -1, 18), (6, 12.5, 18), (), (True, 2, 3)])
def test_invalid_rates_are_refused(rates):
    with pytest.raises(ValueError, match="rates"):
        ASPP(8, 4, rates)
    with pytest.raises(ValueError, match="rates"):
        ASPPv2Head(8, 3, rates)


def test_v3_aspp_bad_arguments():
    with pytest.raises(ValueError, match="dropout"):
        ASPP(8, 4, (1, 2, 3), dropout=1.5)
    with pytest.raises(ValueError, match="in_channels"):
        ASPP(0, 4)


def test_v2_head_sums_branch_logits():
    torch.manual_seed(0)
    head = ASPPv2Head(6, num_classes=3, rates=(1, 2), channels=5).eval()
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        out = head(x)
        b0, b1 = head.branches[0](x), head.branches[1](x)
    assert out.shape == (1, 3, 8, 8)
    torch.testing.assert_close(out, b0 + b1)
    assert len(list(head.classifier_parameters())) == 4


# ---------------------------------------------------------------- valid taps (v3 Fig. 4)

def _conv_reference_counts(size: int, rate: int) -> torch.Tensor:
    """Valid taps per position, counted by convolving a map of ones with a dilated 3x3 of ones."""
    ones = torch.ones(1, 1, size, size, dtype=torch.float64)
    return F.conv2d(ones, torch.ones(1, 1, 3, 3, dtype=torch.float64), padding=rate, dilation=rate)[0, 0]


def test_valid_taps_hand_count():
    # 5 positions, rate 3: taps at i-3, i, i+3 -> valid per axis [2, 2, 1, 2, 2]
    counts = valid_tap_counts(5, rate=3)
    # 2D counts = outer product: 16 positions with 4, 8 with 2, 1 with 1
    assert counts == {1: 1 / 25, 2: 8 / 25, 4: 16 / 25}
    assert valid_tap_fraction(5, 3) == pytest.approx((9 / 15) ** 2)


@pytest.mark.parametrize("size,rate", [(65, 1), (65, 6), (65, 24), (65, 40), (17, 9), (9, 12)])
def test_valid_taps_against_convolution_of_ones(size, rate):
    ref = _conv_reference_counts(size, rate)
    values, freq = torch.unique(ref, return_counts=True)
    expected = {int(v): f.item() / ref.numel() for v, f in zip(values, freq)}
    assert valid_tap_counts(size, rate) == pytest.approx(expected)
    assert valid_tap_fraction(size, rate) == pytest.approx(ref.mean().item() / 9)


def test_filter_degenerates_to_1x1_when_rate_reaches_map_size():
    assert valid_tap_counts(65, 65) == {1: 1.0}
    assert valid_tap_fraction(65, 100) == pytest.approx(1 / 9)
    assert valid_tap_fraction(65, 1) > valid_tap_fraction(65, 12) > valid_tap_fraction(65, 36)
    # separable: an H x W map's fraction is the product of the two axes' (a 1-pixel axis keeps 1 of 3)
    axis = {n: 3 * valid_tap_fraction((n, 1), 40) for n in (65, 33)}
    assert valid_tap_fraction((65, 33), 40) == pytest.approx(axis[65] * axis[33])
    assert axis[33] == pytest.approx(1 / 3)


def test_valid_taps_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        valid_tap_counts(10, 2, kernel_size=4)
    with pytest.raises(ValueError, match="size"):
        valid_tap_fraction(0, 2)
    with pytest.raises(ValueError, match="rate"):
        valid_tap_fraction(10, 0)
