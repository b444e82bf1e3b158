"""Building blocks of the ResShift UNet (improved-diffusion style), named like the checkpoint keys."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .winograd import Conv3x3, writable

STATS_ROWS = 4096  # pixels per slice when summing channel statistics: a slice stays in cache


def _accurate(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the accurate channels-last path of :func:`group_norm`."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def group_affine(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32 ``scale`` and ``offset`` with ``group_norm(x) == x * scale + offset``, from
    accurate statistics of a channels-last float32 CPU tensor (see :func:`group_norm`)."""
    n, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    shift = flat[:, :STATS_ROWS].mean(1, keepdim=True)  # (N, 1, C)
    total = torch.zeros(n, c, dtype=torch.float64)
    squares = torch.zeros(n, c, dtype=torch.float64)
    for i in range(0, h * w, STATS_ROWS):
        part = flat[:, i : i + STATS_ROWS] - shift  # a new slice: squared in place
        total += part.sum(1)
        squares += part.square_().sum(1)
    mean_c = total / (h * w)  # of the shifted input
    var_c = (squares / (h * w) - mean_c.square()).clamp_min(0)
    mean_c = (mean_c + shift[:, 0]).view(n, groups, -1)
    mean = mean_c.mean(-1, keepdim=True)  # (N, G, 1)
    var = var_c.view(n, groups, -1).mean(-1, keepdim=True) + (mean_c - mean).square().mean(
        -1, keepdim=True
    )
    scale = (var + eps).rsqrt() * weight.view(groups, -1)  # (N, G, C/G)
    offset = bias.view(groups, -1) - mean * scale
    return scale.reshape(n, c).to(x.dtype), offset.reshape(n, c).to(x.dtype)


def group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.group_norm`` with accurate statistics for channels-last float32 tensors on the CPU too.

    The CPU kernel for channels-last input sums each group naively in float32; over a 256x256 map that
    loses about four digits of the variance (max error ~1e-4 against ~1e-6 for contiguous input), more
    than the reference's tolerances allow after a few dozen layers. Here per-channel sums of the input,
    shifted by a first estimate of its mean, are taken slice by slice (each sum pairwise, the running
    total in float64) and merged into group statistics exactly; the output keeps the channels-last layout.
    ``out``: on that path, a map of ``x``'s shape and layout to write into, ``x`` itself included
    (a map the caller no longer needs): a new 32 MiB map took 10 ms to write where the same work
    in place took 0.7 ms (the new pages cost the time); on other paths, or where it does not
    fit, a new tensor as usual. Use the return value.
    """
    if not _accurate(x):
        return F.group_norm(x, groups, weight, bias, eps)
    n, c = x.shape[:2]
    scale, offset = group_affine(x, groups, weight, bias, eps)
    nhwc = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    args = (offset.view(n, 1, 1, c), nhwc, scale.view(n, 1, 1, c))
    if out is not None and takes_output(out, x):
        return torch.addcmul(*args, out=out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return torch.addcmul(*args).permute(0, 3, 1, 2)


def takes_output(out: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether :func:`group_norm` of ``x`` would write into ``out``."""
    return _accurate(x) and writable(out, x.shape, x)


# Maps of more bytes than this go through "normalise -> SiLU -> 3x3 convolution" (and the nearest
# x2 upsampling before a convolution) in bands of rows of at most BAND_BYTES, so the normalised or
# upsampled map never exists whole: decoding a 128-latent tile (512x512 pixels) took 785 MiB of
# working memory whole and 590 MiB in bands (a scratch script with a 1 ms RSS sampler, 2-core Xeon). Statistics come from the whole map
# and every band carries a one-row halo, so the result is the whole map's up to float32 rounding
# (the convolution's Winograd tiles start at each band). Smaller maps, those of a 64x64 input of x4
# SR (at most 67 MB) and the golden cases among them, are processed whole as before. CPU float32.
LARGE_MAP_BYTES = 96 * 2**20
BAND_BYTES = 16 * 2**20


def in_bands(x: torch.Tensor, scale: int = 1) -> bool:
    """Whether ``x`` (or the map ``scale`` times its size made from it) is large enough for the
    banded paths, and of a kind they take (channels-last CPU float32, no autograd)."""
    return (
        _accurate(x)
        and not torch.is_grad_enabled()
        and scale * x.numel() * x.element_size() > LARGE_MAP_BYTES
    )


