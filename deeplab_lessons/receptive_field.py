"""Receptive fields of convolutional networks: the closed form and the gradient measurement.

Lesson 01. For a chain of layers with kernel ``k``, stride ``s``, dilation ``d`` and padding
``p`` the receptive field of one output unit follows a three-line recurrence (Araujo, Norris &
Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019,
doi:10.23915/distill.00021). With the effective kernel ``k' = d (k - 1) + 1``::

    size_l  = size_{l-1} + (k'_l - 1) * jump_{l-1}           receptive field, input pixels
    jump_l  = jump_{l-1} * s_l                               input pixels between neighbours
    start_l = start_{l-1} + ((k'_l - 1) / 2 - p_l) * jump_{l-1}

starting from ``size_0 = jump_0 = 1`` and ``start_0 = 0``. Coordinates are pixel *indices*:
input pixel ``i`` is centred at ``i``, so output unit ``n`` of layer ``l`` is centred at
``start_l + n * jump_l`` and sees input pixels ``start_l + n * jump_l +- (size_l - 1) / 2``
(indices below 0 or past the image are padding).

:func:`receptive_fields` finds the layers of a real ``nn.Module`` by running it once with
forward hooks (on the ``meta`` device, so it costs nothing), which is how torchvision's VGG16 and
the project's DeepLab models are read in the order their ``forward`` calls the layers.
:func:`gradient_receptive_field` measures the same thing empirically, as ``|d out / d in|``
(Luo et al., "Understanding the Effective Receptive Field in Deep CNNs", NIPS 2016,
arXiv:1701.04128).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "LayerSpec", "LayerRF", "receptive_fields", "receptive_fields_from_specs", "format_rf_table",
    "trace_spatial_layers", "footprint_1d", "footprint_2d", "level_footprints", "gradient_receptive_field",
    "gradient_support", "effective_receptive_field", "output_length", "as_pair", "SPATIAL_LAYERS",
    "POINTWISE_LAYERS", "TracedLayer",
]


class LayerSpec(NamedTuple):
    """Geometry of one sliding-window layer along one axis (pixels; ``dilation`` 1 = dense)."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0
    ceil_mode: bool = False


@dataclass(frozen=True)
class LayerRF:
    """Receptive field of the units of one layer, in input pixels (one axis; see module docstring).

    ``size``: how many input pixels one unit sees; ``jump``: input pixels between two
    neighbouring units (the product of strides so far, the "output stride"); ``start``: centre
    of the first unit's field, as an input pixel index (may be fractional for even kernels,
    negative when padding shifts the field off the image); ``output_size``: (H, W) of the
    layer's output for the ``input_size`` asked for, else ``None``.
    """

    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    size: int
    jump: int
    start: float
    output_size: tuple[int, int] | None = None

    @property
    def effective_kernel(self) -> int:
        """Span of the dilated kernel, ``dilation * (kernel - 1) + 1`` pixels."""
        return self.dilation * (self.kernel - 1) + 1

    def span(self, index: int) -> tuple[float, float]:
        """First and last input pixel index seen by output unit ``index`` (padding included)."""
        centre = self.start + index * self.jump
        half = (self.size - 1) / 2
        return centre - half, centre + half


def _as_spec(spec) -> LayerSpec:
    """A ``LayerSpec`` from a ``LayerSpec``, a tuple ``(kernel, stride, dilation, padding)`` or a dict."""
    try:
        out = spec if isinstance(spec, LayerSpec) else LayerSpec(**spec) if isinstance(spec, dict) else LayerSpec(*spec)
    except TypeError:
        raise TypeError(f"layer {spec!r}: give a LayerSpec, a tuple (kernel, stride, dilation, padding) or a dict "
                        "with those keys") from None
    for field in ("kernel", "stride", "dilation", "padding"):
        value = getattr(out, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"layer {spec!r}: {field} must be a whole number of pixels, got {value!r}")
        if value < (0 if field == "padding" else 1):
            raise ValueError(f"layer {spec!r}: {field} must be >= {0 if field == 'padding' else 1}, got {value}")
    return out._replace(kernel=int(out.kernel), stride=int(out.stride), dilation=int(out.dilation),
                        padding=int(out.padding))


