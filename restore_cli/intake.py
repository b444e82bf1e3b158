"""What restore lets in from folders of files it did not make, before a pixel is decoded.

Only regular files are opened (a named pipe or a device would hang the run); only the image
formats restore documents are identified, whatever a file's name or content says (Pillow knows
formats whose readers start external programs); a pixel budget counts everything the decoder and
the job will allocate, every plane and tile and the output, before it is paid; and file names are
made safe to print before they reach a terminal or a log.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, TiffImagePlugin, WebPImagePlugin  # noqa: F401  (registered)

from .errors import InputError
from .request import DEFAULT_MAX_PIXELS

# The Pillow readers restore uses, the only ones that ever see a file. Pillow's JPEG reader names
# a JPEG with extra pictures in it (as many cameras write) "MPO"; its first picture is read.
READ_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "PPM")
SUPPORTED = "PNG, JPEG, WebP, TIFF, BMP, GIF or PPM/PGM/PNM"
_NETPBM = (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")  # not Pillow's PFM floats ("Pf", "PF")
# Formats whose extra frames are animation: such files are refused rather than cut to one frame.
_ANIMATED = {"GIF", "PNG", "WEBP"}


@contextmanager
def open_image(
    path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[BinaryIO, ImageFile.ImageFile]]:
    """(the open file, its parsed header) of ``path``, if it is a regular file in one of
    READ_FORMATS, not animated, and within ``max_pixels`` as decoded (:func:`check_budget`);
    an InputError otherwise. Nothing is decoded yet."""
    with _open_regular(path) as fp:
        im = _open_header(fp, path)
        if 0 in im.size:
            raise InputError(f"{printable(path)}: image is {_wh(im.size)}, it has no pixels")
        check_budget(path, im.size, planes=_planes(im), max_pixels=max_pixels)
        _check_single_frame(path, im)
        yield fp, im


# A result may have this many times the input pixel limit: a 12 MP photo at x4 (195 M pixels) passes
# the default limit (179 M), a 13,400 x 13,400 image at x4 (a 34 GB float buffer) does not.
OUTPUT_FACTOR = 4


def check_budget(
    path: Path | str,
    size: tuple[int, int],
    *,
    planes: int = 1,
    out_scale: float = 1.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> None:
    """InputError unless the image ``path`` of ``size`` (W, H) fits in ``max_pixels`` (None: no
    limit) both as decoded, ``planes`` images of ``size`` (pages, planes or depth slices the
    decoder allocates), and as the job writes it, ``size`` scaled by ``out_scale`` (the model's
    scale, or the one asked for if larger), within :data:`OUTPUT_FACTOR` x ``max_pixels``. :func:`.imageio.read_image` checks the decoding
    before it decodes; call this with the job's scale once it is known, before restoring."""
    if max_pixels is None:
        return
    decoded = size[0] * size[1] * planes
    if decoded > max_pixels:
        of = f"{_wh(size)} x {planes} planes" if planes > 1 else _wh(size)
        raise InputError(
            f"{printable(path)}: image is {of} = {decoded:,} pixels, over the limit of "
            f"{max_pixels:,}",
            f"if you trust this file, raise the pixel limit to {decoded}",
            option="max_pixels",
        )
    out = (max(1, round(size[0] * out_scale)), max(1, round(size[1] * out_scale)))
    out_limit = OUTPUT_FACTOR * max_pixels
    if (written := out[0] * out[1]) > out_limit:
        raise InputError(
            f"{printable(path)}: the result would be {_wh(out)} = {written:,} pixels "
            f"({out_scale:g} x {_wh(size)}), over the limit of {out_limit:,} "
            f"({OUTPUT_FACTOR} x the pixel limit)",
            f"if you trust this file, raise the pixel limit to {-(-written // OUTPUT_FACTOR)}, "
            "or use a smaller scale",
            option="max_pixels",
        )


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file: a named pipe or a device would block
    or never end. The open itself never blocks, even on a file swapped for a pipe meanwhile."""
    _check_regular(path, os.stat(path).st_mode)
    fp = open(path, "rb", opener=_nonblocking)  # noqa: SIM115 - closed by the caller
    try:
        _check_regular(path, os.fstat(fp.fileno()).st_mode)
    except BaseException:
        fp.close()
        raise
    return fp


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _check_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = special_file(mode) or "a folder"
        raise InputError(f"{printable(path)}: {kind}, not an image file", "pass image files only")


def _open_header(fp: BinaryIO, path: Path) -> ImageFile.ImageFile:
    """Identify the format among READ_FORMATS and parse the header only; ``.load()`` decodes later.

    This is ``Image.open(fp, formats=READ_FORMATS)`` without its decompression-bomb check, which
    reads the global ``Image.MAX_IMAGE_PIXELS`` (``read_image`` has its own budget). No other
    reader Pillow has ever sees the file: some of them start external programs.
    """
    Image.preinit()  # registers BMP, GIF, JPEG, PPM and PNG; TIFF and WebP are imported above
    prefix = fp.read(16)
    if not prefix:
        raise InputError(f"{printable(path)}: empty file, not an image", "check the file")
    for fmt in READ_FORMATS:
        if fmt not in Image.OPEN or (fmt == "PPM" and prefix[:2] not in _NETPBM):
            continue
        factory, accept = Image.OPEN[fmt]
        accepted = accept is not None and accept(prefix)
        if accepted and not isinstance(accepted, str):  # a str is Pillow's "almost" message
            fp.seek(0)
            return factory(fp, "")
    raise InputError(
        f"{printable(path)}: not a supported image",
        f"restore reads {SUPPORTED} files; convert it to one of them",
    )


def _planes(im: ImageFile.ImageFile) -> int:
    """How many images of ``im.size`` decoding allocates: one, but for TIFFs with more than four
    samples a pixel, depth slices (ImageDepth) or tiles larger than the image."""
    if im.format != "TIFF":
        return 1
    tags, (w, h) = im.tag_v2, im.size  # type: ignore[attr-defined]

    def tag(key: int, default: int) -> int:
        value = tags.get(key, default)
        return int(max(value) if isinstance(value, tuple) else value)

    tile = tag(322, 0) * tag(323, 0)  # TileWidth x TileLength
    pixels = max(w * h, tile) * max(1, tag(32997, 1)) * -(-max(1, tag(277, 1)) // 4)
    return -(-pixels // (w * h))


def _check_single_frame(path: Path, im: ImageFile.ImageFile) -> None:
    if im.format not in _ANIMATED:
        return
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise InputError(
            f"{printable(path)}: animated image ({frames} frames); only still images are restored",
            "extract the frames first (e.g. ffmpeg -i in.gif frame_%04d.png) and restore the folder",
        )


# Bidirectional overrides and marks: they reorder what follows them on screen.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(path: Path | str) -> str:
    """``path`` as text that is safe to show on a terminal or in a log, one line.

    Control characters (C0, DEL, C1), line and paragraph separators and bidirectional overrides
    become ``\\xNN`` / ``\\uNNNN`` escapes, and bytes a file name holds that are not valid in the
    file system's encoding (Python's surrogate escapes) become ``\\xNN``. Everything else,
    letters of any script included, is left as it is.
    """
    text = os.fspath(path)
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    if text.isprintable():
        return text
    return "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    if ch not in _BIDI and unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp"):
        return ch
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def special_file(mode: int) -> str | None:
    """What a file of ``st_mode`` is when it is neither a regular file nor a folder (reading a
    named pipe or a device would block or never end), else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
