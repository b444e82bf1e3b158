"""Hostile images: only the documented formats are opened, every failure is that file's InputError,
and the pixel budget counts what decoding and the job will allocate. The corpus is made here."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms

from restore_cli import intake
from restore_cli.errors import InputError
from restore_cli.imageio import Picture, check_budget, read_image, read_mask

RNG = np.random.default_rng(2024)
NOISE = RNG.integers(0, 256, (12, 16, 3)).astype(np.uint8)


def pil_bytes(fmt: str, mode: str = "RGB", **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(NOISE).convert(mode).save(buf, fmt, **options)
    return buf.getvalue()


def psd_bytes(w: int = 4, h: int = 3) -> bytes:
    """A minimal uncompressed RGB Photoshop file (Pillow can read PSD but not write it)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(3 * w * h)


def pfm_bytes() -> bytes:
    return b"Pf\n4 3\n-1.0\n" + np.zeros((3, 4), "<f4").tobytes()


# --- only the documented formats ---------------------------------------------------------------

UNSUPPORTED: dict[str, Callable[[], bytes]] = {
    "ICO": lambda: pil_bytes("ICO"),
    "PCX": lambda: pil_bytes("PCX"),
    "TGA": lambda: pil_bytes("TGA"),
    "EPS": lambda: pil_bytes("EPS"),
    "PSD": psd_bytes,
    "SGI": lambda: pil_bytes("SGI"),
    "IM": lambda: pil_bytes("IM"),
    "DDS": lambda: pil_bytes("DDS"),
    "DIB": lambda: pil_bytes("DIB"),
    "QOI": lambda: pil_bytes("QOI"),
    "XBM": lambda: pil_bytes("XBM", "1"),
    "SPIDER": lambda: pil_bytes("SPIDER", "L"),
    "JPEG2000": lambda: pil_bytes("JPEG2000"),
    "AVIF": lambda: pil_bytes("AVIF"),
    "BLP": lambda: pil_bytes("BLP", "P"),
    "MSP": lambda: pil_bytes("MSP", "1"),
    "PPM": pfm_bytes,  # Pillow reads float maps with its PPM reader; restore does not
}


@pytest.mark.parametrize("fmt", sorted(UNSUPPORTED))
def test_formats_pillow_knows_but_restore_does_not_are_refused(tmp_path: Path, fmt: str) -> None:
    try:
        data = UNSUPPORTED[fmt]()
    except (OSError, ValueError, KeyError) as e:  # this Pillow cannot write it
        pytest.skip(f"Pillow cannot write {fmt}: {e}")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    assert Image.open(path).format == fmt  # Pillow would have opened it
    with pytest.raises(InputError) as err:
        read_image(path)
    assert err.value.message == f"{path}: not a supported image"
    assert "\n" not in str(err.value)


def test_no_other_pillow_reader_ever_sees_a_file(tmp_path: Path, monkeypatch) -> None:
    Image.init()
    called: list[str] = []

    def spy(fmt: str):
        def factory(fp, filename=None):
            called.append(fmt)
            raise SyntaxError("not this one")

        return factory, lambda prefix: True

    for fmt in list(Image.OPEN):
        if fmt not in intake.READ_FORMATS:
            monkeypatch.setitem(Image.OPEN, fmt, spy(fmt))
    for make in UNSUPPORTED.values():
        try:
            (tmp_path / "x.png").write_bytes(make())
        except (OSError, ValueError, KeyError):
            continue
        with pytest.raises(InputError, match="not a supported image"):
            read_image(tmp_path / "x.png")
    (tmp_path / "ok.png").write_bytes(pil_bytes("PNG"))
    assert read_image(tmp_path / "ok.png").size == (16, 12)
    assert called == []


@pytest.mark.parametrize(
    "fmt, options",
    [("TIFF", {}), ("JPEG", {}), ("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True}),
     ("PPM", {})],
)  # fmt: skip
def test_documented_formats_are_read_whatever_the_name(tmp_path: Path, fmt, options) -> None:
    (tmp_path / "named.png").write_bytes(pil_bytes(fmt, **options))
    assert read_image(tmp_path / "named.png").source_format == fmt


def test_netpbm_family_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.pbm").write_bytes(b"P1\n3 2\n1 0 1\n0 1 0\n")
    (tmp_path / "a.pgm").write_bytes(b"P5\n3 2\n65535\n" + np.arange(6, dtype=">u2").tobytes())
    assert read_image(tmp_path / "a.pbm").pixels[0, :, 0].tolist() == [0, 1, 0]
    pgm = read_image(tmp_path / "a.pgm")
    assert pgm.gray and pgm.pixels[0, 1, 0] == np.float32(1 / 65535)


# --- every failure is that file's InputError (fuzzing) ----------------------------------------


def png16_bytes(interlace: bool = False) -> bytes:
    buf = io.BytesIO()
    a = RNG.integers(0, 65536, (6, 5 * 4)).astype(np.uint16)
    png.Writer(5, 6, bitdepth=16, alpha=True, greyscale=False, interlace=interlace).write(buf, a)
    return buf.getvalue()


def tiff16_bytes(**options) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16), **options)
    return buf.getvalue()


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "camera"
    return exif.tobytes()