def output_length(n_in: int, spec: LayerSpec) -> int:
    """Output length of a conv/pool layer on ``n_in`` pixels, PyTorch's rule (ceil_mode included)."""
    span = spec.dilation * (spec.kernel - 1) + 1
    room = n_in + 2 * spec.padding - span
    if room < 0:
        raise ValueError(f"input of {n_in} pixels is too small for a layer spanning {span} "
                         f"pixels with padding {spec.padding}")
    if spec.ceil_mode:
        n_out = -(-room // spec.stride) + 1
        if (n_out - 1) * spec.stride >= n_in + spec.padding:  # last window must start inside
            n_out -= 1
        return n_out
    return room // spec.stride + 1


def as_pair(value) -> tuple[int, int]:
    """``(h, w)`` from an int or a 2-sequence, as PyTorch's layers store sizes (``3 -> (3, 3)``)."""
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def receptive_fields_from_specs(specs: Sequence, input_size: int | Sequence[int] | None = None,
                                names: Sequence[str] | None = None,
                                kinds: Sequence[str] | None = None) -> list[LayerRF]:
    """The closed-form recurrence over a list of layer geometries (square layers).

    ``specs``: one :class:`LayerSpec` or tuple ``(kernel, stride, dilation, padding)`` per layer,
    in forward order. ``input_size``: ``H`` or ``(H, W)`` in pixels, to also get each layer's
    output size. Returns one :class:`LayerRF` per layer (Araujo et al., Distill 2019, eqs. for
    ``r``, ``S`` and the centre offset).
    """
    specs = [_as_spec(s) for s in specs]
    names = list(names) if names is not None else [f"layer{i + 1}" for i in range(len(specs))]
    kinds = list(kinds) if kinds is not None else ["Conv2d"] * len(specs)
    if len(names) != len(specs) or len(kinds) != len(specs):
        raise ValueError(f"names/kinds must have one entry per spec ({len(specs)})")
    hw = as_pair(input_size) if input_size is not None else None
    size, jump, start = 1, 1, 0.0
    rows = []
    for spec, name, kind in zip(specs, names, kinds):
        eff = spec.dilation * (spec.kernel - 1) + 1
        size += (eff - 1) * jump
        start += ((eff - 1) / 2 - spec.padding) * jump
        jump *= spec.stride
        if hw is not None:
            hw = (output_length(hw[0], spec), output_length(hw[1], spec))
        rows.append(LayerRF(name, kind, spec.kernel, spec.stride, spec.dilation, spec.padding,
                            size, jump, start, hw))
    return rows


# ----------------------------------------------------------------------------- tracing modules

#: Layers with a sliding window: one receptive-field row each.
SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)

#: Layers that act on each pixel separately (or across channels only): transparent to the field.
POINTWISE_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
    nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm,
)


def _geometry(layer: nn.Module) -> tuple[LayerSpec, LayerSpec]:
    """Per-axis (H, W) :class:`LayerSpec` of a Conv2d / MaxPool2d / AvgPool2d."""
    kernel, stride = as_pair(layer.kernel_size), as_pair(layer.stride if layer.stride is not None
                                                      else layer.kernel_size)
    dilation = as_pair(getattr(layer, "dilation", 1))
    ceil = bool(getattr(layer, "ceil_mode", False))
    padding = layer.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # PyTorch pads total d (k - 1), the smaller half first
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    padding = as_pair(padding)
    return tuple(LayerSpec(kernel[a], stride[a], dilation[a], padding[a], ceil) for a in (0, 1))


@dataclass
class TracedLayer:
    """One sliding-window layer met during a forward pass, with its observed tensor shapes."""

    name: str
    module: nn.Module
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


class _ChainError(ValueError):
    """The module is not a plain chain of sliding-window and pointwise layers."""


