"""3x3 convolution as Winograd F(4x4, 3x3) for float32 inference on the CPU.

A 3x3, stride-1, padding-1 convolution takes 9 multiply-adds per output and input channel. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes a
4x4 output tile from a 6x6 input tile with 36 products instead of 144:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, summed over input channels)

With the tiles flattened, the channel sums become 36 batched matrix products ``(tiles, C) @ (C, K)``, a quarter of the direct method's multiply-adds. The CPU's
convolution kernels have no Winograd path for AVX2 machines, and the autoencoder and UNet spend almost all
their time in 3x3 convolutions with 128-640 channels, so this is where the pipeline's time goes.

Accuracy: with the interpolation points chosen below, the largest error of one convolution (256 channels,
random data) is 2.0e-5 of outputs up to 4.5, against 1.2e-6 for the direct float32 method and 5.0e-5 for
the textbook points; the golden-vector tests hold the whole pipeline to the reference's tolerances
(every stage within 4e-5, against a tolerance of 1e-3). Used only in float32 on the CPU without
autograd; CUDA, MPS, half precision and training use the framework's convolution.

Notation: N batch, C input and K output channels, H x W image, T tiles in a chunk, m = 4 output tile side,
a = 6 input tile side.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

M_OUT = 4  # output tile side
A_IN = 6  # input tile side, M_OUT + 3 - 1
MIN_TILES = 64  # tiles per strip at least: enough rows for efficient matrix products
# Tiles x input channels per strip: the strip's transformed tiles (36 x this many floats, 4.5 MiB)
# stay in cache through the products. On a 2-core AMD EPYC (32 MiB L3) nine autoencoder and UNet
# convolutions took 1250 ms in all at 128 tiles a strip and 1343 ms at 64, the best per size
# being about this many values (64 tiles at 512 channels, 128 at 256).
STRIP_VALUES = 32768
MIN_CHANNELS = 32  # below this the tile transforms cost more than they save
FILTER_BYTES = 20 * 2**20  # transformed filters per piece (see transform_weight)
MIN_IMAGE_TILES = (
    64  # on smaller maps (under 32x32) transforming the filters costs more than it saves
)
KEEP_BYTES = 384 * 2**20  # transformed filters kept for one image's UNet calls (see keep_filters)

# Interpolation points 0, 1, -1, 1/2, -2 and infinity: 2.5x less rounding error than the textbook choice
# (0, +-1, +-2) in float32 (see the module docstring; tests/test_winograd.py bounds it).
# Exact: A^T[(G g) * (B^T d)] equals the correlation of d with g for every d and g.
_BT = [
    [1, -3 / 2, -2, 3 / 2, 1, 0],
    [0, -1, 1 / 2, 5 / 2, 1, 0],
    [0, 1, -5 / 2, 1 / 2, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 1 / 2, -1, -1 / 2, 1, 0],
    [0, 1, -3 / 2, -2, 3 / 2, 1],
]
_G = [
    [1, 0, 0],
    [1 / 3, 1 / 3, 1 / 3],
    [-1 / 3, 1 / 3, -1 / 3],
    [-16 / 15, -8 / 15, -4 / 15],
    [1 / 15, -2 / 15, 4 / 15],
    [0, 0, 1],
]
_AT = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 1 / 2, -2, 0],
    [0, 1, 1, 1 / 4, 4, 0],
    [0, 1, -1, 1 / 8, -8, 1],
]


def _matrix(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(like.device, like.dtype)


def _both_axes(mat: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """(p, 6) matrix applied to both tile axes: (6, 6, X) -> (p * p, X), i.e. ``mat @ tile @ mat^T``.

    Two thin matrix products (rows, then columns batched over rows) instead of one Kronecker product:
    the 6x6 transforms are mostly zeros, so this does a fifth of the work. Used for the input tiles;
    the output transform is one (16, 36) Kronecker product instead, which measured 3-13 % faster
    per convolution (five map sizes of the autoencoder and UNet, standalone).
    """
    p, a = mat.shape
    rows = (mat @ tiles.reshape(a, -1)).view(p, a, -1)
    return torch.matmul(mat, rows).view(p * p, -1)


def transform_weight(weight: torch.Tensor) -> list[torch.Tensor]:
    """(K, C, 3, 3) filters -> transformed filters ``G g G^T``: (36, C, Kb) pieces, output channels
    split into at most :data:`FILTER_BYTES` each, flattened row-major.

    One matrix product ``kron(G, G) @ g`` per piece, written straight into the layout the tile
    products read. The pieces keep each allocation small enough for the C library to reuse memory
    it already has: one (36, 512, 512) tensor is 36 MiB, which the allocator maps fresh on every call,
    and touching those new pages took longer than the transform itself (10 against 1.6 ms).
    """
    k, c = weight.shape[:2]
    g = _matrix(_G, weight)  # (6, 3)
    kron = torch.kron(g, g)  # (36, 9): [6 p + q, 3 i + j] = G[p, i] G[q, j]
    per_channel = A_IN * A_IN * c * weight.element_size()
    step = min(k, max(32, FILTER_BYTES // per_channel // 32 * 32))
    out = []
    for k0 in range(0, k, step):
        part = weight[k0 : k0 + step]
        kb = part.shape[0]
        if part.is_contiguous():  # (Kb, C, 3, 3): copied as (C Kb, 9), filters in (C, Kb) order
            taps = part.transpose(0, 1).reshape(c * kb, 9).t()
        else:  # channels-last (Kb, 3, 3, C) in memory: copied as (9, C Kb), one 2-D transpose a tap
            taps = part.permute(2, 3, 1, 0).reshape(9, c * kb)
        out.append(torch.mm(kron, taps).view(A_IN * A_IN, c, kb))
    return out


def conv3x3(
    x: torch.Tensor,
    u: list[torch.Tensor],
    bias: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same result as ``F.conv2d(x, w, bias, padding=1)`` given ``u = transform_weight(w)``.

    x: (N, C, H, W), any memory format. Returns (N, K, H, W) in channels-last memory format.
    The image is processed in strips of tile rows so the tile tensors stay in cache.
    ``out``: where to write, if :func:`fits_out` says it can take the result; it may be ``x``
    itself (each strip is stored only once the next one has copied its input rows, halo included).
    A new map costs more than it seems: see ``layers.group_norm``.
    """
    n, c, h, w = x.shape
    k = sum(p.shape[2] for p in u)
    m, a = M_OUT, A_IN
    th, tw = -(-h // m), -(-w // m)
    bt = _matrix(_BT, x)  # (6, 6)
    at = _matrix(_AT, x)
    at2 = torch.kron(at, at)  # (16, 36): A^T (.) A as one product, exact (powers of two)
    if out is None:
        full = torch.empty(n, th * m, tw * m, k, dtype=x.dtype, device=x.device)
    else:
        assert fits_out(out, x, k)
        full = out.permute(0, 2, 3, 1)
    nhwc = x.permute(0, 2, 3, 1)
    rows = max(1, -(-max(MIN_TILES, STRIP_VALUES // c) // (n * tw)))
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (where, tiles) still to store

    def store() -> None:
        for dest, y in pending:
            dest.copy_(y)
        pending.clear()

    for i0 in range(0, th, rows):
        i1 = min(th, i0 + rows)
        r0, r1 = i0 * m - 1, i1 * m + 1  # input rows of this strip, with a one-pixel halo
        strip = F.pad(
            nhwc[:, max(r0, 0) : min(r1, h)],
            (0, 0, 1, tw * m + 1 - w, max(0, -r0), max(0, r1 - h)),
        )  # (N, 4 rows + 2, 4 tw + 2, C), zeros outside the image
        store()  # the previous strip's output: its rows have been read
        t = n * (i1 - i0) * tw
        d = strip.unfold(1, a, m).unfold(2, a, m)  # (N, rows, tw, C, 6, 6)
        d = d.permute(4, 5, 0, 1, 2, 3)  # (6, 6, N, rows, tw, C)
        v = _both_axes(bt, d).view(a * a, t, c)  # B^T d B
        k0 = 0
        for piece in u:
            kb = piece.shape[2]
            prod = torch.bmm(v, piece)  # (36, T, Kb), summed over C
            y = torch.mm(at2, prod.view(a * a, t * kb)).view(m * m, t, kb)  # A^T (.) A
            if bias is not None:
                y += bias[k0 : k0 + kb]
            dest = full[:, i0 * m : i1 * m, :, k0 : k0 + kb].view(n, i1 - i0, m, tw, m, kb)
            pending.append((dest, y.view(m, m, n, i1 - i0, tw, kb).permute(2, 3, 0, 4, 1, 5)))
            k0 += kb
    store()
    return full[:, :h, :w].permute(0, 3, 1, 2)


def writable(out: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> bool:
    """Whether ``out`` can take a result of ``shape`` computed from ``like``: that shape, ``like``'s
    dtype and device, and contiguous channels-last memory (what the in-place paths write)."""
    return (
        out.shape == shape
        and out.dtype == like.dtype
        and out.device == like.device
        and out.permute(0, 2, 3, 1).is_contiguous()
    )


def fits_out(out: torch.Tensor, x: torch.Tensor, k: int) -> bool:
    """Whether ``conv3x3(x, ...)`` with ``k`` output channels can write into ``out``: see
    :func:`writable`, and whole tiles (height and width multiples of 4)."""
    n, _, h, w = x.shape
    return writable(out, (n, k, h, w), x) and h % M_OUT == 0 and w % M_OUT == 0


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``conv3x3`` is the faster way to convolve ``x`` with these filters (and numerically fit)."""
    n, c, h, w = x.shape
    tiles = n * -(-h // M_OUT) * -(-w // M_OUT)
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and min(weight.shape[0], c) >= MIN_CHANNELS
        and tiles >= MIN_IMAGE_TILES
    )


class KeptFilters:
    """Transformed filters of one network's convolutions, kept for a run of calls (see
    :func:`keep_filters`): each convolution's at most once, up to ``budget`` bytes in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._filters: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def get(self, conv: Conv3x3) -> list[torch.Tensor]:
        """``transform_weight(conv.weight)``, kept for the next call while the budget allows."""
        u = self._filters.get(id(conv))
        if u is not None:
            return u
        u = transform_weight(conv.weight)
        size = sum(piece.numel() * piece.element_size() for piece in u)
        with self._lock:
            if self.used + size <= self.budget:
                self._filters[id(conv)] = u
                self.used += size
        return u


@contextlib.contextmanager
def keep_filters(module: nn.Module, budget: int | None = None) -> Iterator[None]:
    """Inside this block, the :class:`Conv3x3` layers of ``module`` transform their filters once
    and keep them (up to ``budget`` bytes, default :data:`KEEP_BYTES`) instead of on every call;
    they are dropped when it ends. For the calls of one image: a UNet runs its filters through the
    same transform at every step, and on a 64x64 latent (realsr-v3, 2-core AMD EPYC, fp32,
    in-process A/B) a call took 0.985 s with its filters kept against 1.113 s transforming them
    (240 MiB kept). A block inside another one keeps using the outer one's filters."""
    convs = [m for m in module.modules() if isinstance(m, Conv3x3)]
    if not convs or convs[0].kept is not None:
        yield
        return
    kept = KeptFilters(KEEP_BYTES if budget is None else budget)
    for conv in convs:
        conv.kept = kept
    try:
        yield
    finally:
        for conv in convs:
            conv.kept = None


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 3, padding=1)`` (same keys) that runs as Winograd where that is faster.

    The filters are transformed on every call rather than kept: keeping them would cost four times the
    weights' memory (about 1.5 GB for a UNet and its autoencoder) for a few percent of speed; a
    UNet keeps them for the steps of one image only (:func:`keep_filters`).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.kept: KeptFilters | None = None  # set by keep_filters

    def _transformed(self) -> list[torch.Tensor]:
        return transform_weight(self.weight) if self.kept is None else self.kept.get(self)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: a map to write the result into where that saves allocating one (it may be
        ``x``, a map the caller owns); otherwise, or where it does not fit, a new map."""
        if applies(x, self.weight):
            if out is not None and not fits_out(out, x, self.out_channels):
                out = None
            return conv3x3(x, self._transformed(), self.bias, out)
        return super().forward(x)

    def for_pieces(self, whole: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """This convolution for pieces (bands of rows) of the map ``whole``: the filters are
        transformed once for all of them, and every piece takes the path the whole map would."""
        if not applies(whole, self.weight):
            return super().forward
        u = self._transformed()
        return lambda x: conv3x3(x, u, self.bias)
