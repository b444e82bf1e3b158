"""Read and write images faithfully: orientation, alpha, grayscale, 16-bit, ICC and EXIF.

Pixels travel as float32 arrays in [0, 1]: ``(H, W, 3)`` RGB colour and an optional ``(H, W)``
alpha. Only regular files in the formats restore documents are opened (PNG, JPEG, WebP, TIFF, BMP,
GIF and PPM/PGM/PNM), whatever a file's name or content says, and every failure to read one is
that file's InputError. Pillow decodes 8-bit files; 16-bit PNGs go through pypng and 16-bit TIFFs
through tifffile, because Pillow truncates 16-bit colour to 8 bits. A PIL image handed to the
Python API takes the same path from the point where a file is open (:func:`picture_from_pil`,
:func:`picture_to_pil`). Writes are atomic: a hidden temporary file in the target folder, renamed
into place once complete.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
from PIL import Image, ImageCms, ImageFile

from . import deepimage
from . import exif as exiftags
from .errors import InputError, RestoreError, UsageError
from .files import FORMAT_BY_SUFFIX
from .intake import SUPPORTED, check_budget, open_image, printable
from .request import DEFAULT_MAX_PIXELS

DEFAULT_QUALITY = 95  # JPEG and WebP

# What each output format can hold: grayscale, alpha, 16 bits, ICC and EXIF.
_CAN_GRAY = {"PNG", "JPEG", "TIFF", "BMP"}
_CAN_ALPHA = {"PNG", "WEBP", "TIFF"}  # 32-bit BMP alpha is ignored by most readers, Pillow's too
_CAN_DEEP = {"PNG", "TIFF"}
_CAN_META = {"PNG", "JPEG", "WEBP", "TIFF"}
_Decoded = tuple[np.ndarray, "np.ndarray | None", bool]  # colour, alpha, gray


@dataclass
class Picture:
    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1], RGB; gray sources replicated to 3 channels
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], or None
    gray: bool  # the source was grayscale (L, LA, I;16, ...) -> written grayscale
    bit_depth: int  # 8 or 16 (16-bit PNG/TIFF sources)
    icc_profile: bytes | None
    exif: bytes | None  # starts with b"Exif\0\0"; orientation tag reset to 1
    source_format: str  # "PNG", "JPEG", "TIFF", ...; "unknown": a PIL image made in memory

    @property
    def size(self) -> tuple[int, int]:
        """(W, H), as Pillow counts."""
        return self.pixels.shape[1], self.pixels.shape[0]


# --- reading ---------------------------------------------------------------------------------


def read_image(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode ``path`` with its EXIF orientation applied; InputError if it cannot be read.

    Before anything is decoded, :func:`check_budget` refuses a file whose decoding would allocate
    more than ``max_pixels`` pixels (None: no limit), every plane, depth slice and tile counted.
    """
    try:
        with open_image(path, max_pixels=max_pixels) as (fp, im):
            return _picture(im, _read_deep(im, fp, path, max_pixels))
    except RestoreError:
        raise
    except FileNotFoundError as e:
        raise InputError(f"{printable(path)}: file not found", "check the path") from e
    except Exception as e:  # whatever a decoder raises on a damaged file: that file's error
        raise _unreadable(printable(path), e) from e


def picture_from_pil(image: Image.Image, *, name: str = "image") -> Picture:
    """The :class:`Picture` that :func:`read_image` makes of a file once it is open, made of a PIL
    image: the same decoding of every mode (1, L, LA, P, PA, RGB, RGBA, CMYK, I, I;16, F, ...),
    EXIF orientation and ICC profile included. I and I;16 images are 16-bit gray (65535 = white),
    F images are taken as [0, 1]. Pillow has no 16-bit colour mode, so a 16-bit colour file opened
    by Pillow arrives here with 8 bits (``read_image`` of the file keeps 16). InputError, naming
    ``name``, if Pillow cannot convert the image."""
    try:
        return _picture(image, None)
    except RestoreError:
        raise
    except Exception as e:
        raise _unreadable(printable(name), e) from e


