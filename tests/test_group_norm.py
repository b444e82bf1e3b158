"""Group normalisation on channels-last tensors: as accurate as on contiguous ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore_cli.nets.layers import GroupNorm, GroupNorm32, group_norm


@pytest.mark.parametrize(
    ("c", "h", "w", "mean"), [(128, 160, 96, 5.0), (64, 7, 5, 30.0), (96, 1, 1, 0.0)]
)
def test_channels_last_statistics_are_accurate(c, h, w, mean) -> None:
    g = torch.Generator().manual_seed(c + h)
    x = torch.randn(2, c, h, w, generator=g) * 3 + mean
    x[:, :4] += 50  # one channel of each group far from the others
    weight, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)
    exact = F.group_norm(x.double(), 32, weight.double(), bias.double(), 1e-6)
    contiguous_error = (F.group_norm(x, 32, weight, bias, 1e-6).double() - exact).abs().max()
    got = group_norm(x.contiguous(memory_format=torch.channels_last), 32, weight, bias, 1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert (got.double() - exact).abs().max() <= 4 * contiguous_error + 1e-6


def test_modules_keep_their_keys_and_agree_with_torch() -> None:
    x = torch.randn(1, 64, 33, 17).contiguous(memory_format=torch.channels_last)
    for norm in (GroupNorm(32, 64, eps=1e-6), GroupNorm32(64)):
        assert set(norm.state_dict()) == {"weight", "bias"}
        torch.nn.init.normal_(norm.weight)
        with torch.inference_mode():
            expected = F.group_norm(x.contiguous(), 32, norm.weight, norm.bias, norm.eps)
            torch.testing.assert_close(norm(x), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("cls", [GroupNorm, GroupNorm32])
def test_float16_statistics_are_taken_in_float32(cls, monkeypatch) -> None:
    """As the reference's autocast: float16 activations are normalised in float32 (float16 sums of
    squares overflow at 65504), and the result comes back in float16."""
    layer = cls(32, 64) if cls is GroupNorm else cls(64)
    seen: list[torch.dtype] = []
    real = F.group_norm

    def spy(x, *args, **kw):
        seen.append(x.dtype)
        return real(x, *args, **kw)

    monkeypatch.setattr(F, "group_norm", spy)
    x = (torch.randn(1, 64, 6, 6, generator=torch.Generator().manual_seed(0)) * 300).half()
    out = layer.half()(x)
    assert seen == [torch.float32] and out.dtype == torch.float16
    expected = real(x.float(), 32, layer.weight.float(), layer.bias.float(), layer.eps)
    assert torch.allclose(out.float(), expected, atol=1e-2)
    seen.clear()
    layer.bfloat16()(
        x.bfloat16()
    )  # the UNet's GroupNorm32 always works in float32 (``models/unet.py: GroupNorm32``);
    # the autoencoder's leaves bfloat16, which has float32's range, as it is
    assert seen == [torch.float32 if cls is GroupNorm32 else torch.bfloat16]
