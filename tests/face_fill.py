"""The face reference's deterministic weight fill (RetinaFace vectors), so tests need no weights.

g = torch.Generator().manual_seed(zlib.crc32(key)); r = randn(shape, generator=g)
norm (1-D ``.weight``) -> 1 + 0.02 r    running_mean -> 0.02 r    running_var -> 1 + 0.1 |r|
vec (other 1-D) -> 0.02 r    nd (>= 2-D) -> r / sqrt(prod(shape[1:]))    num_batches_tracked: kept
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def fill_kind(key: str, shape: tuple[int, ...]) -> str:
    if key.endswith("num_batches_tracked"):
        return "keep"
    if key.endswith("running_mean"):
        return "running_mean"
    if key.endswith("running_var"):
        return "running_var"
    if len(shape) == 1:
        return "norm" if key.endswith(".weight") else "vec"
    return "nd"


def fill_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    kind = fill_kind(key, shape)
    if kind == "keep":
        return torch.zeros(shape, dtype=torch.int64)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if kind == "norm":
        return 1 + 0.02 * r
    if kind == "running_mean":
        return 0.02 * r
    if kind == "running_var":
        return 1 + 0.1 * r.abs()
    if kind == "vec":
        return 0.02 * r
    return r / math.sqrt(math.prod(shape[1:]))


def face_state_dict(module: nn.Module, *, batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    """Filled tensors for every state-dict key of ``module`` (``num_batches_tracked`` optional)."""
    return {
        key: fill_tensor(key, tuple(value.shape))
        for key, value in module.state_dict().items()
        if batches_tracked or not key.endswith("num_batches_tracked")
    }


DATA = Path(__file__).parent / "data" / "face"


def astronaut(name: str = "astronaut_512x512") -> Image.Image:
    """The reference's detector inputs, rebuilt from the 512 image as its README describes:
    640x480 = the top 480 rows framed by 64-px gray (128) columns; 427x333 = rows 20..331 and
    columns 60..486 above a 21-row gray band."""
    a = np.asarray(Image.open(DATA / "astronaut_512x512.png").convert("RGB"))
    if name == "astronaut_512x512":
        return Image.fromarray(a)
    if name == "astronaut_640x480":
        out = np.full((480, 640, 3), 128, dtype=np.uint8)
        out[:, 64:576] = a[:480]
        return Image.fromarray(out)
    if name == "astronaut_427x333":
        out = np.full((333, 427, 3), 128, dtype=np.uint8)
        out[:312] = a[20:332, 60:487]
        return Image.fromarray(out)
    raise ValueError(name)


def filled_retinaface(backbone: str) -> nn.Module:
    """RetinaFace with the reference's deterministic weights, on the CPU, in eval mode."""
    from restore_cli import nets, weights

    net = nets.build(nets.RetinaFaceConfig(backbone))
    return weights.load_into(net, face_state_dict(net), "filled").eval().requires_grad_(False)


def fake_restore(crops: list[Image.Image]) -> list[Image.Image]:
    """The reference's "restorations": face 0 inverted, face 1 channel-reversed + 40."""
    a0 = np.asarray(crops[0]).astype(np.int16)
    a1 = np.asarray(crops[1]).astype(np.int16)
    return [
        Image.fromarray((255 - a0).astype(np.uint8)),
        Image.fromarray(np.clip(a1[..., ::-1] + 40, 0, 255).astype(np.uint8)),
    ]
