"""Swin transformer layers of the ResShift UNet, on (B, C, H, W) tensors.

Two behaviours of the reference code are reproduced because the trained weights depend on them
(reference ``models/swin_transformer.py: SwinTransformerBlock.calculate_mask``): the shifted-window
mask is recomputed for the runtime size on every call (the stored ``attn_mask`` buffer is never
used), and it is the reference's *buggy* mask: only the bottom row of windows is masked, and there
tokens are split by their column inside the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GroupNorm32

MASK_VALUE = -100.0
# Tokens per chunk of the window attention, and of the MLP off the CPU (on the CPU it takes
# MLP_TOKENS). Both work token by token (attention inside its window), so bands of rows give the same result as the whole map while their
# transients stay small: at a 256x256 latent the whole map's q/k/v, bias and MLP hidden tensors
# (192 and 768 channels) took about 0.9 GiB at once. Smaller bands are also faster there, as they
# stay in cache: one realsr-v3 UNet call at a 256x256 latent (2-core Xeon, fp32, a scratch script
# with a 1 ms RSS sampler) took 9.3-9.6 s and +871/+593 MiB in bands of 16384 tokens, 7.8-7.9 s
# and +659/+489 MiB in bands of 4096 (2048: no better). Maps up to 64x64 (a 256x256 output of x4
# SR, and the golden cases) are one band, as before.
CHUNK_TOKENS = 4096
# Tokens per band of the MLP on the CPU (see Mlp._cpu_bands).
MLP_TOKENS = 1024


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) index into the (2ws-1)^2 bias table, standard Swin."""
    ar = torch.arange(ws, device="cpu")  # real values even when the model is built on "meta"
    coords = torch.stack(torch.meshgrid(ar, ar, indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def reference_shift_mask(n_wh: int, n_ww: int, ws: int, shift: int) -> torch.Tensor:
    """The reference's shifted-window mask, (nW, ws*ws, ws*ws) with 0 / -100 entries.

    Closed form of the reference ``calculate_mask`` (checked in the spec): only windows of the
    bottom window-row are masked; there two tokens attend to each other only when both lie left of
    column ``ws - shift`` inside the window or both lie at or right of it.
    """
    col = torch.arange(ws * ws, device="cpu") % ws
    label = col >= ws - shift
    block = (label[:, None] != label[None, :]).float() * MASK_VALUE
    mask = torch.zeros(n_wh, n_ww, ws * ws, ws * ws, device="cpu")
    mask[-1] = block
    return mask.reshape(n_wh * n_ww, ws * ws, ws * ws)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * nW, ws*ws, C), windows batch-major then row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws*ws, C) -> (B, C, H, W)."""
    c = windows.shape[-1]
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, heads, N, d)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_bias = bias[None].to(q.dtype).expand(bw, -1, -1, -1)
        else:
            nw = mask.shape[0]
            attn_bias = (bias[None, None] + mask[None, :, None].to(bias)).to(q.dtype)
            attn_bias = attn_bias.expand(bw // nw, -1, -1, -1, -1).reshape(bw, -1, n, n)
        out = F.scaled_dot_product_attention(
            q.contiguous(),
            k.contiguous(),
            v.contiguous(),
            attn_mask=attn_bias.contiguous(),
            scale=self.scale,
        )
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv (keys fc1, fc2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if x.device.type == "cpu":
            return self._cpu_bands(x)
        rows = max(1, CHUNK_TOKENS // (b * w))
        if rows >= h:
            return self.fc2(self.act(self.fc1(x)))
        out = x.new_empty((b, self.fc2.out_channels, h, w))
        for r0 in range(0, h, rows):
            band = x[:, :, r0 : r0 + rows]
            out[:, :, r0 : r0 + rows] = self.fc2(self.act(self.fc1(band)))
        return out

    def _cpu_bands(self, x: torch.Tensor) -> torch.Tensor:
        """The same two 1x1 convolutions as matrix products ``W @ X`` over the (C, H*W) view of each
        image, MLP_TOKENS tokens at a time, each band's result written straight into the output.

        The band's hidden map (4x the channels) stays in the processor's cache between the two
        products and the GELU. One MLP of realsr-v3 (192 -> 768 -> 192 channels, 64x64 tokens,
        2-core AMD EPYC, fp32, standalone, medians of 9) took 28 ms this way against 54 ms as
        two convolutions over the whole map.
        """
        b, c, h, w = x.shape
        hidden, cout = self.fc1.out_channels, self.fc2.out_channels
        w1, w2 = self.fc1.weight.view(hidden, c), self.fc2.weight.view(cout, hidden)
        b1, b2 = self.fc1.bias[:, None], self.fc2.bias[:, None]
        flat = x.reshape(b, c, h * w)
        out = x.new_empty((b, cout, h * w))
        scratch = x.new_empty(hidden * min(MLP_TOKENS, h * w))  # every band's hidden map
        for i in range(b):
            for t0 in range(0, h * w, MLP_TOKENS):
                band = flat[i, :, t0 : t0 + MLP_TOKENS]
                mid = scratch[: hidden * band.shape[1]].view(hidden, band.shape[1])
                torch.addmm(b1, w1, band, out=mid)
                torch.ops.aten.gelu_(mid)  # nn.GELU() in place: the exact (erf) form
                torch.addmm(b2, w2, mid, out=out[i, :, t0 : t0 + MLP_TOKENS])
        return out.view(b, cout, h, w)


class SwinTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: int,
    ) -> None:
        super().__init__()
        if (
            resolution <= window_size
        ):  # decided at construction resolution (``SwinTransformerBlock.__init__``)
            shift, window_size = 0, resolution
        self.window_size, self.shift = window_size, shift
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        if shift:  # stored like the reference (never used: the mask is made per runtime size)
            n = resolution // window_size
            self.register_buffer("attn_mask", reference_shift_mask(n, n, window_size, shift))
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}

    def _bottom_mask(self, rows: int, n_ww: int, device: torch.device) -> torch.Tensor:
        """The shifted-window mask of the map's last ``rows`` window rows (``n_ww`` windows each):
        the matching slice of ``reference_shift_mask``, in which only the bottom row is not zero.
        Kept per size: one band's worth, not the whole map's (16 MiB per block at a 256x256 latent,
        all zeros but the last row, which stayed allocated from the UNet through the decoder)."""
        key = (rows, n_ww, str(device))
        if key not in self._masks:
            ws = self.window_size
            mask = torch.zeros(rows * n_ww, ws * ws, ws * ws, device="cpu")
            mask[-n_ww:] = reference_shift_mask(1, n_ww, ws, self.shift)
            self._masks[key] = mask.to(device)
        return self._masks[key]

    def _attend(self, y: torch.Tensor, shifted: bool) -> torch.Tensor:
        """Window attention over ``y`` (B, C, H, W), in bands of window rows on large maps; with the
        reference's shifted-window mask if ``shifted``. A band above the bottom window row has an
        all-zero mask, so it goes without one: the attention bias is then the same numbers."""
        b, _, h, w = y.shape
        ws = self.window_size
        n_wh, n_ww = h // ws, w // ws
        rows = max(1, CHUNK_TOKENS // (b * ws * w))  # window rows per band
        if rows >= n_wh:
            mask = self._bottom_mask(n_wh, n_ww, y.device) if shifted else None
            return window_reverse(self.attn(window_partition(y, ws), mask), ws, b, h, w)
        out = torch.empty_like(y)
        for r0 in range(0, n_wh, rows):
            r1 = min(n_wh, r0 + rows)
            band = y[:, :, r0 * ws : r1 * ws]
            m = self._bottom_mask(r1 - r0, n_ww, y.device) if shifted and r1 == n_wh else None
            attended = self.attn(window_partition(band, ws), m)
            out[:, :, r0 * ws : r1 * ws] = window_reverse(attended, ws, b, (r1 - r0) * ws, w)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shift
        y = self.norm1(x)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(2, 3))
        y = self._attend(y, shifted=bool(s))
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(2, 3))
        x = y.add_(x)  # x + y, in the attention's own output (one map less at a time)
        return self.mlp(self.norm2(x)).add_(x)


class PatchProj(nn.Module):
    """1x1 convolution (key ``proj``), used as patch embedding and un-embedding."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class BasicLayer(nn.Module):
    """C -> embed -> depth Swin blocks (shift 0, ws/2, 0, ...) -> C. No outer residual."""

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        embed_dim: int,
        num_heads: int,
        window_size: int,
        depth: int,
        mlp_ratio: int,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchProj(in_channels, embed_dim)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                embed_dim,
                resolution,
                num_heads,
                window_size,
                0 if i % 2 == 0 else window_size // 2,
                mlp_ratio,
            )
            for i in range(depth)
        )
        self.patch_unembed = PatchProj(embed_dim, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)
