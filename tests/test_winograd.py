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

    def spy(x, u, bias, out=None):
        calls.append(tuple(x.shape))
        return real(x, u, bias, out)

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


@pytest.mark.parametrize("channels_last_weight", [False, True])
def test_filters_in_pieces_and_either_layout_give_the_same_convolution(
    monkeypatch, channels_last_weight
) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 48, 20, 20, generator=g).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(100, 48, 3, 3, generator=g) / (9 * 48) ** 0.5
    b = torch.randn(100, generator=g)
    exact = F.conv2d(x.double(), wt.double(), b.double(), padding=1)
    if channels_last_weight:  # as the autoencoder's weights are on the CPU
        wt = wt.contiguous(memory_format=torch.channels_last)
    whole = transform_weight(wt)
    assert [p.shape for p in whole] == [(36, 48, 100)]
    # 32 output channels a piece: 32, 32, 32 and a ragged 4
    monkeypatch.setattr(winograd, "FILTER_BYTES", 36 * 48 * 4 * 32)
    pieces = transform_weight(wt)
    assert [p.shape[2] for p in pieces] == [32, 32, 32, 4]
    torch.testing.assert_close(torch.cat(pieces, 2), whole[0], rtol=0, atol=0)
    got = conv3x3(x, pieces, b)
    assert (got.double() - exact).abs().max().item() < 2e-4 * exact.abs().max().item()
    # the products' kernels may sum in another order for another width (AVX2 EPYC: 4.6e-6 apart)
    scale = exact.abs().max().item()
    torch.testing.assert_close(got, conv3x3(x, whole, b), rtol=0, atol=1e-5 * scale)


def test_banded_convolution_transforms_the_filters_once(monkeypatch) -> None:
    from restore_cli.nets import layers

    conv = Conv3x3(32, 32)
    x = torch.randn(1, 32, 64, 64).contiguous(memory_format=torch.channels_last)
    calls = []
    real = winograd.transform_weight

    def counting(w):
        calls.append(w.shape)
        return real(w)

    monkeypatch.setattr(winograd, "transform_weight", counting)
    with torch.inference_mode():
        out = layers.conv_in_bands(64, 16, lambda a, b: x[:, :, a:b], conv)
        assert len(calls) == 1  # four bands, one transform
        torch.testing.assert_close(
            out, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("strip_values", [0, 128 * 32])
def test_convolution_written_over_its_own_input(monkeypatch, strip_values: int) -> None:
    g = torch.Generator().manual_seed(3)
    # whole tiles: the in-place path, in 3 strips of 64 tiles (MIN_TILES) or in strips of 128
    # and 64 tiles (STRIP_VALUES over 32 channels)
    monkeypatch.setattr(winograd, "STRIP_VALUES", strip_values)
    x = torch.randn(1, 32, 48, 64, generator=g).contiguous(memory_format=torch.channels_last)
    conv = Conv3x3(32, 32)
    with torch.inference_mode():
        expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
        work = x.clone()
        got = conv(work, out=work)
        assert got.data_ptr() == work.data_ptr()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        # where the result cannot go there (other channels, ragged tiles), a new map
        ragged = x[:, :, :47].contiguous(memory_format=torch.channels_last)
        other = conv(ragged, out=ragged)
        assert other.data_ptr() != ragged.data_ptr()
        torch.testing.assert_close(ragged, x[:, :, :47])
        wider = Conv3x3(32, 40)
        assert wider(x, out=x).shape == (1, 40, 48, 64)
        torch.testing.assert_close(x[:, :, :47], ragged)  # x untouched


def _counting_transforms(monkeypatch) -> list[int]:
    """Patch transform_weight to record the id of each filter tensor it transforms."""
    calls: list[int] = []
    real = winograd.transform_weight

    def counting(w):
        calls.append(id(w))
        return real(w)

    monkeypatch.setattr(winograd, "transform_weight", counting)
    return calls


def test_kept_filters_are_transformed_once_per_block_and_dropped_after(monkeypatch) -> None:
    """Inside keep_filters a convolution transforms its filters once for all calls, with the
    same numbers as transforming them every time; a nested block reuses the outer one's filters,
    and once the block ends nothing is kept."""
    convs = torch.nn.Sequential(Conv3x3(32, 32), Conv3x3(32, 32))
    x = torch.randn(1, 32, 32, 32)
    calls = _counting_transforms(monkeypatch)
    with torch.inference_mode():
        plain = [convs(x) for _ in range(2)]
        assert len(calls) == 4
        calls.clear()
        with winograd.keep_filters(convs):
            kept = [convs(x) for _ in range(3)]
            with winograd.keep_filters(convs):
                kept.append(convs(x))
            assert all(c.kept is not None for c in convs)
        assert sorted(calls) == sorted({id(c.weight) for c in convs})
        assert all(c.kept is None for c in convs)
        calls.clear()
        convs(x)
        assert len(calls) == 2
    for k in kept:
        assert torch.equal(k, plain[0])


def test_filters_over_the_budget_are_not_kept(monkeypatch) -> None:
    conv = Conv3x3(32, 32)
    x = torch.randn(1, 32, 32, 32)
    calls = _counting_transforms(monkeypatch)
    size = 36 * 32 * 32 * 4
    with torch.inference_mode():
        with winograd.keep_filters(conv, budget=size - 1):
            conv(x), conv(x)
        assert len(calls) == 2
        calls.clear()
        with winograd.keep_filters(conv, budget=size):
            conv(x), conv(x)
        assert len(calls) == 1