EXIF = exif_bytes()
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def seeds() -> dict[str, bytes]:
    return {
        "png": pil_bytes("PNG"),
        "png-palette": pil_bytes("PNG", "P"),
        "png16": png16_bytes(),
        "png16-interlaced": png16_bytes(interlace=True),
        "jpeg": pil_bytes("JPEG", quality=80),
        "jpeg-exif-icc": pil_bytes("JPEG", exif=EXIF, icc_profile=SRGB),
        "png-exif": pil_bytes("PNG", exif=EXIF),
        "jpeg-progressive": pil_bytes("JPEG", progressive=True),
        "tiff": pil_bytes("TIFF"),
        "tiff-deflate": pil_bytes("TIFF", compression="tiff_adobe_deflate"),
        "tiff16": tiff16_bytes(photometric="rgb"),
        "tiff16-tiled": tiff16_bytes(photometric="rgb", tile=(16, 16)),
        "tiff16-planar": tiff16_bytes(photometric="rgb", planarconfig="separate"),
        "webp": pil_bytes("WEBP", lossless=True),
        "webp-lossy": pil_bytes("WEBP", quality=50),
        "gif": pil_bytes("GIF"),
        "bmp": pil_bytes("BMP"),
        "ppm": pil_bytes("PPM"),
    }


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    if len(b) < 8:
        return bytes(b) + bytes(rng.integers(0, 256, 8).astype(np.uint8))
    kind = rng.integers(6)
    if kind == 0:  # flip a few bits
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        del b[int(rng.integers(0, len(b))) :]
    elif (
        kind == 2
    ):  # overwrite a 16- or 32-bit field with an extreme value (sizes, offsets, counts)
        i, n = int(rng.integers(0, len(b) - 4)), int(rng.choice([2, 4]))
        b[i : i + n] = rng.choice([b"\xff" * n, b"\x00" * n, b"\x7f" + b"\xff" * (n - 1)])
    elif kind == 3:  # random bytes spliced in
        i = int(rng.integers(0, len(b)))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8).tobytes()
    elif kind == 4:  # a block repeated
        i = int(rng.integers(0, len(b)))
        b[i:i] = b[i : i + int(rng.integers(1, 200))] * int(rng.integers(2, 6))
    else:  # a run of bytes zeroed in the header region
        i = int(rng.integers(0, min(len(b), 64)))
        b[i : i + int(rng.integers(1, 16))] = bytes(16)[: len(b[i : i + 16])]
    return bytes(b)


FUZZ_CASES = int(os.environ.get("RESTORE_FUZZ_CASES", "300"))


