"""16-bit PNG and TIFF, which Pillow would truncate to 8 bits: pypng and tifffile read and write them.

Arrays are float32 in [0, 1] when read, ``(H, W, C)`` uint16 when written.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import ImageFile

from .exif import EXIF_PREFIX


def png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)  # signature (8), IHDR length and type (8), width and height (8), depth
    return head[24] if len(head) == 25 else 0


def read_png16(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    with open(path, "rb") as f:  # pypng leaves files it opened itself to the garbage collector
        width, height, rows, info = png.Reader(file=f).asDirect()
        planes = info["planes"]
        a = np.empty((height, width * planes), np.float32)
        for y, row in enumerate(rows):
            a[y] = row
    a = a.reshape(height, width, planes) / np.float32(2 ** info["bitdepth"] - 1)
    gray = bool(info["greyscale"])
    color = np.repeat(a[..., :1], 3, axis=2) if gray else np.ascontiguousarray(a[..., :3])
    alpha = np.ascontiguousarray(a[..., -1]) if info["alpha"] else None
    return color, alpha, gray


def tiff_bits(im: ImageFile.ImageFile) -> int:
    bits = im.tag_v2.get(258, 8)  # type: ignore[attr-defined]
    return max(bits) if isinstance(bits, tuple) else int(bits)


def read_tiff_deep(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool] | None:
    """First page of a TIFF deeper than 8 bits, or None to let Pillow try (8-bit at best).

    tifffile needs the optional ``imagecodecs`` package for LZW, PackBits and JPEG compression.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            photometric, extra = int(page.photometric), tuple(page.extrasamples)
            a = page.asarray()
            if page.planarconfig == 2 and a.ndim == 3:  # separate planes: (S, H, W)
                a = np.moveaxis(a, 0, -1)
            bits = page.bitspersample
    except Exception:  # unsupported codec or layout; Pillow's decoder reports real damage
        return None
    if photometric not in (0, 1, 2) or a.dtype.kind not in "uf":  # min-is-white, -black, RGB
        return None
    a = a[..., None] if a.ndim == 2 else a
    a = a.astype(np.float32) / (np.float32(2**bits - 1) if a.dtype.kind == "u" else 1)
    a = np.clip(a, 0.0, 1.0)
    gray = photometric in (0, 1)
    color = a[..., :1] if gray else a[..., :3]
    color = 1 - color if photometric == 0 else color
    alpha = a[..., color.shape[2]] if extra and extra[0] in (1, 2) else None
    if alpha is not None and extra[0] == 1:  # associated (premultiplied) alpha
        color = np.where(alpha[..., None] > 0, color / np.maximum(alpha[..., None], 1e-12), 0)
    color = np.repeat(color, 3, axis=2) if gray else color
    return np.ascontiguousarray(color, np.float32), alpha, gray


def write_png16(path: Path, a: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """16-bit PNG from (H, W, C) uint16, rows stored with the "Up" filter."""
    height, width, channels = a.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = a.astype(">u2").reshape(height, -1).view(np.uint8)
    up = np.empty((height, rows.shape[1] + 1), np.uint8)
    up[:, 0] = 2
    up[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=up[1:, 1:])  # wraps modulo 256, as PNG defines
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))]
    if icc:
        chunks.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append((b"eXIf", exif.removeprefix(EXIF_PREFIX)))
    chunks += [(b"IDAT", zlib.compress(up.tobytes(), 6)), (b"IEND", b"")]
    with open(path, "wb") as f:
        png.write_chunks(f, chunks)


def write_tiff16(path: Path, a: np.ndarray, icc: bytes | None) -> None:
    """16-bit TIFF from (H, W, C) uint16, uncompressed; the EXIF is not written."""
    gray = a.shape[2] <= 2
    tifffile.imwrite(
        path,
        a[..., 0] if a.shape[2] == 1 else a,
        photometric="minisblack" if gray else "rgb",
        extrasamples=("unassalpha",) if a.shape[2] in (2, 4) else None,
        iccprofile=icc,
        metadata=None,
    )