def read_mask(
    path: Path,
    size: tuple[int, int],
    *,
    image: Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """:func:`mask_from_picture` of the image file ``path``; ``size`` is the image's (W, H)."""
    picture = read_image(path, max_pixels=max_pixels)
    return mask_from_picture(picture, size, name=printable(path), image=image)


def mask_from_picture(
    picture: Picture, size: tuple[int, int], *, name: str = "mask", image: Path | None = None
) -> np.ndarray:
    """An inpainting mask as (H, W) float32 in [0, 1], white = 1 = hole; ``size`` is the image's
    (W, H), and a mask of another size is an InputError naming ``name`` (and ``image``).

    Colour masks are reduced to their luminance (Rec. 601). A mask with alpha is composited over
    black, so transparent pixels keep the photo: white strokes painted on a transparent layer mark
    the holes (masks that mark holes by transparency alone must be flattened first). Soft values
    are kept; thresholding is the pipeline's call.
    """
    if picture.size != size:
        of = f" {printable(image)}" if image is not None else ""
        raise InputError(
            f"{name}: mask is {_wh(picture.size)} but the image{of} is {_wh(size)}",
            f"make the mask exactly {_wh(size)} pixels, like the image it belongs to",
        )
    mask = picture.pixels[..., 0] if picture.gray else _luma(picture.pixels)
    if picture.alpha is not None:
        mask = mask * picture.alpha
    return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)


def _unreadable(name: str, e: BaseException) -> InputError:
    if isinstance(e, MemoryError):
        reason = "out of memory"
    elif isinstance(e, OSError) and e.strerror:
        reason = e.strerror
    elif isinstance(e, (OSError, SyntaxError, ValueError, png.Error)) and str(e).strip():
        reason = printable(str(e).strip().splitlines()[0])[:120]  # the decoder's own words
    else:  # decoders' internals: struct.error, IndexError, EOFError, zlib.error, ...
        reason = "damaged, truncated or not an image"
    return InputError(
        f"{name}: cannot read image ({reason})",
        f"check that the file is a complete {SUPPORTED} image",
    )


def _read_deep(
    im: ImageFile.ImageFile, fp: BinaryIO, path: Path, max_pixels: int | None
) -> _Decoded | None:
    """A PNG or TIFF deeper than 8 bits, read from the same open file by pypng or tifffile (their
    allocation checked too), or None to let Pillow decode."""
    if im.format == "PNG" and deepimage.png_bit_depth(fp) == 16:
        return deepimage.read_png16(fp)
    if im.format == "TIFF" and deepimage.tiff_bits(im) > 8:
        per_plane = 4 * im.size[0] * im.size[1]  # samples: an RGBA image of im.size

        def check(samples: int) -> None:
            planes = -(-samples // per_plane)
            check_budget(path, im.size, planes=planes, max_pixels=max_pixels)

        return deepimage.read_tiff_deep(fp, check)
    return None


def _picture(im: Image.Image, deep: _Decoded | None) -> Picture:
    """The picture of an open image; ``deep`` what pypng or tifffile read instead of Pillow."""
    icc = im.info.get("icc_profile") or None
    if deep is None:
        pixels, alpha, gray, depth, icc = _decode(im, icc)
    else:
        (pixels, alpha, gray), depth = deep, 16
    exif, orientation = exiftags.carried_exif(im)
    pixels = exiftags.orient(pixels, orientation)
    alpha = None if alpha is None else exiftags.orient(alpha, orientation)
    return Picture(pixels, alpha, gray, depth, icc, exif, im.format or "unknown")


def _decode(im: Image.Image, icc: bytes | None):
    """(pixels, alpha, gray, bit_depth, icc) of what Pillow decodes, before orientation."""
    im.load()
    if im.mode == "CMYK":
        return (*_split(_cmyk_to_rgb(im, icc)), False, 8, None)
    if im.mode.startswith("I") or im.mode == "F":
        scale = 1.0 if im.mode == "F" else 65535.0
        gray = np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2), None, True, 16, icc
    has_alpha = im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    gray = im.mode in ("1", "L", "LA", "La")
    mode = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    a = np.asarray(im.convert(mode)).astype(np.float32) / np.float32(255)
    if gray:
        a = a[..., None] if a.ndim == 2 else a
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    return (*_split(a), gray, 8, icc)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3 or 4) -> colour and optional alpha."""
    if a.ndim == 3 and a.shape[2] == 4:
        return np.ascontiguousarray(a[..., :3]), np.ascontiguousarray(a[..., 3])
    return a, None


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> np.ndarray:
    rgb = None
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(
                im, src, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError):
            rgb = None
    rgb = rgb if rgb is not None else im.convert("RGB")
    return np.asarray(rgb).astype(np.float32) / np.float32(255)


# --- writing ---------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path``, then rename it to ``path``.

    Creates missing parent folders. On any exception (KeyboardInterrupt included) the temporary
    file is removed and ``path`` is left as it was: nothing new, and never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve_tmp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reserve_tmp(path: Path) -> Path:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:  # O_EXCL claims the name; 0o666 lets the umask set permissions as for any new file
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def format_for(path: Path) -> str:
    """The format written for ``path``'s extension ("PNG", "JPEG", ...); UsageError if unknown."""
    fmt = FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{printable(path)}: cannot write images with extension "
            f"{printable(Path(path).suffix) or '(none)'!r}",
            "use one of " + ", ".join(FORMAT_BY_SUFFIX),
        )
    return fmt


