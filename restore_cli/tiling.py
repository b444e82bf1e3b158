"""Tiles: where they go, how they blend, how large they are, and the stitch loop.

Large images are restored in overlapping tiles (in input pixels). Each tile runs the whole pipeline
(encode, sample, decode), so memory is bounded by the tile, autoencoder included. Tiles are blended
with raised-cosine ramps over the overlaps, so no seam shows where the reference's uniform
averaging leaves one. :func:`resolve` is the one place a requested tile is interpreted; nothing here
probes a device (the caller passes a :class:`Budget`, see ``device.memory_budget``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# Working memory per output pixel of one tile, in bytes, for fp32 (half of it for fp16/bf16). Measured
# on the CPU (an earlier speed script, realsr-v3, peak RSS with weights): 1.34 GiB at 256x256 output,
# 2.18 GiB at 512x512, 4.23 GiB at 1024x1024 (before the autoencoder was tiled), i.e. about 2.8 KB
# per output pixel at the margin; the figure below keeps about 2x headroom for allocator slack and
# GPU convolution workspaces (a GPU calibration is still to do). With the autoencoder in latent
# tiles (`benchmarks/bench.py --sizes 64 128 256`, 2-core Xeon, fp32): 1.43 GiB at 256x256 output,
# 2.16 GiB at 512x512, 2.22 GiB at 1024x1024 untiled; with large maps in bands (nets/layers.py)
# 1.31 GiB at 256x256 and 1.92 GiB at 1024x1024 (`restore sr` itself: 1.53-1.60 and 1.99-2.13).
BYTES_PER_OUTPUT_PIXEL_FP32 = 6144
MAX_AUTO_TILE_OUTPUT = 2048  # output pixels per side: beyond this tiles only cost latency
# On the CPU the time per pixel grows with the tile: the autoencoder's mid-block attention is global,
# so its cost grows with the square of a tile's pixels. realsr-v3, fp32, 2 cores (an earlier speed
# script on an AMD EPYC): 59 us per output pixel untiled at 256x256 output, 87 at 512x512, 115 at
# 1024x1024, 144 at 1280x1280. With the default overlaps (tile/8) that gives about 114 us per pixel
# of a large image in 512x512 tiles against 188 in 1280x1280 tiles (what 24 GB of free memory would
# allow): an estimated 1.6x faster.
MAX_AUTO_TILE_OUTPUT_CPU = 512
# ... but an image only a little larger than such a tile is faster whole, and whole it matches the
# reference in the UNet: on the CPU, images up to this output side are not tiled when the memory
# allows. bench.py on a 2-core Xeon (AVX-512), fp32: a 256x256 input takes 96.7 s whole
# (autoencoder in two-by-two 136-latent tiles, 1.85 GiB); nine overlapping 128x128 tiles would take
# about 9 x 20.1 s.
MAX_UNTILED_OUTPUT_CPU = 1024


# The autoencoder's encoder and decoder run in overlapping latent tiles of this side (and overlap)
# when a latent is larger: their mid-block attention is global, so memory and time per pixel grow
# with the latent's area; tiles keep both flat. 128 latent pixels are 512 output pixels for the f4
# autoencoder, so 128x128 inputs of x4 SR (and, with the growth in autoencoder_tiling, anything up
# to 144x144) are processed exactly as the reference does.
# The seams are real: `benchmarks/vae_tiles.py --size 192` (filled weights, so a proxy; 2-core Xeon)
# puts the decoded image 20.3 dB PSNR from the whole decode with 128-latent tiles, 17.7 with 96 and
# 14.9 with 64 (the global attention sees only its tile), at 56 s, 54 s and 37 s for encode + decode
# against 43 s whole. Smaller tiles are faster at large sizes but stray further: 128 is kept, and
# `--vae-tile 0` runs the autoencoder whole (exact, memory growing with the image).
AUTOENCODER_TILE = 128
AUTOENCODER_OVERLAP = 16
AUTOENCODER_TILE_GROWTH = 1.125  # see autoencoder_tiling


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


@dataclass(frozen=True)
class Budget:
    """What the automatic tile depends on besides the image: free memory and the kind of device."""

    free_bytes: int
    cpu: bool  # CPU rules: smaller tiles are faster there (see MAX_AUTO_TILE_OUTPUT_CPU)
    half: bool = False  # fp16 / bf16 activations: half the working memory per pixel


@dataclass(frozen=True)
class Tiling:
    """A resolved tiling: ``tile`` 0 means the image is processed whole."""

    tile: int
    overlap: int
    automatic: bool  # chosen here (may be halved on running out of memory), not by the caller


def auto_tile(
    scale: int, multiple: int, budget: Budget, size: tuple[int, int] | None = None
) -> int:
    """Tile side in input pixels for an image of ``size`` (H, W): as large as 60 % of the free memory
    allows, up to 2048 output pixels, a multiple of the model's padding multiple. On the CPU, tiles
    of at most 512 output pixels (faster), and images up to 1024 output pixels stay whole."""
    per_px = BYTES_PER_OUTPUT_PIXEL_FP32 * (0.5 if budget.half else 1.0)
    fits = math.sqrt(max(0.6 * budget.free_bytes, 0) / per_px)  # output side
    if budget.cpu:
        if size is not None and max(size) * scale <= min(fits, MAX_UNTILED_OUTPUT_CPU):
            return max(size)
        fits = min(fits, MAX_AUTO_TILE_OUTPUT_CPU)
    out_side = min(fits, MAX_AUTO_TILE_OUTPUT)
    side = int(out_side / scale) // multiple * multiple
    return max(side, multiple)


def resolve(
    tile: int | None,
    overlap: int | None,
    size: tuple[int, int],
    *,
    scale: int,
    multiple: int,
    fixed_size: bool = False,
    budget: Budget | None = None,
) -> Tiling:
    """Interpret a requested ``tile`` (input pixels) for an image of ``size`` (H, W).

    ``None``: automatic, from ``budget`` (required then). 0: never tile. A fixed-size model (an
    aligned face crop) never tiles. Tiles are rounded up to the model's padding multiple (every tile
    is padded to it anyway, so a smaller one only adds tiles and seams), and an image no larger than
    the tile is processed whole, exactly as the reference does.
    """
    automatic = tile is None and not fixed_size
    if fixed_size or tile == 0:
        return Tiling(0, 0, False)
    if tile is None:
        if budget is None:
            raise ValueError("an automatic tile needs a memory budget")
        tile = auto_tile(scale, multiple, budget, size)
    tile = -(-tile // multiple) * multiple
    overlap = default_overlap(tile) if overlap is None else overlap
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    if max(size) <= tile:
        return Tiling(0, 0, automatic)
    return Tiling(tile, overlap, automatic)


def autoencoder_tiling(size: tuple[int, int], tile: int | None = None) -> Tiling:
    """How a latent of ``size`` (h, w) goes through the autoencoder: whole when it fits ``tile``
    latent pixels (None: :data:`AUTOENCODER_TILE`; 0: always whole), else overlapping tiles.

    Tiles may grow by up to :data:`AUTOENCODER_TILE_GROWTH` where that saves a row and column of
    tiles: a 256-latent in 128-tiles overlapping by 16 needs three per side (starts 0, 112, 128,
    the last two sharing 112 of 128 pixels: 2.25x the work), but two of 136 cover it."""
    tile = AUTOENCODER_TILE if tile is None else tile
    if tile <= 0 or max(size) <= tile:
        return Tiling(0, 0, False)
    overlap = min(AUTOENCODER_OVERLAP, max(1, tile // 8))
    side = max(size)
    count = math.ceil((side - overlap) / (tile - overlap))  # tiles per side at ``tile``
    if count > 1:
        fewer = math.ceil((side + (count - 2) * overlap) / (count - 1))  # one tile fewer
        if fewer <= tile * AUTOENCODER_TILE_GROWTH:
            tile = fewer
    if max(size) <= tile:  # one grown tile: whole, as the reference
        return Tiling(0, 0, False)
    return Tiling(tile, overlap, False)


def smaller(
    t: Tiling, size: tuple[int, int], multiple: int, overlap: int | None = None
) -> Tiling | None:
    """The automatic tiling to try after ``t`` ran out of memory on an image of ``size`` (H, W):
    half the tile (a whole image counts as one tile of its longer side), with the requested
    ``overlap`` where it still fits. None: nothing smaller to try."""
    side = smaller_tile(t.tile or max(size), multiple)
    if side is None:
        return None
    if overlap is None or overlap >= side:
        overlap = default_overlap(side)
    return Tiling(side, overlap, True)


def stitch(
    run: Callable[[Box], torch.Tensor],
    height: int,
    width: int,
    tiling: Tiling,
    scale: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``run(box)`` -> (B, C, box.height*scale, box.width*scale) on every tile of a (height,
    width) image and blend the parts into one (B, C, height*scale, width*scale) CPU tensor.

    Untiled (``tiling.tile`` 0) it is ``run`` of the whole image. One full-size buffer: the weights'
    normaliser is the outer product of per-axis sums, applied in place.
    """
    if tiling.tile <= 0:
        return run(Box(0, 0, height, width)).cpu()
    boxes = plan(height, width, tiling.tile, tiling.overlap)
    out: torch.Tensor | None = None
    s = scale
    for i, box in enumerate(boxes):
        part = run(box).cpu()
        if out is None:
            out = torch.zeros(*part.shape[:2], height * s, width * s, dtype=part.dtype)
        weight = torch.from_numpy(blend_weights(box, height, width, tiling.overlap, s))
        oy = slice(box.top * s, (box.top + box.height) * s)
        ox = slice(box.left * s, (box.left + box.width) * s)
        out[:, :, oy, ox] += part * weight.to(part.dtype)
        if on_tile is not None:
            on_tile(i + 1, len(boxes))
    assert out is not None
    ty, tx = weight_totals(boxes, height, width, tiling.overlap, s)
    out /= torch.from_numpy(ty).to(out.dtype)[:, None]
    out /= torch.from_numpy(tx).to(out.dtype)[None, :]
    return out