def test_fuzzed_images_give_a_picture_or_an_input_error(tmp_path: Path) -> None:
    """Seeded mutations of valid files; only a sane Picture or an InputError may come out."""
    rng = np.random.default_rng(12)
    corpus = list(seeds().items())
    path = tmp_path / "fuzz.png"
    outcomes = {"ok": 0, "error": 0}
    for case in range(FUZZ_CASES):
        name, data = corpus[case % len(corpus)]
        path.write_bytes(mutate(data, rng))
        try:
            pic = read_image(path, max_pixels=1 << 20)
            mask = read_mask(path, pic.size, max_pixels=1 << 20)
        except InputError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}: "), (name, case, e)
            outcomes["error"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the report names the case to replay
            raise AssertionError(f"case {case} ({name}): {type(e).__name__}: {e}") from e
        assert isinstance(pic, Picture) and pic.pixels.shape == (*pic.size[::-1], 3), (name, case)
        assert np.isfinite(pic.pixels).all() and 0 <= pic.pixels.min() <= pic.pixels.max() <= 1
        assert mask.shape == pic.size[::-1]
        outcomes["ok"] += 1
    assert outcomes["ok"] and outcomes["error"]  # the mutations reach both outcomes


@pytest.mark.parametrize("name", sorted(seeds()))
def test_every_truncation_of_a_seed_is_handled(tmp_path: Path, name: str) -> None:
    data = seeds()[name]
    for cut in sorted({*range(0, 64, 3), *range(64, len(data), max(1, len(data) // 24))}):
        (tmp_path / "cut").write_bytes(data[:cut])
        try:
            read_image(tmp_path / "cut")
        except InputError:
            pass


# --- the pixel budget --------------------------------------------------------------------------


def test_depth_slices_of_a_volumetric_tiff_are_counted(tmp_path: Path) -> None:
    volume = RNG.integers(0, 65536, (8, 16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", volume, volumetric=True, tile=(8, 16, 16))
    assert Image.open(tmp_path / "v.tif").size == (16, 16)  # Pillow sees one 16x16 image
    with pytest.raises(InputError, match=r"16x16 x 8 planes = 2,048 pixels"):
        read_image(tmp_path / "v.tif", max_pixels=1000)
    pic = read_image(tmp_path / "v.tif", max_pixels=None)
    assert pic.size == (16, 16)


def test_tiles_larger_than_the_image_are_counted(tmp_path: Path) -> None:
    small = RNG.integers(0, 65536, (16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", small, tile=(1024, 1024), compression="zlib")
    assert (tmp_path / "t.tif").stat().st_size < 10_000  # a small file that decodes a big tile
    with pytest.raises(InputError, match="over the limit of 100,000") as err:
        read_image(tmp_path / "t.tif", max_pixels=100_000)
    assert err.value.option == "max_pixels"
    assert np.array_equal(read_image(tmp_path / "t.tif").pixels[..., 0], small / np.float32(65535))


def test_deep_tiff_shape_is_checked_as_tifffile_sees_it(tmp_path: Path, monkeypatch) -> None:
    """Pillow's tags are not the last word: what tifffile would allocate is checked on its own."""
    volume = RNG.integers(0, 65536, (8, 16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", volume, volumetric=True, tile=(8, 16, 16))
    monkeypatch.setattr(intake, "_planes", lambda im: 1)  # the header count, blinded
    with pytest.raises(InputError, match=r"16x16 x 2 planes"):  # 8 slices of 1 sample = 2 RGBA
        read_image(tmp_path / "v.tif", max_pixels=300)


def test_16bit_png_data_larger_than_its_header_is_refused(tmp_path: Path) -> None:
    """pypng inflates each IDAT chunk whole: 20 kB that inflate to 20 MB must not get that far."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 0, 0, 0, 0)
    bomb = zlib.compress(bytes(20_000_000), 9)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bomb) + chunk(b"IEND", b"")
    (tmp_path / "b.png").write_bytes(data)
    with pytest.raises(InputError, match="larger than its header declares"):
        read_image(tmp_path / "b.png")


def test_output_budget_counts_the_scale() -> None:
    check_budget("a.png", (12_000, 12_000), max_pixels=intake.DEFAULT_MAX_PIXELS)  # the input fits
    with pytest.raises(InputError) as err:  # x4: a 48000 x 48000 float result, 28 GB
        check_budget("a.png", (12_000, 12_000), out_scale=4)
    assert "48000x48000 = 2,304,000,000 pixels" in err.value.message
    assert err.value.option == "max_pixels"
    check_budget("a.png", (12_000, 12_000), out_scale=4, max_pixels=None)
    check_budget("a.png", (4032, 3024), out_scale=4)  # a 12 MP phone photo at x4 passes


# --- special files and names -------------------------------------------------------------------


def returns_within(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread: what it raised, or fail if it has not returned in time."""
    box: list[BaseException | None] = [None]

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            box[0] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    err = returns_within(5, lambda: read_image(tmp_path / "pipe.png"))
    assert isinstance(err, InputError) and "named pipe" in err.message
    assert isinstance(returns_within(5, lambda: read_image(Path(os.devnull))), InputError)
    assert isinstance(returns_within(5, lambda: read_image(tmp_path)), InputError)


def test_control_characters_in_names_are_escaped_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "evil\x1b]0;owned\x07\n.png"
    path.write_bytes(b"not an image at all")
    start = time.perf_counter()
    with pytest.raises(InputError) as err:
        read_image(path)
    text = str(err.value)
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)
    assert "evil\\x1b]0;owned\\x07\\x0a.png: not a supported image" in text
    assert time.perf_counter() - start < 5
