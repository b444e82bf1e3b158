"""EXIF on the way through: the orientation is applied to the pixels and reset to 1 in what is carried.

Only tags that describe the photo are carried out of (or into) a TIFF, whose other tags describe
one file's layout.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
EXIF_PREFIX = b"Exif\x00\x00"
# EXIF tags that describe the photo rather than the file layout; the only ones copied out of a
# TIFF's own tags or into a TIFF (the others, like StripOffsets, belong to one file).
DESCRIPTIVE_TAGS = (270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432, 0x8769, 0x8825)
_SUB_IFDS = (0x8769, 0x8825)  # Exif and GPS
# What damaged EXIF raises while it is parsed; such EXIF is dropped, the image still read.
_BAD_EXIF = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
             struct.error, zlib.error)  # fmt: skip


def carried_exif(im: Image.Image) -> tuple[bytes | None, int]:
    """(EXIF to carry, with orientation 1; the orientation to apply). Bad EXIF is dropped."""
    try:
        # For TIFF the EXIF lives among the file's own tags. Pillow's TIFF .load() applies the
        # orientation itself and drops the tag, so only the tifffile path still sees it here.
        if im.format == "TIFF":
            exif = descriptive(im.getexif())
            raw = exif.tobytes() if len(exif) else None
        else:
            raw = im.info.get("exif") or None
            if raw is None:
                return None, 1
            raw = raw if raw.startswith(EXIF_PREFIX) else EXIF_PREFIX + raw
            exif = Image.Exif()
            exif.load(raw)
        orientation = exif.get(ORIENTATION, 1)
        carried = reset_orientation(raw) if raw else None
    except _BAD_EXIF:
        return None, 1
    return carried, orientation if orientation in range(1, 9) else 1


def descriptive(exif: Image.Exif) -> Image.Exif:
    out = Image.Exif()
    for tag in DESCRIPTIVE_TAGS:
        if tag in exif:
            out[tag] = exif.get_ifd(tag) if tag in _SUB_IFDS else exif[tag]
    return out


def reset_orientation(raw: bytes) -> bytes:
    """Set the orientation tag in IFD0 to 1, in place, leaving every other byte as it was."""
    try:
        order = {b"II": "<", b"MM": ">"}[raw[6:8]]
        ifd = 6 + struct.unpack_from(order + "I", raw, 10)[0]
        for i in range(struct.unpack_from(order + "H", raw, ifd)[0]):
            entry = ifd + 2 + 12 * i
            tag, kind, count = struct.unpack_from(order + "HHI", raw, entry)
            if tag == ORIENTATION and kind == 3 and count == 1:
                out = bytearray(raw)
                struct.pack_into(order + "H", out, entry + 8, 1)
                return bytes(out)
        return raw
    except (KeyError, struct.error):
        exif = Image.Exif()
        exif.load(raw)
        exif[ORIENTATION] = 1
        return exif.tobytes()


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (as PIL.ImageOps.exif_transpose) to (H, W, ...) arrays."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x.swapaxes(0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def load_exif(raw: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(raw)
    return exif