def _rows_per_band(x: torch.Tensor) -> int:
    n, c, _, w = x.shape
    return max(1, BAND_BYTES // (n * c * w * x.element_size()))


def conv_in_bands(
    rows: int,
    band: int,
    source: Callable[[int, int], torch.Tensor],
    conv: nn.Module,
    *,
    up: int = 1,
    residual: Callable[[int, int], torch.Tensor] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """A 3x3 (stride 1, padding 1) ``conv`` of a map of ``rows`` rows, made ``band`` rows at a time.

    ``source(a, b)``: the convolution's input for map rows a:b (``up`` x as many rows, e.g. after
    an upsampling); each band asks for one halo row on either side inside the map, so every kept
    output row sees its true neighbours and the map's edges the zero padding. ``residual(r0, r1)``
    is added to output rows r0:r1 (in output rows). ``out``: where to write, possibly the map the
    sources read from: each band is stored only after the next one has read its halo row.
    """
    pending: tuple[int, int, torch.Tensor] | None = None
    run: Callable[[torch.Tensor], torch.Tensor] | None = None
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        a, b = max(0, r0 - 1), min(rows, r1 + 1)
        piece = source(a, b)
        if run is None:  # Winograd filters transformed once for all bands
            run = conv.for_pieces(piece) if isinstance(conv, Conv3x3) else conv
        z = run(piece)[:, :, up * (r0 - a) : up * (r1 - a)]
        if residual is not None:
            z = z + residual(up * r0, up * r1)
        if out is None:
            n, k, _, w = z.shape
            out = torch.empty(
                (n, k, up * rows, w), dtype=z.dtype, device=z.device,
                memory_format=torch.channels_last,
            )  # fmt: skip
        if pending is not None:
            out[:, :, pending[0] : pending[1]] = pending[2]
        pending = (up * r0, up * r1, z)
    assert out is not None and pending is not None
    out[:, :, pending[0] : pending[1]] = pending[2]
    return out


def norm_silu_conv(
    x: torch.Tensor,
    norm: nn.GroupNorm,
    conv: nn.Conv2d,
    *,
    affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    residual: Callable[[int, int], torch.Tensor] | None = None,
    overwrite: bool = False,
) -> torch.Tensor:
    """``conv(silu(norm(x) * mul + add)) + residual`` in bands of rows (see :data:`LARGE_MAP_BYTES`).

    ``conv``: 3x3, stride 1, padding 1. ``affine``: (mul, add), each (N, C, 1, 1), the UNet's
    timestep scale-shift. ``residual(r0, r1)``: what to add to output rows r0:r1. ``overwrite``:
    write the output into ``x`` (a map the caller owns, with as many channels as the output).
    """
    n, c = x.shape[:2]
    scale, offset = group_affine(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    if affine is not None:
        mul, add = (t.reshape(n, c).to(scale) for t in affine)
        scale, offset = scale * mul, offset * mul + add
    scale, offset = scale.view(n, c, 1, 1), offset.view(n, c, 1, 1)

    def normalised(a: int, b: int) -> torch.Tensor:
        return F.silu(torch.addcmul(offset, x[:, :, a:b], scale), inplace=True)

    return conv_in_bands(
        x.shape[2], _rows_per_band(x), normalised, conv, residual=residual,
        out=x if overwrite else None,
    )  # fmt: skip


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same keys) computed by ``group_norm``; in float32 for float16 input, as the
    reference's autocast does (float16 statistics can overflow on some backends; bfloat16 has the
    range of float32 and stays as it is)."""

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: a map to write into where it fits, ``x`` included (see :func:`group_norm`)."""
        if x.dtype == torch.float16:
            return group_norm(
                x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
            ).to(x.dtype)
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, out)


class GroupNorm32(GroupNorm):
    """GroupNorm(32, C), computed in float32 and cast back to the input dtype."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(32, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(
            x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
        ).to(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``t`` (B,) -> (B, dim), cosines first
    (reference ``models/unet.py: timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (key ``op``)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 convolution (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not in_bands(x, scale=4):
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(up, out=up)  # the convolution written over the upsampled map
        # the upsampled map is 4x the input: made and convolved a band of rows at a time
        return conv_in_bands(
            x.shape[2], max(1, _rows_per_band(x) // 4),
            lambda a, b: F.interpolate(x[:, :, a:b], scale_factor=2, mode="nearest"),
            self.conv, up=2,
        )  # fmt: skip


class ResBlock(nn.Module):
    """Residual block with scale-shift timestep conditioning."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), Conv3x3(channels, out_channels)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Identity(),  # the reference's Dropout (rate 0 at inference): the conv stays key 3
            Conv3x3(out_channels, out_channels),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if in_bands(x):  # a large map: in bands of rows, the same result in less memory
            return self._in_bands(x, emb)
        # in_layers, then out_layers with the scale-shift, each step in place where it can be:
        # the same values as the layers one by one, with one map-sized temporary less per step
        # (a realsr-v3 UNet call at a 256x256 latent: at most 466 -> 388 MiB of live tensors)
        h = self.in_layers[2](F.silu(self.in_layers[0](x), inplace=True))
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        y = self.out_layers[0](h).mul_(1 + scale).add_(shift)
        del h
        return self.out_layers[3](F.silu(y, inplace=True)).add_(self.skip_connection(x))

    def _in_bands(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = norm_silu_conv(x, self.in_layers[0], self.in_layers[2])
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        skip = self.skip_connection
        return norm_silu_conv(
            h, self.out_layers[0], self.out_layers[3], affine=(1 + scale, shift),
            residual=lambda r0, r1: skip(x[:, :, r0:r1]), overwrite=True,
        )  # fmt: skip


class TimestepSequential(nn.Sequential):
    """The layers of one UNet block (keys as the reference's ``TimestepEmbedSequential``). The UNet
    runs them one by one with :func:`timestep_step` in a loop of its own, so that each layer's
    input is freed as the next one starts (see ``UNetModelSwin.forward``), not as a called module."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        raise TypeError("a UNet block's layers are run by UNetModelSwin.forward with timestep_step")


def timestep_step(layer: nn.Module, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """One layer of a :class:`TimestepSequential`: ResBlocks take the timestep embedding too."""
    return layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