def write_image(path: Path, picture: Picture, *, quality: int | None = None) -> None:
    """Write ``picture`` atomically, the format chosen by the extension.

    Grayscale, alpha, 16 bits, ICC and EXIF are kept where the format can hold them. JPEG has no
    alpha: it is composited over white. WebP has no grayscale: it is written RGB. 16-bit TIFFs
    carry the ICC profile but not the EXIF. ``quality`` (1-100, default 95) is for JPEG and WebP;
    JPEG is written without chroma subsampling.
    """
    fmt = format_for(path)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"quality {quality} is out of range", "pass a quality from 1 to 100")
    try:
        atomic_write(path, lambda tmp: _write(tmp, picture, fmt, quality or DEFAULT_QUALITY))
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip()[:120]
        raise InputError(
            f"{printable(path)}: cannot write image ({printable(reason or type(e).__name__)})",
            "check that the output folder is writable and has free space",
        ) from e


def quantize(x: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """float in [0, 1] -> uint8 / uint16 as ``round(255 * x)`` in float32, ties to even."""
    top, dtype = (255, np.uint8) if bit_depth == 8 else (65535, np.uint16)
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0)
    return np.round(np.clip(x, 0, 1) * np.float32(top)).astype(dtype)


def _write(tmp: Path, picture: Picture, fmt: str, quality: int) -> None:
    gray = picture.gray and fmt in _CAN_GRAY
    keep_alpha = picture.alpha is not None and fmt in _CAN_ALPHA
    if fmt == "BMP" and gray and keep_alpha:  # BMP has no gray + alpha
        gray = False
    a = _channels(picture, gray, keep_alpha)
    meta = fmt in _CAN_META
    icc = picture.icc_profile if meta and _icc_fits(picture.icc_profile, gray) else None
    exif = picture.exif if meta else None
    if picture.bit_depth == 16 and fmt in _CAN_DEEP:
        deep = quantize(a, 16)
        if fmt == "PNG":
            deepimage.write_png16(tmp, deep, icc, exif)
        else:
            deepimage.write_tiff16(tmp, deep, icc)
        return
    im = _to_pil(a, 8)
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:  # TIFF merges the EXIF into its own tags, so it only gets the descriptive ones
        options["exif"] = (
            exif if fmt != "TIFF" else exiftags.descriptive(exiftags.load_exif(exif)).tobytes()
        )
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0
    im.save(tmp, format=fmt, **options)


