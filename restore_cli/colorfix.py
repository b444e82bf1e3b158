"""Optional colour correction of a restored image toward its input (not in the reference).

* ``adain``: match each channel's mean and standard deviation to the input's;
* ``wavelet``: keep the output's high frequencies and take the low frequencies (colour, tone)
  from the input, with a 5-level a-trous wavelet decomposition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .device import bicubic

COLOR_FIXES = ("none", "wavelet", "adain")


def apply(kind: str, out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """out, ref: (1, 3, H, W) in [0, 1]; ref is resized to out's size first."""
    if kind == "none":
        return out
    if ref.shape[-2:] != out.shape[-2:]:
        ref = bicubic(ref, size=(out.shape[-2], out.shape[-1]))
    if kind == "adain":
        fixed = adain(out, ref)
    elif kind == "wavelet":
        fixed = wavelet(out, ref)
    else:
        raise ValueError(f"unknown colour fix {kind!r}; use one of {COLOR_FIXES}")
    return fixed.clamp(0, 1)


def adain(out: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mo, so = out.mean((2, 3), keepdim=True), out.std((2, 3), keepdim=True)
    mr, sr = ref.mean((2, 3), keepdim=True), ref.std((2, 3), keepdim=True)
    return (out - mo) / (so + eps) * sr + mr


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype) / 16
    k = k.to(x.device).expand(x.shape[1], 1, 3, 3)
    pad = dilation
    mode = "replicate" if min(x.shape[-2:]) <= pad else "reflect"
    return F.conv2d(F.pad(x, (pad,) * 4, mode=mode), k, dilation=dilation, groups=x.shape[1])


def _low(x: torch.Tensor, levels: int = 5) -> torch.Tensor:
    for i in range(levels):
        x = _blur(x, 2**i)
    return x


def wavelet(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return out - _low(out) + _low(ref)
