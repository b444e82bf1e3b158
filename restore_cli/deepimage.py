"""16-bit PNG and TIFF, which Pillow would truncate to 8 bits: pypng and tifffile read and write them.

Arrays are float32 in [0, 1] when read, ``(H, W, C)`` uint16 when written.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
import tifffile
from PIL import ImageFile

from .exif import EXIF_PREFIX


def png_bit_depth(fp: BinaryIO) -> int:
    fp.seek(0)
    head = fp.read(25)  # signature (8), IHDR length and type (8), width and height (8), depth
    return head[24] if len(head) == 25 else 0


def read_png16(fp: BinaryIO) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """A 16-bit PNG, after checking that its image data inflates to no more than its header
    declares (pypng inflates each IDAT chunk whole, so a small file could ask for gigabytes)."""
    fp.seek(0)
    reader = png.Reader(file=fp)
    reader.preamble()
    _check_inflated_size(fp, reader)
    fp.seek(0)
    width, height, rows, info = png.Reader(file=fp).asDirect()
    planes = info["planes"]
    a = np.empty((height, width * planes), np.float32)
    for y, row in enumerate(rows):
        a[y] = row
    a = a.reshape(height, width, planes) / np.float32(2 ** info["bitdepth"] - 1)
    gray = bool(info["greyscale"])
    color = np.repeat(a[..., :1], 3, axis=2) if gray else np.ascontiguousarray(a[..., :3])
    alpha = np.ascontiguousarray(a[..., -1]) if info["alpha"] else None
    return color, alpha, gray


_STEP = 1 << 20  # bytes inflated at a time
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def _check_inflated_size(fp: BinaryIO, reader: png.Reader) -> None:
    """Inflate the IDAT stream in bounded steps, discarding it; ValueError past the declared size."""
    passes = _ADAM7 if reader.interlace else ((0, 0, 1, 1),)
    row_bytes = reader.planes * reader.bitdepth / 8
    declared = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(reader.width - x0) // dx), -(-(reader.height - y0) // dy)
        if w > 0 and h > 0:
            declared += h * (1 + math.ceil(w * row_bytes))
    fp.seek(0)
    inflate, total = zlib.decompressobj(), 0
    for kind, data in png.Reader(file=fp).chunks():
        if kind != b"IDAT":
            continue
        while True:
            out = inflate.decompress(data, _STEP)
            total += len(out)
            if total > declared:
                raise ValueError("its image data is larger than its header declares")
            data = inflate.unconsumed_tail
            if not data and len(out) < _STEP:
                break


def tiff_bits(im: ImageFile.ImageFile) -> int:
    bits = im.tag_v2.get(258, 8)  # type: ignore[attr-defined]
    return max(bits) if isinstance(bits, tuple) else int(bits)


def read_tiff_deep(
    fp: BinaryIO, check: Callable[[int], None]
) -> tuple[np.ndarray, np.ndarray | None, bool] | None:
    """First page of a TIFF deeper than 8 bits, or None to let Pillow try (8-bit at best).

    ``check(samples)`` is called before anything is decoded with the number of samples tifffile
    would allocate (the page's whole shape, every plane and depth slice, or one tile if larger) and
    raises to refuse. tifffile needs the optional ``imagecodecs`` package for LZW, PackBits and
    JPEG compression.
    """
    fp.seek(0)
    try:
        tif = tifffile.TiffFile(fp)
    except Exception:  # not tifffile's kind of TIFF; Pillow's decoder reports real damage
        return None
    with tif:
        try:
            page = tif.pages.first
            photometric, extra = int(page.photometric), tuple(page.extrasamples)
            samples = max(math.prod(page.shape), math.prod(page.chunks))
        except Exception:
            return None
        check(samples)
        try:
            separate, _, height, width, contiguous = page.shaped
            a = page.asarray(maxworkers=1).reshape(page.shaped)[:, 0]  # the first depth slice
            a = np.moveaxis(a, 0, -1).reshape(height, width, separate * contiguous)
            bits = page.bitspersample
        except Exception:  # unsupported codec or layout
            return None
    if photometric not in (0, 1, 2) or a.dtype.kind not in "uf":  # min-is-white, -black, RGB
        return None
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