def picture_to_pil(picture: Picture) -> Image.Image:
    """What :func:`write_image` encodes in a PNG, as a PIL image: mode L, LA, RGB or RGBA, 8 bits,
    except that a 16-bit grayscale picture without alpha comes back as "I;16" with every bit.
    Pillow has no 16-bit colour or gray-with-alpha mode: 16-bit colour comes back as 8-bit RGB(A),
    16-bit gray with alpha as LA. The ICC profile (where it fits the pixels) and the EXIF are in
    ``.info``, for ``save(..., icc_profile=..., exif=...)``."""
    keep_alpha = picture.alpha is not None
    a = _channels(picture, picture.gray, keep_alpha)
    im = _to_pil(a, 16 if picture.bit_depth == 16 and a.shape[2] == 1 else 8)
    if _icc_fits(picture.icc_profile, picture.gray):
        im.info["icc_profile"] = picture.icc_profile
    if picture.exif:
        im.info["exif"] = picture.exif
    return im


def _to_pil(a: np.ndarray, bit_depth: int) -> Image.Image:
    """(H, W, C) float32 -> L (or I;16), LA, RGB or RGBA."""
    return Image.fromarray(quantize(a[..., 0] if a.shape[2] == 1 else a, bit_depth))


def _channels(picture: Picture, gray: bool, keep_alpha: bool) -> np.ndarray:
    """(H, W, C) float32 to encode: C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA)."""
    color = np.asarray(picture.pixels, dtype=np.float32)
    if gray:
        same = np.array_equal(color[..., 0], color[..., 1]) and np.array_equal(
            color[..., 0], color[..., 2]
        )
        color = color[..., :1] if same else _luma(color)[..., None]
    alpha = picture.alpha
    if alpha is None:
        return color
    alpha = np.asarray(alpha, dtype=np.float32)[..., None]
    if keep_alpha:
        return np.concatenate([color, alpha], axis=2)
    return color * alpha + (1 - alpha)  # over white


def _icc_fits(icc: bytes | None, gray: bool) -> bool:
    """A profile is only embedded where its colour space (header bytes 16-20) fits the pixels."""
    return bool(icc) and icc[16:20] == (b"GRAY" if gray else b"RGB ")  # type: ignore[index]


# --- pixels ----------------------------------------------------------------------------------


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of float32 (H, W, C) or (H, W) to ``size`` = (W, H), in float, clipped to [0, 1].

    Each channel goes through Pillow's 32-bit float mode, so nothing is quantised to 8 bits;
    Pillow widens the kernel when shrinking, which antialiases.
    """
    a = np.asarray(pixels, dtype=np.float32)
    planes = a[..., None] if a.ndim == 2 else a
    out = np.empty((size[1], size[0], planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        channel = Image.fromarray(np.ascontiguousarray(planes[..., c]))
        out[..., c] = np.asarray(channel.resize(size, Image.Resampling.LANCZOS))
    out = np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if a.ndim == 2 else out


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) Rec. 601 luminance, as Pillow's convert("L") but in float."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.asarray(rgb, dtype=np.float32) @ weights


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def to_scale(
    pixels: np.ndarray, source: tuple[int, int], scale: float | None, native: float
) -> np.ndarray:
    """``pixels`` (a model's output at ``native`` x a ``source`` (W, H) input) resized to ``scale``
    x the input, as ``--scale`` asks; unchanged when ``scale`` is None or ``native``."""
    if scale is None or math.isclose(scale, native):
        return pixels
    width, height = source
    return resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))))


def with_pixels(picture: Picture, pixels: np.ndarray) -> Picture:
    """``picture`` with new ``pixels`` (e.g. restored), its alpha resized to them; everything
    else (grayscale, bit depth, ICC, EXIF) kept."""
    h, w = pixels.shape[:2]
    alpha = picture.alpha
    if alpha is not None and alpha.shape != (h, w):
        alpha = resize(alpha, (w, h))
    return dataclasses.replace(picture, pixels=pixels, alpha=alpha)
