"""``VQModelTorch``: the VQ-GAN autoencoder of ResShift (reference
``ldm/models/autoencoder.py: VQModelTorch``, ``ldm/modules/diffusionmodules/model.py``).

``encode`` returns the continuous latent (no quantisation); ``decode`` quantises to the nearest
codebook entry first, as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQConfig
from .layers import GroupNorm, Upsample, in_bands, norm_silu_conv, takes_output
from .winograd import Conv3x3

# Query rows per chunk in the mid-block attention: bounds the (rows x N) score matrix.
ATTN_CHUNK = 4096
# Latent vectors per chunk in the codebook search: bounds the (rows x n_embed) distance matrix,
# 8 MiB for the 8192 codes of vq-f4 (at 16384 rows a 128-latent tile took 1 GiB).
QUANT_CHUNK = 256


def normalize(channels: int) -> GroupNorm:
    return GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = normalize(cin)
        self.conv1 = Conv3x3(cin, cout)
        self.norm2 = normalize(cout)
        self.conv2 = Conv3x3(cout, cout)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, spare: torch.Tensor | None = None) -> torch.Tensor:
        """``spare``: a map the caller no longer needs (the previous block's input), to hold this
        block's first normalised map if it fits, instead of a new one."""
        if in_bands(x):  # a large map: in bands of rows, the same result in less memory
            h = norm_silu_conv(x, self.norm1, self.conv1)
            skip = self.nin_shortcut
            return norm_silu_conv(
                h, self.norm2, self.conv2, overwrite=True,
                residual=lambda r0, r1: x[:, :, r0:r1] if skip is None else skip(x[:, :, r0:r1]),
            )  # fmt: skip
        # every map after the first normalisation is this block's own: normalised and convolved
        # in place where it fits (each new map's pages cost more than the work done in them)
        h = F.silu(self.norm1(x, out=spare), inplace=True)
        h = self.conv1(h, out=h)
        h = F.silu(self.norm2(h, out=h), inplace=True)
        h = self.conv2(h, out=h)
        return h.add_(self.nin_shortcut(x) if self.nin_shortcut is not None else x)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention, queries processed in chunks to bound memory."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (
            m(y).reshape(b, 1, c, h * w).transpose(2, 3).contiguous()
            for m in (self.q, self.k, self.v)
        )
        out = torch.cat(
            [
                F.scaled_dot_product_attention(q[:, :, i : i + ATTN_CHUNK], k, v)
                for i in range(0, h * w, ATTN_CHUNK)
            ],
            dim=2,
        )
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then 3x3 stride-2 convolution without padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Level(nn.Module):
    """One resolution level: ``block`` list and an optional resampler (key ``downsample``/``upsample``),
    run step by step by the encoder and decoder (see :func:`_steps`)."""

    def __init__(self, blocks: list[nn.Module], resample: tuple[str, nn.Module] | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = resample[0] if resample else None
        if resample:
            self.add_module(*resample)

    def steps(self) -> list[nn.Module]:
        """The blocks, then the resampler if any, in the order they apply."""
        resample = [getattr(self, self.resample_name)] if self.resample_name else []
        return [*self.block, *resample]


def _run(steps: list[nn.Module], first: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The map ``first()`` through ``steps``; each residual block gets the input of the one before
    it, dead by then, as its spare map (a new map's pages cost more than the normalisation written
    in them), except for large maps, which are processed in bands and are not kept a step longer.
    ``first`` is made here, not passed in: an argument stays alive until the call returns."""
    h = first()
    spare: torch.Tensor | None = None
    for step in steps:
        block = isinstance(step, ResnetBlock)
        fits = block and spare is not None and takes_output(spare, h) and not in_bands(h)
        use, spare = (spare if fits else None), None  # not held through a step that cannot use it
        if block:
            h, spare = step(h, spare=use), h
        else:
            h = step(h)
    return h


def _steps(levels: Iterable[Level]) -> list[nn.Module]:
    """Every step of ``levels`` in order. The encoder and decoder run them in one loop of their own
    (a level is only a container of keys, with no ``forward``): a called module keeps its input
    alive until it returns, which held the decoder's largest map (its top level's upsampled input,
    289 MiB for a 136-latent tile) through all three blocks of that level instead of only the
    first."""
    return [step for level in levels for step in level.steps()]


class Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels, cin = [], cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks[i]):
                blocks.append(ResnetBlock(cin, cfg.ch * mult))
                cin = cfg.ch * mult
            last = i == len(cfg.ch_mult) - 1
            levels.append(Level(blocks, None if last else ("downsample", Downsample(cin))))
        self.down = nn.ModuleList(levels)
        self.mid = Mid(cin)
        self.norm_out = normalize(cin)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _run(_steps(self.down), lambda: self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(m := self.mid(h), out=m), inplace=True))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = Mid(cin)
        levels: list[Level] = []
        for i in reversed(range(len(cfg.ch_mult))):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks[i] + 1):
                blocks.append(ResnetBlock(cin, cfg.ch * cfg.ch_mult[i]))
                cin = cfg.ch * cfg.ch_mult[i]
            levels.insert(0, Level(blocks, ("upsample", Upsample(cin)) if i else None))
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run(_steps(reversed(self.up)), lambda: self.mid(self.conv_in(z)))
        if in_bands(h):
            return norm_silu_conv(h, self.norm_out, self.conv_out)
        return self.conv_out(F.silu(self.norm_out(h, out=h), inplace=True))


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> nearest codebook vectors, same shape (distance in float32)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.embedding.weight.float()
        code_sq = torch.sum(codes**2, dim=1)
        # d = |z|^2 + |e|^2 - 2 z.e as the reference, fused into one GEMM (the factor -2 is exact),
        # chunk by chunk in one buffer that stays in cache (a new 64 MiB matrix per chunk cost
        # more in fresh pages than the search itself)
        buf = flat.new_empty((min(QUANT_CHUNK, flat.shape[0]), codes.shape[0]))
        found = []
        for part in flat.split(QUANT_CHUNK):
            d = buf[: part.shape[0]]
            torch.add(torch.sum(part**2, dim=1, keepdim=True), code_sq, out=d)
            found.append(d.addmm_(part, codes.t(), alpha=-2).argmin(dim=1))
        idx = torch.cat(found)
        zq = self.embedding(idx).view(b, h, w, c).permute(0, 3, 1, 2).to(z.dtype)
        return z + (zq - z)  # the reference's straight-through form, same rounding


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, embed_dim, H/f, W/f), not quantised."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) -> (B, 3, h*f, w*f), quantised first (not clamped)."""
        return self.decoder(self.post_quant_conv(self.quantize(z)))
