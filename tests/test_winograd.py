"""Winograd F(4x4, 3x3) convolution against the framework's direct convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore_cli.nets import winograd
from restore_cli.nets.winograd import Conv3x3, applies, conv3x3, transform_weight


@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w", "channels_last", "bias"),
    [
        (1, 32, 48, 64, 64, True, True),  # tile-aligned
        (2, 40, 32, 37, 23, False, True),  # ragged edges, batch, NCHW input
        (1, 64, 64, 5, 3, True, False),  # smaller than one tile row, no bias
        (1, 33, 35, 1, 1, False, True),  # a single pixel
        (3, 32, 32, 130, 9, True, True),  # strips of several tile rows
    ],
)
def test_conv3x3_matches_direct_convolution(n, c, k, h, w, channels_last, bias) -> None:
    g = torch.Generator().manual_seed(c * h + w)
    x = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(k, c, 3, 3, generator=g) / (9 * c) ** 0.5
    b = torch.randn(k, generator=g) if bias else None
    exact = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), padding=1)
    got = conv3x3(x, transform_weight(wt), b)
    assert got.shape == exact.shape and got.dtype == torch.float32
    # direct float32 reaches ~1e-6 relative here; Winograd's constants cost a few bits more
    assert (got.double() - exact).abs().max().item() < 2e-4 * exact.abs().max().item()


def test_module_uses_winograd_only_where_it_applies(monkeypatch) -> None:
    conv = Conv3x3(32, 32)
    big = torch.randn(1, 32, 40, 40)
    calls: list[tuple[int, ...]] = []
    real = winograd.conv3x3

    def spy(x, u, bias):
        calls.append(tuple(x.shape))
        return real(x, u, bias)

    monkeypatch.setattr(winograd, "conv3x3", spy)
    with torch.inference_mode():
        out = conv(big)
        assert calls == [(1, 32, 40, 40)]
        torch.testing.assert_close(
            out, F.conv2d(big, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=0
        )
        conv(torch.randn(1, 32, 8, 8))  # too few tiles: direct
        Conv3x3(3, 32)(torch.randn(1, 3, 64, 64))  # too few channels: direct
    out = conv(big)  # autograd on: direct, so gradients flow through the framework's kernel
    assert out.requires_grad and len(calls) == 1
    assert not applies(big.half(), conv.weight.half())
    assert not applies(big.to("meta"), conv.weight.to("meta"))
