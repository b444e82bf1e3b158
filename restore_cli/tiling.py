"""Tile plans and blend weights (pure index math), and the automatic tile size.

Large images are restored in overlapping tiles (in input pixels). Each tile runs the whole pipeline
(encode, sample, decode), so memory is bounded by the tile, autoencoder included. Tiles are blended
with raised-cosine ramps over the overlaps, so no seam shows where the reference's uniform
averaging leaves one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from .registry import ModelSpec

# Working memory per output pixel of one tile, in bytes, for fp32 (half of it for fp16/bf16). Measured
# on the CPU (`benchmarks/speed.py`, realsr-v3, peak RSS with weights): 1.34 GiB at 256x256 output,
# 2.18 GiB at 512x512, 4.23 GiB at 1024x1024, i.e. about 2.8 KB per output pixel at the margin; the
# figure below keeps about 2x headroom for allocator slack and GPU convolution workspaces (a GPU
# calibration is still to do).
BYTES_PER_OUTPUT_PIXEL_FP32 = 6144
MAX_AUTO_TILE_OUTPUT = 2048  # output pixels per side: beyond this tiles only cost latency
# On the CPU the time per pixel grows with the tile: the autoencoder's mid-block attention is global,
# so its cost grows with the square of a tile's pixels. realsr-v3, fp32, 2 cores (speed.py): 59 us per
# output pixel untiled at 256x256 output, 87 at 512x512, 115 at 1024x1024, 144 at 1280x1280. With the
# default overlaps (tile/8) that gives about 114 us per pixel of a large image in 512x512 tiles against
# 188 in 1280x1280 tiles (what 24 GB of free memory would allow): an estimated 1.6x faster.
MAX_AUTO_TILE_OUTPUT_CPU = 512
# ... but an image only a little larger than such a tile is faster whole (a 256x256 input takes 121 s
# whole; it would need nine overlapping 128x128 tiles of 22.7 s each), and whole it matches the
# reference exactly: on the CPU, images up to this output side are not tiled when the memory allows.
MAX_UNTILED_OUTPUT_CPU = 1024


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    height: int
    width: int


def default_overlap(tile: int) -> int:
    return max(8, tile // 8)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def plan(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Row-major tiles of side ``tile`` covering (height, width), neighbours sharing >= overlap."""
    if tile <= 0:
        return [Box(0, 0, height, width)]
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    return [
        Box(top, left, min(tile, height), min(tile, width))
        for top in _starts(height, tile, overlap)
        for left in _starts(width, tile, overlap)
    ]


def _ramp(n: int, lead: bool, trail: bool, ramp: int) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    ramp = min(ramp, n)
    if ramp > 0:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
        if lead:
            w[:ramp] = np.minimum(w[:ramp], rise)
        if trail:
            w[n - ramp :] = np.minimum(w[n - ramp :], rise[::-1])
    return w


def blend_axes(
    box: Box, height: int, width: int, overlap: int, scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """The box's weights as a column and a row vector: 1 inside, cosine ramps toward neighbours."""
    wy = _ramp(box.height * scale, box.top > 0, box.top + box.height < height, overlap * scale)
    wx = _ramp(box.width * scale, box.left > 0, box.left + box.width < width, overlap * scale)
    return wy, wx


def blend_weights(box: Box, height: int, width: int, overlap: int, scale: int) -> np.ndarray:
    """(box.height*scale, box.width*scale) weights, the outer product of :func:`blend_axes`."""
    wy, wx = blend_axes(box, height, width, overlap, scale)
    return wy[:, None] * wx[None, :]


def weight_totals(
    boxes: list[Box], height: int, width: int, overlap: int, scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of all boxes' weights, as a column and a row vector (their outer product).

    A plan is a grid (every row of tiles meets every column) and each weight is an outer product,
    so the sum over the grid is the outer product of the per-axis sums: no full-size array needed.
    """
    ty, tx = np.zeros(height * scale, np.float32), np.zeros(width * scale, np.float32)
    rows = {(b.top, b.height): b for b in boxes}
    cols = {(b.left, b.width): b for b in boxes}
    for (top, h), b in rows.items():
        ty[top * scale : (top + h) * scale] += blend_axes(b, height, width, overlap, scale)[0]
    for (left, w), b in cols.items():
        tx[left * scale : (left + w) * scale] += blend_axes(b, height, width, overlap, scale)[1]
    return ty, tx


def smaller_tile(tile: int, multiple: int) -> int | None:
    """The next automatic tile after running out of memory: half, in whole padding multiples."""
    if tile <= multiple:
        return None
    return max(multiple, tile // 2 // multiple * multiple)


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give us (a conservative reading)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = torch.mps
        return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page // 2)


def auto_tile(
    spec: ModelSpec, device: torch.device, dtype: torch.dtype, size: tuple[int, int] | None = None
) -> int:
    """Tile side in input pixels for an image of ``size`` (H, W): as large as 60 % of the free memory
    allows, up to 2048 output pixels, a multiple of the model's padding multiple. On the CPU, tiles
    of at most 512 output pixels (faster), and images up to 1024 output pixels stay whole."""
    per_px = BYTES_PER_OUTPUT_PIXEL_FP32 * (0.5 if dtype != torch.float32 else 1.0)
    fits = math.sqrt(max(0.6 * free_memory(device), 0) / per_px)  # output side
    if device.type == "cpu":
        if size is not None and max(size) * spec.scale <= min(fits, MAX_UNTILED_OUTPUT_CPU):
            return max(size)
        fits = min(fits, MAX_AUTO_TILE_OUTPUT_CPU)
    out_side = min(fits, MAX_AUTO_TILE_OUTPUT)
    side = int(out_side / spec.scale) // spec.pad_multiple * spec.pad_multiple
    return max(side, spec.pad_multiple)
