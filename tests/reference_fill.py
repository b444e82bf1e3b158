"""The reference README's deterministic weight fill, so golden vectors need no weight files.

g = torch.Generator().manual_seed(zlib.crc32(key))
norm -> 1 + 0.02 r    vec -> 0.02 r    nd -> r / sqrt(prod(shape[1:]))    buffers: computed
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn


def fill_kinds(module: nn.Module) -> dict[str, str]:
    """Kind of every state-dict key: norm (a GroupNorm weight), vec, nd, or buffer."""
    kinds: dict[str, str] = {}
    buffers = {name for name, _ in module.named_buffers()}
    norms = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, nn.GroupNorm)}
    for key, value in module.state_dict().items():
        if key in buffers:
            kinds[key] = "buffer"
        elif key in norms:
            kinds[key] = "norm"
        else:
            kinds[key] = "vec" if value.dim() == 1 else "nd"
    return kinds


def fill_tensor(key: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if kind == "norm":
        return 1 + 0.02 * r
    if kind == "vec":
        return 0.02 * r
    return r / math.sqrt(math.prod(shape[1:]))


def reference_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights for every parameter of ``module`` (buffers left out)."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return {
        key: fill_tensor(key, shapes[key], kind)
        for key, kind in fill_kinds(module).items()
        if kind != "buffer"
    }
