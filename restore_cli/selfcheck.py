"""A short device self-check: small networks of the same kind, run on the device and on the CPU.

Apple MPS has had kernels that return wrong numbers without any error (attention with broadcast masks,
convolutions on views, large matrix products: docs/devices-and-scale.md). A silent bug there would
ruin every output of a batch, so before a model runs on such a device the same few operations
(strided and 3x3 convolutions, group norm, shifted-window attention with the reference's mask, the
autoencoder's attention, nearest upsampling; bicubic resizing runs on the CPU for MPS anyway) run once on a tiny UNet and autoencoder with
seeded random weights, on the device and in float32 on the CPU, and the results are compared.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import nets
from .device import bicubic
from .nets.config import UNetConfig, VQConfig

# Largest relative difference (max |device - cpu| / max |cpu|) accepted. Half precision rounds at
# about 1e-3 per operation; the bugs this guards against give errors of order one.
TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}

_UNET = UNetConfig(
    in_channels=3,
    out_channels=3,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    attention_resolutions=(8, 4),
    image_size=8,
    lq_size=32,  # two strided extractor stages
    cond_mask=True,
    swin_embed_dim=32,
    window_size=4,
    mlp_ratio=2,
)
_VQ = VQConfig(
    embed_dim=3, n_embed=64, z_channels=3, ch=32, ch_mult=(1, 2, 2), num_res_blocks=(1, 1, 1)
)
_LATENT = (16, 24)  # not square, with a shifted-window mask at the top level


@dataclass(frozen=True)
class CheckResult:
    device: str
    dtype: str
    error: float  # worst relative difference over the probed outputs
    tolerance: float
    stage: str  # the output with the worst difference

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # NaN compares false: not ok

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"{verdict}: {self.device} {self.dtype} vs cpu float32, relative difference "
            f"{self.error:.2g} (limit {self.tolerance:.0e}, worst at {self.stage})"
        )


def _networks() -> tuple[nn.Module, nn.Module]:
    """Both networks with weights drawn from a fixed seed (scaled like a trained network's)."""
    g = torch.Generator().manual_seed(20231)
    unet, vq = nets.build(_UNET, device="cpu"), nets.build(_VQ, device="cpu")
    for net in (unet, vq):
        for name, p in net.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.data = r / math.sqrt(p[0].numel())
            elif name.endswith("weight") and "norm" in name:
                p.data = 1 + 0.1 * r
            else:
                p.data = 0.1 * r
    return unet.eval(), vq.eval()


@torch.inference_mode()
def _probe(
    unet: nn.Module, vq: nn.Module, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    h, w = _LATENT
    f, s = 4, _UNET.lq_size // _UNET.image_size
    lq = torch.rand(1, 3, h * s // 2, w * s // 2, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, h * s, w * s, generator=g) > 0.5).float() * 2 - 1
    x = torch.randn(1, 3, h, w, generator=g)
    t = torch.tensor([1])
    unet, vq = copy.deepcopy(unet).to(device, dtype), copy.deepcopy(vq).to(device, dtype)

    def on(a: torch.Tensor) -> torch.Tensor:
        return a.to(device, dtype if a.is_floating_point() else a.dtype)

    up = bicubic(on(lq), scale=2)
    z = vq.encode(on(torch.rand(1, 3, h * f, w * f, generator=g) * 2 - 1))
    x0 = unet(on(x), on(t), lq=up, mask=on(mask))
    image = vq.decoder(vq.post_quant_conv(on(x)))
    return {
        "bicubic": up,
        "encode": z,
        "unet": x0,
        "decode": image,
    }


def run(device: torch.device, dtype: torch.dtype) -> CheckResult:
    """Compare the device's outputs with the CPU's (float32) on the same small networks."""
    unet, vq = _networks()
    reference = _probe(unet, vq, torch.device("cpu"), torch.float32)
    got = _probe(unet, vq, device, dtype)
    worst, stage = 0.0, "all outputs"
    for name, ref in reference.items():
        diff = (got[name].float().cpu() - ref).abs().max().item()
        err = diff / max(ref.abs().max().item(), 1e-6)
        if not err <= worst:  # also takes NaN
            worst, stage = err, name
            if math.isnan(err):
                break
    return CheckResult(
        device=str(device),
        dtype=str(dtype).replace("torch.", ""),
        error=worst,
        tolerance=TOLERANCE[dtype],
        stage=stage,
    )