def trace_spatial_layers(module: nn.Module, input_size: int | Sequence[int] = 224,
                         in_channels: int | None = None, strict: bool = True) -> list[TracedLayer]:
    """The Conv2d / MaxPool2d / AvgPool2d layers of ``module`` in the order ``forward`` calls them.

    Runs ``module`` once in eval mode (on the meta device, so nothing is computed; for real on
    the module's device, without gradients, if some operation has no meta kernel) on a
    ``1 x C x H x W`` zero input with forward hooks on every leaf module; ``C`` defaults to the
    ``in_channels`` of the first Conv2d in ``module.modules()``. With ``strict=True`` the module must be a *plain
    chain*: every sliding-window layer reads the output of the one before it, possibly through
    pointwise layers (activations, normalisation, dropout) or shape-preserving code in
    ``forward``. A ``ValueError`` names the first layer that breaks this: one tensor read by two
    layers (parallel branches such as ASPP, residual shortcuts), a layer reading an older output
    (skip connections), a resampling step in between, or a layer with no fixed geometry (Linear,
    Upsample, ConvTranspose2d, adaptive pooling that is not the identity). ``strict=False`` only
    lists the layers in call order (what :mod:`deeplab_lessons.atrous` needs).

    What hooks cannot see: operations written in ``forward`` itself. A residual addition after
    the block's last layer (``out = block(x) + x``) passes as a chain, which is right for the
    receptive field (the shortcut's field lies inside the main path's); a functional
    convolution or pooling that keeps the map's size is not counted.
    """
    hw = as_pair(input_size)
    if min(hw) < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    if in_channels is None:
        first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first_conv.in_channels if first_conv is not None else 1
    names = {id(m): n for n, m in module.named_modules()}
    produced: dict[int, tuple[int, torch.Tensor]] = {}  # tensor -> index of the layer that made it
    consumed: dict[int, tuple[str, torch.Tensor]] = {}  # tensor -> layer that read it
    # (both keep the tensors alive, so that no id is reused during the pass)
    layers: list[TracedLayer] = []

    def where(m: nn.Module) -> str:
        return f"layer {names.get(id(m), '?')!r} ({type(m).__name__})"

    def hook(m: nn.Module, args, out) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            if strict:
                raise _ChainError(f"receptive_fields: {where(m)} does not map one tensor to one tensor")
            return
        inp = args[0]
        if isinstance(m, SPATIAL_LAYERS):
            in_hw, out_hw = tuple(inp.shape[-2:]), tuple(out.shape[-2:])
            if strict:
                last = len(layers) - 1
                if id(inp) in consumed:
                    raise _ChainError(
                        f"receptive_fields: {where(m)} reads the same tensor as layer "
                        f"{consumed[id(inp)][0]!r}: parallel branches (e.g. ASPP) or a shortcut are "
                        "not a plain chain. Measure each branch on its own, e.g. "
                        "receptive_fields(nn.Sequential(trunk, branch)).")
                if id(inp) in produced and produced[id(inp)][0] != last:
                    src = produced[id(inp)][0]
                    raise _ChainError(
                        f"receptive_fields: {where(m)} reads the output of "
                        f"{'the input' if src < 0 else repr(layers[src].name)}, not of the layer "
                        "just before it: skip connections are not a plain chain")
                expected = layers[-1].out_hw if layers else hw
                if in_hw != expected:
                    raise _ChainError(
                        f"receptive_fields: {where(m)} gets a {in_hw} map but the previous layer "
                        f"made {expected}: something in forward() resamples; not a plain chain")
                consumed[id(inp)] = (names.get(id(m), "?"), inp)
            layers.append(TracedLayer(names.get(id(m), "?"), m, in_hw, out_hw))
            produced[id(out)] = (len(layers) - 1, out)
        elif isinstance(m, POINTWISE_LAYERS) or (
                isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
                and inp.shape[-2:] == out.shape[-2:]):
            if id(inp) in produced:
                produced[id(out)] = (produced[id(inp)][0], out)
        elif strict:
            raise _ChainError(
                f"receptive_fields: {where(m)} has no fixed kernel/stride geometry, so the chain "
                "has no receptive field through it. Pass the convolutional part only "
                "(e.g. vgg.features), or only the layers before it.")

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if not list(m.children())]
    was_training = module.training
    module.eval()  # a real forward (the fallback) must not update BatchNorm statistics
    try:
        # first on the meta device (shapes only, free), then for real if an op has no meta kernel
        for dev in ("meta", next((p.device for p in module.parameters()), torch.device("cpu"))):
            layers.clear(), produced.clear(), consumed.clear()
            x = torch.zeros(1, in_channels, *hw, device=dev)
            produced[id(x)] = (-1, x)
            params = ({n: torch.empty_like(t, device="meta") for n, t in
                       list(module.named_parameters()) + list(module.named_buffers())}
                      if dev == "meta" else {})
            try:
                with torch.no_grad():
                    torch.func.functional_call(module, params, (x,), strict=False)
                break
            except _ChainError:
                raise
            except (NotImplementedError, RuntimeError):
                if dev != "meta":
                    raise
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return layers


