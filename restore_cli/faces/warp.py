"""The OpenCV image operations of facexlib's face pipeline, reproduced bit-exactly in numpy/torch.

facexlib ``utils/face_restoration_helper.py`` calls ``cv2.warpAffine`` (crop and paste),
``cv2.invertAffineTransform``, ``cv2.erode``, ``cv2.GaussianBlur`` and ``cv2.resize(LANCZOS4)``.
These functions follow OpenCV's own arithmetic (``imgproc/src/imgwarp.cpp: WarpAffineInvoker``,
``remapBilinear``; ``morph``; ``smooth``; ``resize``) so crops and pastes match GFPGAN's to the
level. Arrays are (H, W) or (H, W, C); pixel (x, y) has its centre at integer (x, y).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

AB_BITS = 10  # warpAffine: matrix entries in 1/1024
INTER_BITS = 5  # sample positions in 1/32 pixel
ROUND_DELTA = 1 << (AB_BITS - INTER_BITS - 1)  # 16
COEF_BITS = 15  # uint8 bilinear weights sum to 2^15


def invert_affine(m: np.ndarray) -> np.ndarray:
    """(2, 3) float64 inverse of an affine map (``cv2.invertAffineTransform``)."""
    m = np.asarray(m, dtype=np.float64)
    d = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22, a12, a21 = m[1, 1] * d, m[0, 0] * d, -m[0, 1] * d, -m[1, 0] * d
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    return np.array([[a11, a12, b1], [a21, a22, b2]])


def _rint32(x: np.ndarray) -> np.ndarray:
    """``saturate_cast<int>(double)``: round half to even, clipped to int32."""
    return np.clip(np.rint(x), -(2**31), 2**31 - 1).astype(np.int64)


def warp_affine(
    src: np.ndarray,
    m: np.ndarray,
    size: tuple[int, int],
    border: float | tuple[float, ...] = 0,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """``cv2.warpAffine(src, m, size)``: bilinear, constant ``border``; ``size`` = (width, height).

    ``m`` maps source to destination. Sample positions are quantised to 1/32 pixel as OpenCV does;
    uint8 sources use its 15-bit fixed-point weights, float32 sources float32 weights. ``window``
    (x0, y0, x1, y1) computes only that part of the destination (same values as the full warp).
    """
    a = invert_affine(m)
    x0, y0, x1, y1 = window if window is not None else (0, 0, size[0], size[1])
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    adelta = _rint32(a[0, 0] * xs * (1 << AB_BITS))
    bdelta = _rint32(a[1, 0] * xs * (1 << AB_BITS))
    xrow = _rint32((a[0, 1] * ys + a[0, 2]) * (1 << AB_BITS)) + ROUND_DELTA
    yrow = _rint32((a[1, 1] * ys + a[1, 2]) * (1 << AB_BITS)) + ROUND_DELTA
    shift = AB_BITS - INTER_BITS
    X = (xrow[:, None] + adelta[None, :]) >> shift  # position in 1/32 pixel
    Y = (yrow[:, None] + bdelta[None, :]) >> shift
    h, w = src.shape[:2]
    # Source taps, framed by two pixels of the border value: a tap outside the image lands on
    # the frame, as with OpenCV's constant border.
    ix = np.clip(X >> INTER_BITS, -2, w) + 2
    iy = np.clip(Y >> INTER_BITS, -2, h) + 2
    fx, fy = (X & 31).astype(np.int32), (Y & 31).astype(np.int32)
    integer = src.dtype == np.uint8
    dtype = np.int32 if integer else np.float32
    chans = src.shape[2:]
    framed = np.empty((h + 4, w + 4) + chans, dtype=dtype)
    framed[...] = np.asarray(border, dtype=dtype)
    framed[2:-2, 2:-2] = src
    flat = framed.reshape((h + 4) * (w + 4), *chans)
    base = iy * (w + 4) + ix
    e = (...,) + (None,) * len(chans)  # per-pixel weights over the channels
    if integer:
        gx, gy, one = fx, fy, 32
    else:
        gx, gy, one = fx.astype(np.float32) / 32, fy.astype(np.float32) / 32, np.float32(1)
    weights = [(one - gx) * (one - gy), gx * (one - gy), (one - gx) * gy, gx * gy]
    acc = np.zeros(X.shape + chans, dtype=dtype)
    for offset, wt in zip((0, 1, w + 4, w + 5), weights, strict=True):
        acc += flat[base + offset] * (wt * 32 if integer else wt)[e]
    if integer:
        return np.clip((acc + (1 << (COEF_BITS - 1))) >> COEF_BITS, 0, 255).astype(np.uint8)
    return acc


def sliding(x: torch.Tensor, k: int, dim: int, op: Callable = torch.minimum) -> torch.Tensor:
    """``op`` (minimum or maximum) over every window of k along ``dim`` (size n - k + 1), in
    log2(k) steps: windows of 1, 2, 4, ... p <= k, then two overlapping windows of p."""
    m, p = x, 1
    while 2 * p <= k:
        n = m.shape[dim] - p
        m, p = op(m.narrow(dim, 0, n), m.narrow(dim, p, n)), 2 * p
    n = x.shape[dim] - k + 1
    return op(m.narrow(dim, 0, n), m.narrow(dim, k - p, n))


def erode(x: torch.Tensor, k: int) -> torch.Tensor:
    """``cv2.erode`` of (H, W) float32 with a k x k all-ones kernel (k = 0: 3 x 3).

    Minimum over [x - k//2, x + k - 1 - k//2] (likewise for y); outside the image is ignored.
    Separable (rows, then columns): the minimum is exact in any order.
    """
    k = 3 if k == 0 else k
    lo, hi = k // 2, k - 1 - k // 2
    y = sliding(F.pad(x[None], (lo, hi), value=math.inf)[0], k, 1)
    return sliding(F.pad(y.T[None], (lo, hi), value=math.inf)[0], k, 1).T.contiguous()


def gaussian_kernel(k: int) -> np.ndarray:
    """``cv2.getGaussianKernel(k, 0)`` for float32 images (OpenCV's bit-exact construction)."""
    small = {
        1: [1.0],
        3: [0.25, 0.5, 0.25],
        5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
        7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
        9: [v / 256 for v in (4, 13, 30, 51, 60, 51, 30, 13, 4)],
    }
    if k in small:
        return np.asarray(small[k], dtype=np.float32)
    sigma = k * 0.15 + 0.35  # = 0.3 ((k - 1) / 2 - 1) + 0.8
    scale2 = -0.125 / (sigma * sigma)
    half = (k - 1) // 2
    side = np.exp(np.arange(1 - k, 0, 2, dtype=np.float64) ** 2 * scale2)  # x = 1-k, 3-k, ...
    total = float(side.sum()) * 2 + 1.0
    out = np.empty(k, dtype=np.float64)
    out[:half] = side / total
    out[half + 1 :] = out[:half][::-1]
    out[half] = 1.0 / total
    return out.astype(np.float32)


def gaussian_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (k, k), 0)`` of (H, W) float32, reflect-101 border, bit-exact.

    OpenCV's float32 order (AVX2 build): rows as a chain of fused multiply-adds over the taps,
    columns symmetric (centre first, then the pairs, summed before their multiply-add). Each fused
    multiply-add is emulated in float64 then rounded to float32. Where a pixel's whole
    neighbourhood is 0 or one constant value the chain is computed once for that value, so the
    cost follows the mask edge, not the area.
    """
    if k == 1:
        return x.clone()
    g = gaussian_kernel(k).astype(np.float64)
    h, w = x.shape
    rows = x.numpy()[:, _reflect101(w, k // 2).numpy()]  # (h, w + k - 1)
    mid = _separable_pass(rows, g, 1, _row_chain)
    cols = mid[_reflect101(h, k // 2).numpy()]  # (h + k - 1, w)
    return torch.from_numpy(_separable_pass(cols, g, 0, _col_chain))


Taps = Callable[[int], np.ndarray]  # offset 0 .. k-1 -> the values there, one per pixel


def _row_chain(tap: Taps, g: np.ndarray, m: int) -> np.ndarray:
    """s = 0; s = fma(x_i, g_i, s) for i = 0 .. k-1, in float32."""
    acc = np.zeros(m, dtype=np.float32)
    for i in range(len(g)):
        acc = (tap(i).astype(np.float64) * g[i] + acc).astype(np.float32)
    return acc


def _col_chain(tap: Taps, g: np.ndarray, m: int) -> np.ndarray:
    """s = centre * g_r; s = fma(x_{r-j} + x_{r+j}, g_{r+j}, s) for j = 1 .. r, in float32."""
    r = len(g) // 2
    acc = (tap(r).astype(np.float64) * g[r]).astype(np.float32) + np.zeros(m, np.float32)
    for j in range(1, r + 1):
        pair = (tap(r - j) + tap(r + j)).astype(np.float64)
        acc = (pair * g[r + j] + acc).astype(np.float32)
    return acc


def _separable_pass(
    p: np.ndarray, g: np.ndarray, axis: int, chain: Callable[[Taps, np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """One pass of the kernel ``g`` over padded ``p`` along ``axis`` (output k - 1 shorter).

    Pixels whose k neighbours are all 0 give 0; those all equal to the largest such constant
    (the mask's interior) take the chain computed once; the rest run the chain per pixel."""
    k = len(g)
    t = torch.from_numpy(p)
    hi = sliding(t, k, axis, torch.maximum).numpy()
    lo = sliding(t, k, axis, torch.minimum).numpy()
    const = lo == hi
    out = np.zeros(lo.shape, dtype=np.float32)
    values = lo[const & (lo != 0)]
    common = np.float32(values.max()) if values.size else np.float32(0)
    if values.size:
        out[const & (lo == common)] = chain(lambda i: np.full(1, common), g, 1)[0]
    ys, xs = np.nonzero(~const | ((lo != 0) & (lo != common)))
    if ys.size:
        tap = (lambda i: p[ys, xs + i]) if axis == 1 else (lambda i: p[ys + i, xs])
        out[ys, xs] = chain(tap, g, len(ys))
    return out


def _reflect101(n: int, r: int) -> torch.Tensor:
    """Indices -r .. n-1+r folded into [0, n) as ``BORDER_REFLECT_101`` (..c b | a b c .. )."""
    i = torch.arange(-r, n + r).abs()
    if n == 1:
        return torch.zeros_like(i)
    i = i % (2 * (n - 1))
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def resize_lanczos4(src: np.ndarray, size: tuple[int, int], block: int = 256) -> np.ndarray:
    """``cv2.resize(src, size, interpolation=INTER_LANCZOS4)`` for uint8 (H, W[, C]); ``size`` =
    (width, height). Separable 8-tap, replicate border, 11-bit integer coefficients; computed in
    blocks of ``block`` output rows to bound memory."""
    h, w = src.shape[:2]
    if (w, h) == tuple(size):
        return src.copy()
    cx, ix = _lanczos_taps(w, size[0])
    cy, iy = _lanczos_taps(h, size[1])
    out = np.empty((size[1], size[0]) + src.shape[2:], dtype=np.uint8)
    for r0 in range(0, size[1], block):
        rows = iy[r0 : r0 + block]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        part = src[lo:hi].astype(np.int64)
        horiz = sum(part[:, ix[:, t]] * _bcast(cx[:, t], part.ndim, 1) for t in range(8))
        coef = cy[r0 : r0 + block]
        vert = sum(horiz[rows[:, t] - lo] * _bcast(coef[:, t], part.ndim, 0) for t in range(8))
        out[r0 : r0 + block] = np.clip((vert + (1 << 21)) >> 22, 0, 255)
    return out


def _bcast(c: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return c.reshape(shape)


def _lanczos_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(dst_len, 8) integer coefficients (x 2048) and clamped source indices along one axis."""
    scale = 1.0 / (dst_len / src_len)
    f = ((np.arange(dst_len, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    t = f - s.astype(np.float32)  # float32 in [0, 1)
    s45 = 0.70710678118654752440084436210485
    cs = [(1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45)]
    y0 = -(t + np.float32(3)).astype(np.float64) * math.pi * 0.25
    s0, c0 = np.sin(y0), np.cos(y0)
    coef = np.empty((dst_len, 8), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # t = 0 rows are replaced below
        for i in range(8):
            y = -(t + np.float32(3) - np.float32(i)).astype(np.float64) * math.pi * 0.25
            coef[:, i] = ((cs[i][0] * s0 + cs[i][1] * c0) / (y * y)).astype(np.float32)
        total = np.zeros(dst_len, dtype=np.float32)
        for i in range(8):
            total += coef[:, i]
        coef *= (np.float32(1) / total)[:, None]
    tiny = t < np.finfo(np.float32).eps
    coef[tiny] = 0
    coef[tiny, 3] = 1
    icoef = np.rint(coef * np.float32(2048)).astype(np.int64)
    idx = np.clip(s[:, None] + np.arange(-3, 5)[None, :], 0, src_len - 1)
    return icoef, idx
