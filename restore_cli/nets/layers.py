"""Building blocks of the ResShift UNet (improved-diffusion style), named like the checkpoint keys."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .winograd import Conv3x3

STATS_ROWS = 4096  # pixels per slice when summing channel statistics: a slice stays in cache


def group_norm(
    x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """``F.group_norm`` with accurate statistics for channels-last float32 tensors on the CPU too.

    The CPU kernel for channels-last input sums each group naively in float32; over a 256x256 map that
    loses about four digits of the variance (max error ~1e-4 against ~1e-6 for contiguous input), more
    than the reference's tolerances allow after a few dozen layers. Here per-channel sums of the input,
    shifted by a first estimate of its mean, are taken slice by slice (each sum pairwise, the running
    total in float64) and merged into group statistics exactly; the output keeps the channels-last layout.
    """
    n, c, h, w = x.shape
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.is_contiguous()
        or not x.is_contiguous(memory_format=torch.channels_last)
    ):
        return F.group_norm(x, groups, weight, bias, eps)
    nhwc = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    flat = nhwc.reshape(n, h * w, c)
    shift = flat[:, :STATS_ROWS].mean(1, keepdim=True)  # (N, 1, C)
    total = torch.zeros(n, c, dtype=torch.float64)
    squares = torch.zeros(n, c, dtype=torch.float64)
    for i in range(0, h * w, STATS_ROWS):
        part = flat[:, i : i + STATS_ROWS] - shift
        total += part.sum(1)
        squares += part.square().sum(1)
    mean_c = total / (h * w)  # of the shifted input
    var_c = (squares / (h * w) - mean_c.square()).clamp_min(0)
    mean_c = (mean_c + shift[:, 0]).view(n, groups, -1)
    mean = mean_c.mean(-1, keepdim=True)  # (N, G, 1)
    var = var_c.view(n, groups, -1).mean(-1, keepdim=True) + (mean_c - mean).square().mean(
        -1, keepdim=True
    )
    scale = (var + eps).rsqrt() * weight.view(groups, -1)  # (N, G, C/G)
    offset = bias.view(groups, -1) - mean * scale
    return torch.addcmul(
        offset.reshape(n, 1, 1, c).to(x.dtype), nhwc, scale.reshape(n, 1, 1, c).to(x.dtype)
    ).permute(0, 3, 1, 2)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same keys) computed by ``group_norm``; in float32 for float16 input, as the
    reference's autocast does (float16 statistics can overflow on some backends; bfloat16 has the
    range of float32 and stays as it is)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:
            return group_norm(
                x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps
            ).to(x.dtype)
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


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
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


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
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class TimestepSequential(nn.Sequential):
    """A Sequential that hands the timestep embedding to the ResBlocks in it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
