"""Atrous convolution: dilate_kernel vs PyTorch's dilation, and the "algorithme à trous" surgery."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeplab_lessons.atrous import AtrousMaxPool2d, atrous_equivalence_error, dilate_kernel, remove_strides
from deeplab_lessons.receptive_field import receptive_fields


def _naive_atrous_1d(x: torch.Tensor, w: torch.Tensor, rate: int) -> torch.Tensor:
    """y[i] = sum_k x[i + rate * k] w[k], no padding: the definition, one loop."""
    span = (len(w) - 1) * rate + 1
    return torch.stack([sum(x[i + rate * k] * w[k] for k in range(len(w)))
                        for i in range(len(x) - span + 1)])


@pytest.mark.parametrize("rate", [1, 2, 3, 5])
def test_dilate_kernel_matches_pytorch_dilation(rate):
    torch.manual_seed(rate)
    w1 = torch.randn(4)
    x1 = torch.randn(40)
    wide = dilate_kernel(w1, rate)
    assert wide.shape == ((4 - 1) * rate + 1,) and torch.count_nonzero(wide) == 4
    ref = F.conv1d(x1.view(1, 1, -1), w1.view(1, 1, -1), dilation=rate).flatten()
    torch.testing.assert_close(_naive_atrous_1d(x1, w1, rate), ref)
    torch.testing.assert_close(F.conv1d(x1.view(1, 1, -1), wide.view(1, 1, -1)).flatten(), ref)

    w2 = torch.randn(5, 3, 3, 2)  # a Conv2d weight with a non-square kernel
    x2 = torch.randn(2, 3, 21, 19)
    wide2 = dilate_kernel(w2, rate)
    assert wide2.shape == (5, 3, 2 * rate + 1, rate + 1)
    torch.testing.assert_close(F.conv2d(x2, wide2, padding=rate),
                               F.conv2d(x2, w2, padding=rate, dilation=rate), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rate", [0, -1, 1.5, True, "2"])
def test_dilate_kernel_rejects_bad_rates(rate):
    with pytest.raises((ValueError, TypeError), match="rate"):
        dilate_kernel(torch.ones(3, 3), rate)


def _vgg_like(pool: tuple[int, int, int], ceil_mode: bool = False, padding_mode: str = "zeros") -> nn.Sequential:
    k, s, p = pool
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode),
        nn.Conv2d(6, 6, 3, padding=1, padding_mode=padding_mode), nn.ReLU(inplace=True),
        nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(k, s, p, ceil_mode=ceil_mode),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 5, 1))


@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 2, 1)])  # VGG16's pools / DeepLab's pools
@pytest.mark.parametrize("size", [(48, 48), (45, 53)])
def test_removing_one_and_two_strides_is_exact(pool, size):
    net = _vgg_like(pool)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    one = remove_strides(net, "8", input_size=64)             # the last pool ("pool5")
    two = remove_strides(net, ["5", "8"], input_size=64)      # "pool4" and "pool5", as DeepLab
    assert atrous_equivalence_error(net, one, x, 2) < 1e-5
    assert atrous_equivalence_error(net, two, x, 4) < 1e-5
    # the original is untouched; the dense net keeps every field size, with a finer jump
    assert net[8].stride == pool[1] and net[9].dilation == (1, 1)
    assert (two[5].stride, two[8].stride) == ((1, 1), (1, 1))
    assert two[6].dilation == (2, 2) and two[9].dilation == (4, 4) and two[9].padding == (4, 4)
    assert isinstance(two[8], AtrousMaxPool2d) and two[8].dilation == (2, 2)
    before, after = receptive_fields(net, 64), receptive_fields(two, 64)
    assert [r.size for r in before] == [r.size for r in after]
    assert before[-1].jump == 4 * after[-1].jump == 8
    # a wrong factor does not line up
    assert atrous_equivalence_error(net, one, x, 1) > 1e-2


def test_equivalence_with_reflect_padding_and_ceil_mode():
    net = _vgg_like((3, 2, 1), ceil_mode=True, padding_mode="reflect")
    x = torch.randn(1, 3, 41, 41, generator=torch.Generator().manual_seed(2))  # 41 -> 21 -> 11 -> 6
    dense = remove_strides(net, ["2", "5"], input_size=41)
    assert atrous_equivalence_error(net, dense, x, 4) < 1e-5


def test_parallel_branches_after_the_removed_stride_are_all_dilated():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2, 2))
            self.aspp = nn.ModuleList([nn.Conv2d(4, 3, 3, padding=r, dilation=r) for r in (1, 3)])

        def forward(self, x):
            x = self.trunk(x)
            return sum(branch(x) for branch in self.aspp)

    torch.manual_seed(0)
    net = Branches()
    dense = remove_strides(net, "trunk.1", input_size=32)
    assert [b.dilation for b in dense.aspp] == [(2, 2), (6, 6)]
    assert atrous_equivalence_error(net, dense, torch.randn(1, 3, 30, 34), 2) < 1e-5


@pytest.mark.parametrize("seed", range(8))
def test_atrous_max_pool_matches_max_pool(seed):
    rng = random.Random(seed)
    k, s, d = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 3)
    p, ceil = rng.randint(0, k // 2), rng.random() < 0.5
    x = torch.randn(1, 2, rng.randint(12, 20), rng.randint(12, 20))
    torch.testing.assert_close(AtrousMaxPool2d(k, s, p, d, ceil_mode=ceil)(x),
                               nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)(x))
    big = AtrousMaxPool2d(3, 1, 4, 4)(x)  # padding PyTorch's own pool would refuse
    assert big.shape == x.shape


def test_remove_strides_errors():
    net = _vgg_like((2, 2, 0))
    with pytest.raises(ValueError, match=r"'3' is not a strided.*\['2', '5', '8'\]"):
        remove_strides(net, "3")
    with pytest.raises(ValueError, match="at least one"):
        remove_strides(net, [])
    with_avg = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="AvgPool2d '2'.*cannot be dilated"):
        remove_strides(with_avg, "1", input_size=32)
    with pytest.raises(ValueError, match="wrong factor"):
        atrous_equivalence_error(net, net, torch.randn(1, 3, 32, 32), 2)


def test_copy_false_edits_in_place():
    net = _vgg_like((2, 2, 0))
    same = remove_strides(net, "8", input_size=32, copy=False)
    assert same is net and net[8].stride == (1, 1) and net[9].dilation == (2, 2)
