"""The SR3-style conditional UNet of FLUX-IR's task models (low-light, raindrop, underwater).

FLUX-IR ``Task_specitic_restoration/model/ddpm_modules/unet.py: UNet`` (the GSAD / SR3 lineage).
Attribute names are the checkpoint's keys minus ``denoise_fn.``, so weights load with no renaming.

The network predicts the noise eps from ``cat([y, x_t])`` (LQ first) and the continuous noise level
``l = sqrt(alpha_bar)`` (one float per sample), embedded WaveGrad style and added to every residual
block. It returns ``final_conv(x)`` only: ``var_conv`` and every block's ``mlp`` are in the files but
never evaluated by the released ``UNet.forward`` / ``ResnetBlock.forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import SR3Config
from .layers import GroupNorm, Upsample
from .winograd import Conv3x3


def level_encoding(level: torch.Tensor, dim: int) -> torch.Tensor:
    """WaveGrad encoding of noise levels ``level`` (B,) -> (B, dim): all sines, then all cosines
    (``unet.py: PositionalEncoding``; no scaling of the level). Computed in float32."""
    count = dim // 2
    step = torch.arange(count, dtype=torch.float32, device=level.device) / count
    enc = level.float()[:, None] * torch.exp(-math.log(1e4) * step[None])
    return torch.cat([torch.sin(enc), torch.cos(enc)], dim=-1)


class PositionalEncoding(nn.Module):
    """No parameters: slot 0 of ``noise_level_mlp``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return level_encoding(level, self.dim)


class FeatureWiseAffine(nn.Module):
    """Additive noise conditioning, ``x + W e + b`` (``use_affine_level`` is False in the release)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + self.noise_func(emb).to(x.dtype)[:, :, None, None]


class Block(nn.Module):
    """GroupNorm -> Swish -> (dropout 0: Identity) -> Conv3x3; keys ``block.0``, ``block.3``."""

    def __init__(self, dim: int, dim_out: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            GroupNorm(groups, dim), nn.SiLU(), nn.Identity(), Conv3x3(dim, dim_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """``h = block2(block1(x) + W e + b) + res_conv(x)``; ``mlp`` is kept for the keys only."""

    def __init__(self, dim: int, dim_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, dim_out))  # never called
        self.noise_func = FeatureWiseAffine(emb_dim, dim_out)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv: nn.Module = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.noise_func(self.block1(x), emb)
        return self.block2(h) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head attention over all positions, scale 1/sqrt(C); ``qkv`` has no bias."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2)  # (B, 3, HW, C)
        q, k, v = (qkv[:, i, None] for i in range(3))  # (B, 1, HW, C) each
        o = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C)
        return self.out(o[:, 0].transpose(-1, -2).reshape(b, c, h, w)) + x


class ResnetBlocWithAttn(nn.Module):
    def __init__(self, dim: int, dim_out: int, emb_dim: int, groups: int, with_attn: bool) -> None:
        super().__init__()
        self.res_block = ResnetBlock(dim, dim_out, emb_dim, groups)
        self.with_attn = with_attn
        if with_attn:
            self.attn = SelfAttention(dim_out, groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, emb)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SR3UNet(nn.Module):
    """eps_hat = UNet(cat[y, x_t], l): (B, 6, H, W), (B,) -> (B, 3, H, W); H, W multiples of 16."""

    def __init__(self, cfg: SR3Config) -> None:
        super().__init__()
        self.config = cfg
        c, groups = cfg.inner_channel, cfg.norm_groups
        self.noise_level_mlp = nn.Sequential(
            PositionalEncoding(c), nn.Linear(c, 4 * c), nn.SiLU(), nn.Linear(4 * c, c)
        )
        n_levels = len(cfg.channel_mults)
        pre, res = c, cfg.image_size
        skips = [pre]
        downs: list[nn.Module] = [Conv3x3(cfg.in_channel, c)]
        for i, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.res_blocks):
                downs.append(ResnetBlocWithAttn(pre, c * mult, c, groups, res in cfg.attn_res))
                pre = c * mult
                skips.append(pre)
            if i < n_levels - 1:
                downs.append(Downsample(pre))
                skips.append(pre)
                res //= 2
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList(
            [
                ResnetBlocWithAttn(pre, pre, c, groups, with_attn=True),
                ResnetBlocWithAttn(pre, pre, c, groups, with_attn=False),
            ]
        )
        ups: list[nn.Module] = []
        for i in reversed(range(n_levels)):
            mult = cfg.channel_mults[i]
            for _ in range(cfg.res_blocks + 1):
                ups.append(
                    ResnetBlocWithAttn(pre + skips.pop(), c * mult, c, groups, res in cfg.attn_res)
                )
                pre = c * mult
            if i > 0:
                ups.append(Upsample(pre))
                res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(pre, cfg.out_channel, groups)
        if cfg.var_conv:  # the unused second head (GSAD): built so its keys load, never run
            self.var_conv = nn.Sequential(
                Conv3x3(pre, pre), nn.ELU(), Conv3x3(pre, pre), nn.ELU(), Conv3x3(pre, 3)
            )

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x: (B, 6, H, W) = cat[y, x_t] in the weights' dtype; level: (B,) sqrt(alpha_bar)."""
        emb = self.noise_level_mlp[0](level).to(self.noise_level_mlp[1].weight.dtype)
        emb = self.noise_level_mlp[1:](emb)  # (B, C)
        skips = []
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, emb)
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                x = layer(torch.cat([x, skips.pop()], dim=1), emb)
            else:
                x = layer(x)
        return self.final_conv(x)
