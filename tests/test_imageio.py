"""Reading and writing images: round trips, metadata, 16 bits, damaged files, atomic writes."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from restore_cli.errors import InputError, UsageError
from restore_cli.imageio import (
    Picture,
    atomic_write,
    quantize,
    read_image,
    read_mask,
    resize,
    write_image,
)

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def ramp(h: int = 12, w: int = 16, c: int = 3, top: int = 255) -> np.ndarray:
    """Distinct, asymmetric integer values in [0, top]."""
    rng = np.random.default_rng(h * 1000 + w * 10 + c)
    dtype = np.uint8 if top == 255 else np.uint16
    return rng.integers(0, top + 1, (h, w, c)).astype(dtype)


def picture(pixels: np.ndarray, **kw) -> Picture:
    base = dict(alpha=None, gray=False, bit_depth=8, icc_profile=None, exif=None)
    base.update(kw)
    return Picture(pixels=pixels, source_format="PNG", **base)


def as8(x: np.ndarray) -> np.ndarray:
    return quantize(x, 8)


# --- round trips -------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path: Path) -> None:
    a = ramp()
    Image.fromarray(a).save(tmp_path / "in.png")
    pic = read_image(tmp_path / "in.png")
    assert pic.pixels.dtype == np.float32 and pic.pixels.shape == (12, 16, 3)
    assert (pic.gray, pic.bit_depth, pic.alpha, pic.source_format) == (False, 8, None, "PNG")
    np.testing.assert_array_equal(as8(pic.pixels), a)
    write_image(tmp_path / "out.png", pic)
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), a)


def test_quantize_matches_python_round_of_255x() -> None:
    rng = np.random.default_rng(0)
    ties = (np.arange(256, dtype=np.float32) + np.float32(0.5)) / np.float32(255)
    x = np.concatenate([rng.random(2000, dtype=np.float32), ties, [-0.2, 1.3, 0.0, 1.0]])
    x = x.astype(np.float32)
    expected = [round(255 * v) for v in np.clip(x, 0, 1)]  # numpy float32 scalars
    assert quantize(x).tolist() == expected
    assert quantize(np.array([0.5 / 65535, 1.0], np.float32), 16).tolist() == [0, 65535]


@pytest.mark.parametrize("ext", ["png", "tif", "webp"])
def test_rgba_alpha_kept(tmp_path: Path, ext: str) -> None:
    a = ramp(c=4)
    Image.fromarray(a, "RGBA").save(tmp_path / "in.png")
    pic = read_image(tmp_path / "in.png")
    assert pic.alpha is not None and pic.alpha.shape == (12, 16)
    np.testing.assert_array_equal(as8(pic.alpha), a[..., 3])
    write_image(tmp_path / f"out.{ext}", pic)
    back = read_image(tmp_path / f"out.{ext}")
    assert back.alpha is not None
    if ext == "webp":  # lossy colour, but alpha is stored at quality 100
        assert np.abs(as8(back.alpha).astype(int) - a[..., 3]).max() <= 2
    else:
        np.testing.assert_array_equal(as8(back.alpha), a[..., 3])
        np.testing.assert_array_equal(as8(back.pixels), a[..., :3])


def test_palette_with_transparency_gives_alpha(tmp_path: Path) -> None:
    im = Image.new("P", (4, 3), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png", transparency=0)
    pic = read_image(tmp_path / "p.png")
    assert pic.alpha is not None and not pic.gray
    assert pic.alpha[1, 1] == 1 and pic.alpha[0, 0] == 0
    assert pic.pixels[1, 1].tolist() == [0, 0, 1]


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_gray_read_and_written_gray(tmp_path: Path, mode: str) -> None:
    a = ramp(c=len(mode))
    Image.fromarray(a[..., 0] if mode == "L" else a, mode).save(tmp_path / "g.png")
    pic = read_image(tmp_path / "g.png")
    assert pic.gray and pic.pixels.shape == (12, 16, 3)
    np.testing.assert_array_equal(pic.pixels[..., 0], pic.pixels[..., 2])
    np.testing.assert_array_equal(as8(pic.pixels[..., 1]), a[..., 0])
    assert (pic.alpha is not None) == (mode == "LA")
    write_image(tmp_path / "out.png", pic)
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.asarray(im).reshape(a.shape), a)
    write_image(tmp_path / "out.jpg", pic)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "L"
    write_image(tmp_path / "out.webp", pic)  # WebP has no gray: written as RGB
    assert read_image(tmp_path / "out.webp").pixels.shape == (12, 16, 3)


def test_gray_with_colour_drift_written_as_luminance(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 3), np.float32)
    pixels[..., 0] = 1.0  # pure red from a model that was fed gray
    write_image(tmp_path / "g.png", picture(pixels, gray=True))
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and im.getpixel((0, 0)) == round(255 * 0.299)


@pytest.mark.parametrize("ext", ["jpg", "bmp"])
def test_formats_without_alpha_flatten_it_over_white(tmp_path: Path, ext: str) -> None:
    pixels = np.zeros((8, 8, 3), np.float32)
    alpha = np.zeros((8, 8), np.float32)
    alpha[:, :4] = 1.0
    write_image(tmp_path / f"out.{ext}", picture(pixels, alpha=alpha), quality=100)
    back = as8(read_image(tmp_path / f"out.{ext}").pixels)
    assert back[:, :2].max() < 10 and back[:, 6:].min() > 245


def test_cmyk_converted_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    pic = read_image(tmp_path / "c.jpg")
    assert pic.pixels.shape == (4, 4, 3) and pic.icc_profile is None
    r, g, b = as8(pic.pixels)[2, 2].tolist()
    assert r > 240 and g < 15 and b < 15


# --- 16 bits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,planes", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_16bit_png_round_trip_keeps_low_bits(tmp_path: Path, mode: str, planes: int) -> None:
    a = ramp(9, 7, planes, top=65535)
    a[0, 0] = 257 * 100 + 1  # a value no 8-bit value maps to
    png.from_array(a.reshape(9, -1), f"{mode};16").save(tmp_path / "in.png")
    pic = read_image(tmp_path / "in.png")
    assert pic.bit_depth == 16 and pic.gray == (mode[0] == "L")
    assert (pic.alpha is not None) == mode.endswith("A")
    color = pic.pixels[..., :1] if pic.gray else pic.pixels
    got = quantize(color, 16)
    if pic.alpha is not None:
        got = np.concatenate([got, quantize(pic.alpha, 16)[..., None]], axis=2)
    np.testing.assert_array_equal(got, a)

    write_image(tmp_path / "out.png", pic)
    with open(tmp_path / "out.png", "rb") as f:
        width, height, rows, info = png.Reader(file=f).asDirect()
        back = np.vstack([np.uint16(r) for r in rows])
    assert (info["bitdepth"], info["planes"], (width, height)) == (16, planes, (7, 9))
    np.testing.assert_array_equal(back, a.reshape(9, -1))


def test_16bit_png_to_jpeg_is_8bit(tmp_path: Path) -> None:
    a = ramp(8, 8, 3, top=65535)
    png.from_array(a.reshape(8, -1), "RGB;16").save(tmp_path / "in.png")
    write_image(tmp_path / "out.jpg", read_image(tmp_path / "in.png"))
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB" and im.size == (8, 8)


@pytest.mark.parametrize("photometric,planes", [("rgb", 3), ("rgb", 4), ("minisblack", 1)])
def test_16bit_tiff_read_and_round_trip(tmp_path: Path, photometric: str, planes: int) -> None:
    a = ramp(10, 6, planes, top=65535)
    extrasamples = ("unassalpha",) if planes == 4 else None
    data = a[..., 0] if planes == 1 else a
    tifffile.imwrite(tmp_path / "in.tif", data, photometric=photometric, extrasamples=extrasamples)
    pic = read_image(tmp_path / "in.tif")
    assert pic.bit_depth == 16 and pic.source_format == "TIFF"
    assert pic.gray == (planes == 1) and (pic.alpha is not None) == (planes == 4)
    np.testing.assert_array_equal(
        quantize(pic.pixels[..., :3], 16)[..., : min(planes, 3)], a[..., :3]
    )
    if pic.alpha is not None:
        np.testing.assert_array_equal(quantize(pic.alpha, 16), a[..., 3])
    write_image(tmp_path / "out.tiff", pic)
    back = tifffile.imread(tmp_path / "out.tiff")
    np.testing.assert_array_equal(back, data)


# --- orientation and metadata ------------------------------------------------------------------


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    exif[0x8769] = {0x9003: "2024:01:02 03:04:05"}
    return exif.tobytes()


def test_jpeg_orientation_6_applied_and_reset(tmp_path: Path) -> None:
    src = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high; red top row, blue left column
    src[:4] = (255, 0, 0)
    src[4:, :4] = (0, 0, 255)
    Image.fromarray(src).save(tmp_path / "o.jpg", exif=exif_bytes(6), quality=100)
    pic = read_image(tmp_path / "o.jpg")
    assert pic.size == (20, 40)  # turned 90 degrees clockwise: 20 wide, 40 high
    px = as8(pic.pixels)
    assert px[20, 18].tolist()[0] > 200 and px[20, 18].tolist()[2] < 60  # top row -> right column
    assert px[1, 10].tolist()[2] > 200  # left column -> top row
    with Image.open(tmp_path / "o.jpg") as im:  # same layout as Pillow's exif_transpose
        ref = np.asarray(ImageOps.exif_transpose(im))
    assert np.abs(px.astype(int) - ref).max() <= 1

    write_image(tmp_path / "out.jpg", pic)
    with Image.open(tmp_path / "out.jpg") as im:
        exif = im.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"
        assert exif.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"
        assert im.size == (20, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_exif_transpose(tmp_path: Path, orientation: int) -> None:
    a = ramp(5, 7)
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif_bytes(orientation))
    pic = read_image(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as im:
        ref = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(as8(pic.pixels), ref)
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1


def test_16bit_png_orientation_and_metadata_carried(tmp_path: Path) -> None:
    a = ramp(4, 6, 3, top=65535)
    png.from_array(a.reshape(4, -1), "RGB;16").save(tmp_path / "plain.png")
    # Re-save the chunks with eXIf and iCCP inserted after IHDR.
    with open(tmp_path / "plain.png", "rb") as f:
        chunks = list(png.Reader(file=f).chunks())
    extra = [(b"iCCP", b"sRGB\x00\x00" + zlib.compress(SRGB))]
    extra.append((b"eXIf", exif_bytes(8)[6:]))
    with open(tmp_path / "in.png", "wb") as f:
        png.write_chunks(f, chunks[:1] + extra + chunks[1:])
    pic = read_image(tmp_path / "in.png")
    np.testing.assert_array_equal(quantize(pic.pixels, 16), np.rot90(a, 1))
    assert pic.icc_profile == SRGB
    write_image(tmp_path / "out.png", pic)
    with Image.open(tmp_path / "out.png") as im:
        assert im.info["icc_profile"] == SRGB and im.getexif()[0x0112] == 1


@pytest.mark.parametrize("deep", [False, True])
def test_tiff_orientation_applied_once(tmp_path: Path, deep: bool) -> None:
    a = ramp(4, 6, 3, top=65535 if deep else 255)
    if deep:
        tifffile.imwrite(tmp_path / "o.tif", a, photometric="rgb", extratags=[(274, 3, 1, 6)])
    else:
        Image.fromarray(a).save(tmp_path / "o.tif", exif=exif_bytes(6))
    pic = read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(quantize(pic.pixels, 16 if deep else 8), np.rot90(a, -1))
    if pic.exif is not None:
        exif = Image.Exif()
        exif.load(pic.exif)
        assert exif.get(0x0112, 1) == 1


def test_16bit_gray_tiff_without_codec_falls_back_to_pillow(tmp_path: Path) -> None:
    a = ramp(6, 10, 1, top=65535)[..., 0]
    Image.fromarray(a).save(tmp_path / "lzw.tif", compression="tiff_lzw")  # LZW: no imagecodecs
    pic = read_image(tmp_path / "lzw.tif")
    assert pic.gray and pic.bit_depth == 16
    np.testing.assert_array_equal(quantize(pic.pixels[..., 0], 16), a)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tif"])
def test_icc_and_exif_carried(tmp_path: Path, ext: str) -> None:
    Image.fromarray(ramp()).save(tmp_path / "in.jpg", icc_profile=SRGB, exif=exif_bytes(1))
    pic = read_image(tmp_path / "in.jpg")
    assert pic.icc_profile == SRGB and pic.exif is not None
    write_image(tmp_path / f"out.{ext}", pic)
    with Image.open(tmp_path / f"out.{ext}") as im:
        assert im.info.get("icc_profile") == SRGB
        exif = im.getexif()
        assert exif[0x010F] == "TestCam" and exif.get(0x0112, 1) == 1
        assert exif.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"
    assert read_image(tmp_path / f"out.{ext}").icc_profile == SRGB


def test_no_metadata_stays_none(tmp_path: Path) -> None:
    Image.fromarray(ramp()).save(tmp_path / "in.png")
    pic = read_image(tmp_path / "in.png")
    assert pic.icc_profile is None and pic.exif is None
    write_image(tmp_path / "out.bmp", pic)
    np.testing.assert_array_equal(as8(read_image(tmp_path / "out.bmp").pixels), ramp())


# --- damaged files and limits --------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file_is_input_error(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / f"full.{ext}")
    data = (tmp_path / f"full.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_image(tmp_path / f"cut.{ext}")
    assert str(tmp_path / f"cut.{ext}") in err.value.message
    assert "cannot read image" in err.value.message and err.value.hint


def test_truncated_16bit_png_is_input_error(tmp_path: Path) -> None:
    png.from_array(ramp(32, 32, 3, top=65535).reshape(32, -1), "RGB;16").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read image"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("content", [b"hello, not an image\n", b"", b"x"])
def test_non_image_is_input_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "notes.png").write_bytes(content)
    with pytest.raises(InputError, match=r"notes\.png: (not a supported image|empty file)") as info:
        read_image(tmp_path / "notes.png")
    assert "buffer" not in str(info.value)  # no decoder internals in the message


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds no pixels: never decoded if the guard works."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bomb_guard(tmp_path: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(png_header_only(30_000, 30_000))  # 900 M pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        with pytest.raises(InputError) as err:
            read_image(tmp_path / "bomb.png")
    assert "900,000,000 pixels" in err.value.message and err.value.option == "max_pixels"
    Image.fromarray(ramp()).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="over the limit of 100"):
        read_image(tmp_path / "small.png", max_pixels=100)
    assert read_image(tmp_path / "small.png", max_pixels=None).size == (16, 12)
    assert read_image(tmp_path / "small.png", max_pixels=16 * 12).size == (16, 12)
    assert Image.MAX_IMAGE_PIXELS == limit_before


# --- atomic writes -----------------------------------------------------------------------------


def test_atomic_write_success_leaves_only_the_file(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"done")

    atomic_write(tmp_path / "sub" / "out.png", write)
    assert (tmp_path / "sub" / "out.png").read_bytes() == b"done"
    assert seen[0].name.startswith(".out.png.") and seen[0].name.endswith(".tmp")
    assert seen[0].parent == tmp_path / "sub"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.png"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_write_failure_leaves_nothing(tmp_path: Path, error: BaseException) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "out.png", write)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "keep.png").write_bytes(b"old")
    with pytest.raises(type(error)):
        atomic_write(tmp_path / "keep.png", write)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert (tmp_path / "keep.png").read_bytes() == b"old"


def test_write_image_failure_leaves_nothing(tmp_path: Path) -> None:
    bad = picture(np.zeros((4, 4, 5), np.float32))  # five channels: cannot be encoded
    with pytest.raises((InputError, TypeError)):
        write_image(tmp_path / "out.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_write_image_rejects_unknown_extension_and_quality(tmp_path: Path) -> None:
    pic = picture(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(UsageError, match=r"\.gif"):
        write_image(tmp_path / "out.gif", pic)
    with pytest.raises(UsageError, match="quality"):
        write_image(tmp_path / "out.jpg", pic, quality=0)
    write_image(tmp_path / "OUT.JPEG", pic, quality=50)  # extension matched case-insensitively
    assert read_image(tmp_path / "OUT.JPEG").source_format == "JPEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT.JPEG"]


def test_write_image_into_missing_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "b" / "out.png", picture(np.ones((2, 3, 3), np.float32)))
    assert read_image(tmp_path / "a" / "b" / "out.png").size == (3, 2)


# --- masks -------------------------------------------------------------------------------------


def test_mask_gray_rgb_rgba_and_16bit(tmp_path: Path) -> None:
    hole = np.zeros((6, 8), np.uint8)
    hole[2:4, 3:6] = 255
    Image.fromarray(hole).save(tmp_path / "l.png")
    Image.fromarray(np.dstack([hole] * 3)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", (8, 6)), hole / 255)
    rgb = read_mask(tmp_path / "rgb.png", (8, 6))
    assert rgb.dtype == np.float32 and np.abs(rgb - hole / 255).max() < 1e-6

    # White strokes on a transparent layer (whatever colour hides under alpha 0): holes = strokes.
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = hole
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_mask(tmp_path / "rgba.png", (8, 6)), hole / 255, atol=1e-6)

    png.from_array(hole.astype(np.uint16) * 257, "L;16").save(tmp_path / "l16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l16.png", (8, 6)), hole / 255)


def test_mask_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    Image.new("L", (8, 6)).save(tmp_path / "m.png")
    with pytest.raises(InputError) as err:
        read_mask(tmp_path / "m.png", (16, 12), image=Path("photo.jpg"))
    message = err.value.message
    assert "m.png" in message and "8x6" in message and "16x12" in message
    assert "photo.jpg" in message


# --- resize ------------------------------------------------------------------------------------


def test_resize_is_float_and_clipped() -> None:
    x = np.linspace(0, 1, 64, dtype=np.float32)
    grad = np.tile(x, (16, 1))
    small = resize(grad, (13, 5))
    assert small.shape == (5, 13) and small.dtype == np.float32
    levels = small * 255
    assert np.abs(levels - np.round(levels)).max() > 0.01  # not quantised to 8 bits
    step = np.zeros((8, 8, 3), np.float32)
    step[:, 4:] = 1.0
    big = resize(step, (32, 24))
    assert big.shape == (24, 32, 3) and big.min() == 0.0 and big.max() == 1.0  # ringing clipped
    np.testing.assert_allclose(resize(step, (8, 8)), step, atol=1e-6)


def test_resize_downscale_antialiases() -> None:
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)
    small = resize(checker, (8, 8))
    assert np.abs(small - 0.5).max() < 0.05  # averaged, not aliased


def test_single_frame_gif_is_read_and_animation_refused(tmp_path: Path) -> None:
    frames = [Image.fromarray(ramp(top=200 - 60 * i).astype(np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "still.gif")
    pic = read_image(tmp_path / "still.gif")
    assert pic.size == (16, 12) and pic.pixels.shape == (12, 16, 3)
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(InputError, match=r"animated image \(3 frames\)"):
        read_image(tmp_path / "anim.gif")