def receptive_fields(module: nn.Module, input_size: int | Sequence[int] | None = None,
                     axis: str | None = None) -> list[LayerRF]:
    """Receptive field of every Conv2d / MaxPool2d / AvgPool2d of ``module``, in forward order.

    ``module`` must be a plain chain (nested ``nn.Sequential``\\ s, torchvision's
    ``vgg16().features``, a custom module whose ``forward`` calls its layers one after the other);
    pointwise layers (ReLU, BatchNorm, Dropout, ...) are skipped. Parallel branches (ASPP),
    shortcuts, Linear or upsampling layers raise a ``ValueError`` naming the layer; measure a
    branch with ``receptive_fields(nn.Sequential(trunk, branch))``. See
    :func:`trace_spatial_layers` for the rules.

    ``input_size``: ``H`` or ``(H, W)`` in pixels; when given, each row also carries the layer's
    output size (checked against the shapes the forward pass produced). Without it the module
    is traced at 224 x 224 and ``output_size`` is ``None``.

    Returns one :class:`LayerRF` per layer: size and start in input pixels, jump in input pixels
    per output unit (Araujo et al., Distill 2019). Layers with different geometry along H and W
    need ``axis="h"`` or ``axis="w"``.
    """
    if axis not in (None, "h", "w"):
        raise ValueError(f"axis must be None, 'h' or 'w', got {axis!r}")
    traced = trace_spatial_layers(module, input_size if input_size is not None else 224)
    if not traced:
        raise ValueError(f"receptive_fields: {type(module).__name__} has no Conv2d, MaxPool2d or "
                         "AvgPool2d layer")
    specs_hw = [_geometry(t.module) for t in traced]
    if axis is None:
        for t, (sh, sw) in zip(traced, specs_hw):
            if sh != sw:
                raise ValueError(f"receptive_fields: layer {t.name!r} differs along H and W "
                                 f"({sh} vs {sw}); pass axis='h' or axis='w'")
    names = [t.name for t in traced]
    kinds = [type(t.module).__name__ for t in traced]
    rows_h = receptive_fields_from_specs([s[0] for s in specs_hw], None, names, kinds)
    rows_w = receptive_fields_from_specs([s[1] for s in specs_hw], None, names, kinds)
    rows = rows_w if axis == "w" else rows_h
    if input_size is None:
        return rows
    out = []
    for row, t in zip(rows, traced):
        out.append(LayerRF(**{**row.__dict__, "output_size": t.out_hw}))
    # the closed-form output sizes must agree with what the forward pass produced
    closed_h = receptive_fields_from_specs([s[0] for s in specs_hw], as_pair(input_size)[0])
    closed_w = receptive_fields_from_specs([s[1] for s in specs_hw], as_pair(input_size)[1])
    for t, rh, rw in zip(traced, closed_h, closed_w):
        if (rh.output_size[0], rw.output_size[0]) != t.out_hw:
            raise RuntimeError(f"receptive_fields: layer {t.name!r} produced {t.out_hw}, the closed "
                               f"form says {(rh.output_size[0], rw.output_size[0])}")
    return out


def format_rf_table(rows: Sequence[LayerRF], names: Sequence[str] | None = None) -> str:
    """A fixed-width text table of :class:`LayerRF` rows (one line per layer)."""
    names = list(names) if names is not None else [r.name for r in rows]
    width = max(6, *(len(n) for n in names))
    kind_width = max(4, *(len(r.kind) for r in rows))
    head = (f"{'layer':<{width}} {'type':<{kind_width}} {'k':>2} {'s':>2} {'d':>2} {'p':>2} "
            f"{'size':>5} {'jump':>4} {'start':>6}")
    has_out = all(r.output_size is not None for r in rows)
    if has_out:
        head += f" {'output':>9}"
    lines = [head, "-" * len(head)]
    for name, r in zip(names, rows):
        line = (f"{name:<{width}} {r.kind:<{kind_width}} {r.kernel:>2} {r.stride:>2} {r.dilation:>2} "
                f"{r.padding:>2} {r.size:>5} {r.jump:>4} {r.start:>6g}")
        if has_out:
            line += f" {r.output_size[0]:>4}x{r.output_size[1]:<4}"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- footprints

def footprint_1d(specs: Sequence) -> np.ndarray:
    """How many paths join each input pixel of the field to one output unit (one axis).

    The field of the top unit, pixel by pixel (length = the closed-form ``size``): entry ``i``
    counts the chains of kernel taps that connect input pixel ``i`` to the unit, i.e. the
    gradient ``d out / d in`` of the stack with every weight 1 and no padding. Zeros inside the
    field are pixels the unit never sees (the "gridding" of stacked dilated layers, DeepLab v3
    arXiv:1706.05587 section 3.1; Wang et al. arXiv:1702.08502). Counts are float64 (they grow
    like ``kernel ** layers``): exact integers up to 2**53, never overflowing.
    """
    counts = np.ones(1)
    for spec in reversed([_as_spec(s) for s in specs]):
        up = np.zeros((len(counts) - 1) * spec.stride + 1)
        up[::spec.stride] = counts
        taps = np.zeros(spec.dilation * (spec.kernel - 1) + 1)
        taps[::spec.dilation] = 1
        counts = np.convolve(up, taps)
    return counts


