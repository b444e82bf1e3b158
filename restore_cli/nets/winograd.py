"""3x3 convolution as Winograd F(4x4, 3x3) for float32 inference on the CPU.

A 3x3, stride-1, padding-1 convolution takes 9 multiply-adds per output and input channel. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes a
4x4 output tile from a 6x6 input tile with 36 products instead of 144:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, summed over input channels)

With the tiles flattened, the channel sums become 36 batched matrix products ``(tiles, C) @ (C, K)``, a quarter of the direct method's multiply-adds. The CPU's
convolution kernels have no Winograd path for AVX2 machines, and the autoencoder and UNet spend almost all
their time in 3x3 convolutions with 128-640 channels, so this is where the pipeline's time goes.

Accuracy: with the interpolation points chosen below the error is within 1.5x of a direct float32
convolution's; the golden-vector tests hold the whole pipeline to the reference's tolerances. Used only in float32 on the CPU without autograd; CUDA, MPS, half precision and training use
the framework's convolution.

Notation: N batch, C input and K output channels, H x W image, T tiles in a chunk, m = 4 output tile side,
a = 6 input tile side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

M_OUT = 4  # output tile side
A_IN = 6  # input tile side, M_OUT + 3 - 1
MIN_TILES = (
    64  # tiles per chunk: enough for efficient matrix products, small enough to stay in cache
)
MIN_CHANNELS = 32  # below this the tile transforms cost more than they save
MIN_IMAGE_TILES = (
    64  # on smaller maps (under 32x32) transforming the filters costs more than it saves
)

# Interpolation points 0, 1, -1, 1/2, -2 and infinity. The textbook choice (0, +-1, +-2) multiplies the
# rounding error of a float32 convolution by about five; with 1/2 and -2 the error stays within 1.5x of
# the direct method's (tests/test_winograd.py), which the reference tolerances need through deep networks.
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
    the 6x6 transforms are mostly zeros, so this does a fifth of the work.
    """
    p, a = mat.shape
    rows = (mat @ tiles.reshape(a, -1)).view(p, a, -1)
    return torch.matmul(mat, rows).view(p * p, -1)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (36, C, K) transformed filters ``G g G^T``, flattened row-major."""
    k, c = weight.shape[:2]
    g = _matrix(_G, weight)  # (6, 3)
    return _both_axes(g, weight.permute(2, 3, 1, 0)).view(A_IN * A_IN, c, k)


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Same result as ``F.conv2d(x, w, bias, padding=1)`` given ``u = transform_weight(w)``.

    x: (N, C, H, W), any memory format. Returns (N, K, H, W) in channels-last memory format.
    The image is processed in strips of tile rows so the tile tensors stay in cache.
    """
    n, c, h, w = x.shape
    k = u.shape[2]
    m, a = M_OUT, A_IN
    th, tw = -(-h // m), -(-w // m)
    bt, at = _matrix(_BT, x), _matrix(_AT, x)  # (6, 6), (4, 6)
    out = torch.empty(n, th * m, tw * m, k, dtype=x.dtype, device=x.device)
    nhwc = x.permute(0, 2, 3, 1)
    rows = max(1, -(-MIN_TILES // (n * tw)))
    for i0 in range(0, th, rows):
        i1 = min(th, i0 + rows)
        r0, r1 = i0 * m - 1, i1 * m + 1  # input rows of this strip, with a one-pixel halo
        strip = F.pad(
            nhwc[:, max(r0, 0) : min(r1, h)],
            (0, 0, 1, tw * m + 1 - w, max(0, -r0), max(0, r1 - h)),
        )  # (N, 4 rows + 2, 4 tw + 2, C), zeros outside the image
        t = n * (i1 - i0) * tw
        d = strip.unfold(1, a, m).unfold(2, a, m)  # (N, rows, tw, C, 6, 6)
        d = d.permute(4, 5, 0, 1, 2, 3)  # (6, 6, N, rows, tw, C)
        v = _both_axes(bt, d).view(a * a, t, c)  # B^T d B
        prod = torch.bmm(v, u)  # (36, T, K), summed over C
        y = _both_axes(at, prod.view(a, a, t * k)).view(m * m, t, k)  # A^T (.) A
        if bias is not None:
            y += bias
        out[:, i0 * m : i1 * m].view(n, i1 - i0, m, tw, m, k).copy_(
            y.view(m, m, n, i1 - i0, tw, k).permute(2, 3, 0, 4, 1, 5)
        )
    return out[:, :h, :w].permute(0, 3, 1, 2)


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


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 3, padding=1)`` (same keys) that runs as Winograd where that is faster.

    The filters are transformed on every call rather than kept: keeping them would cost four times the
    weights' memory (about 1.5 GB for a UNet and its autoencoder) for a few percent of speed.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if applies(x, self.weight):
            return conv3x3(x, transform_weight(self.weight), self.bias)
        return super().forward(x)