def footprint_2d(specs: Sequence) -> np.ndarray:
    """:func:`footprint_1d` for square layers in 2-D: the outer product, ``size x size`` path counts."""
    counts = footprint_1d(specs)
    return np.outer(counts, counts)


def level_footprints(specs: Sequence) -> list[np.ndarray]:
    """:func:`footprint_1d` at every level: entry ``l`` covers the units of layer ``l`` (0 = input).

    Entry ``l`` counts, for each unit of layer ``l`` inside the top unit's field (leftmost first),
    the paths from it to the top unit; used to draw which units feed which.
    """
    specs = [_as_spec(s) for s in specs]
    return [footprint_1d(specs[l:]) for l in range(len(specs) + 1)]


# ----------------------------------------------------------------------------- gradients

def gradient_receptive_field(module: nn.Module, input_size: int | Sequence[int],
                             position: Sequence[int] | None = None,
                             inputs: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """``|d out[position] / d input|`` summed over channels: the field measured by backprop.

    ``input_size``: ``H`` or ``(H, W)`` pixels. ``position``: ``(row, col)`` of the output unit
    (default: the centre of the output map); the gradient of the sum of that unit's channels is
    taken. ``inputs``: a ``1 x C x H x W`` tensor to differentiate at (default: standard normal,
    from ``seed``). The module runs in eval mode (dropout off) and is restored afterwards.

    Returns an ``H x W`` float tensor on the CPU. Its nonzero support is the theoretical field
    clipped to the image; its mass concentrates in a much smaller, Gaussian-like *effective*
    receptive field (Luo et al. 2016, arXiv:1701.04128, section 2).
    """
    hw = as_pair(input_size)
    if min(hw) < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    if inputs is None:
        first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        channels = first_conv.in_channels if first_conv is not None else 1
        gen = torch.Generator().manual_seed(seed)
        inputs = torch.randn(1, channels, *hw, generator=gen)
    elif inputs.dim() != 4 or tuple(inputs.shape[-2:]) != hw or inputs.shape[0] != 1:
        raise ValueError(f"inputs must be 1 x C x {hw[0]} x {hw[1]}, got {tuple(inputs.shape)}")
    x = inputs.detach().to(device).clone().requires_grad_(True)
    was_training = module.training
    module.eval()
    try:
        out = module(x)
        if out.dim() != 4:
            raise ValueError(f"gradient_receptive_field: module output must be N x C x H x W, "
                             f"got {tuple(out.shape)}")
        if position is None:
            position = (out.shape[-2] // 2, out.shape[-1] // 2)
        row, col = (int(v) for v in position)
        if not (0 <= row < out.shape[-2] and 0 <= col < out.shape[-1]):
            raise ValueError(f"position {tuple(position)} is outside the {tuple(out.shape[-2:])} output")
        (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x)
    finally:
        module.train(was_training)
    return grad[0].abs().sum(0).detach().cpu()


def gradient_support(grad_map: torch.Tensor | np.ndarray, rel_tol: float = 0.0) -> tuple[int, int, int, int]:
    """Bounding box ``(top, bottom, left, right)`` (inclusive pixel indices) of ``grad_map > tol``.

    ``tol = rel_tol * grad_map.max()``; 0 keeps every pixel that receives any gradient.
    """
    arr = np.asarray(grad_map, dtype=np.float64)
    if arr.ndim != 2 or arr.max() <= 0:
        raise ValueError("grad_map must be a 2-D map with some positive entry")
    rows, cols = np.nonzero(arr > rel_tol * arr.max())
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def effective_receptive_field(grad_map: torch.Tensor | np.ndarray, mass: float = 0.95) -> int:
    """Side (pixels) of the smallest square, centred on the map's centroid, holding ``mass`` of it.

    A single number for the *effective* receptive field of Luo et al. (2016): how wide the
    region is that carries most of ``|d out / d in|`` (``mass`` in (0, 1]).
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    arr = np.asarray(grad_map, dtype=np.float64)
    if arr.ndim != 2 or arr.sum() <= 0:
        raise ValueError("grad_map must be a 2-D map with some positive entry")
    total = arr.sum()
    rows, cols = np.indices(arr.shape)
    cy = int(round(float((rows * arr).sum() / total)))
    cx = int(round(float((cols * arr).sum() / total)))
    for half in range(max(arr.shape)):
        window = arr[max(cy - half, 0):cy + half + 1, max(cx - half, 0):cx + half + 1]
        if window.sum() >= mass * total * (1 - 1e-12):
            return 2 * half + 1
    return 2 * max(arr.shape) - 1
