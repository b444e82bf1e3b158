"""The public entry points (``Restorer.__call__``, ``restore_file``, ``batch.run``) read and write
pixels identically, through imageio only, and guard what a job may cost and where it may write.

The same image goes through ``Restorer.__call__`` (a PIL image) and through a file
(``read_image``, ``restore_file``); the pixels that reach the model and the results must be equal.
The model is replaced by a spy that records its input and upscales it by nearest neighbour, so only
the conversion is under test; one test runs the real tiny model end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restore_cli import batch, files
from restore_cli.batch import restore_file
from restore_cli.errors import InputError
from restore_cli.imageio import (
    Picture,
    picture_from_pil,
    picture_to_pil,
    read_image,
    read_mask,
    write_image,
)
from restore_cli.pipeline import Restorer
from restore_cli.request import Request


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Replace the model: record (pixels, mask) as they reach it; return a nearest upscale."""
    seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def process(self, pixels, mask, request, progress=None):
        seen.append((np.array(pixels), None if mask is None else np.array(mask)))
        s = self.spec.scale
        return np.repeat(np.repeat(np.asarray(pixels, np.float32), s, 0), s, 1)

    monkeypatch.setattr(Restorer, "process", process)
    return seen


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def palette_image() -> Image.Image:
    im = Image.fromarray(rng(3).integers(0, 256, (6, 8, 3)).astype(np.uint8)).quantize(16)
    im.info["transparency"] = 2
    return im


# (name, PIL image, file to save it as)
CASES = {
    "rgb8": (lambda: Image.fromarray(rng(1).integers(0, 256, (6, 8, 3)).astype(np.uint8)), "png"),
    "rgba8": (
        lambda: Image.fromarray(rng(2).integers(0, 256, (6, 8, 4)).astype(np.uint8), "RGBA"),
        "png",
    ),
    "gray8": (lambda: Image.fromarray(rng(4).integers(0, 256, (6, 8)).astype(np.uint8)), "png"),
    "gray_alpha8": (
        lambda: Image.fromarray(rng(5).integers(0, 256, (6, 8, 2)).astype(np.uint8), "LA"),
        "png",
    ),
    "palette": (palette_image, "png"),
    # 16 bits with bright content, and dark content whose every value is <= 255 (the old API read
    # the dark one 257 times too bright, guessing the scale from the content)
    "gray16_bright": (
        lambda: Image.fromarray(rng(6).integers(0, 65536, (6, 8)).astype(np.uint16)),
        "png",
    ),
    "gray16_dark": (
        lambda: Image.fromarray(rng(7).integers(0, 256, (6, 8)).astype(np.uint16)),
        "png",
    ),
    "float": (
        lambda: Image.fromarray(rng(8).uniform(-0.2, 1.2, (6, 8)).astype(np.float32), "F"),
        "tif",
    ),
    "bilevel": (lambda: Image.fromarray(rng(9).integers(0, 2, (6, 8)).astype(bool)), "png"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_and_file_reach_the_model_and_come_back_identically(
    case: str, tmp_path: Path, load, spy
) -> None:
    make, ext = CASES[case]
    image, r = make(), load("tiny-sr")
    source = tmp_path / f"in.{ext}"
    image.save(source)
    np.testing.assert_array_equal(picture_from_pil(image).pixels, read_image(source).pixels)

    api_out = r(image)
    record = restore_file(r, source, tmp_path / "out.png")
    assert record["status"] == "ok", record
    (api_in, _), (file_in, _) = spy
    np.testing.assert_array_equal(api_in, file_in)
    written = Image.open(tmp_path / "out.png")
    assert (api_out.mode, api_out.size) == (written.mode, written.size)
    np.testing.assert_array_equal(np.asarray(api_out), np.asarray(written))


def test_16bit_and_float_come_in_at_their_own_scale(load, spy) -> None:
    r = load("tiny-sr")
    dark = np.array([[0, 1, 255, 256]], np.uint16)
    r(Image.fromarray(dark))
    np.testing.assert_array_equal(spy[-1][0][..., 0], dark / np.float32(65535))
    floats = np.array([[0.0, 0.25, 1.0, 2.0]], np.float32)
    r(Image.fromarray(floats, "F"))
    np.testing.assert_array_equal(spy[-1][0][..., 0], np.clip(floats, 0, 1))


def test_16bit_gray_comes_back_16bit_and_colour_8bit() -> None:
    a = rng(10).integers(0, 65536, (5, 7)).astype(np.uint16)
    pic = picture_from_pil(Image.fromarray(a))
    back = picture_to_pil(pic)
    assert back.mode == "I;16" and np.array_equal(np.asarray(back), a)
    rgb = Picture(pic.pixels, None, False, 16, None, None, "PNG")
    assert picture_to_pil(rgb).mode == "RGB"
    gray_alpha = Picture(pic.pixels, pic.pixels[..., 0], True, 16, None, None, "PNG")
    assert picture_to_pil(gray_alpha).mode == "LA"


def test_picture_to_pil_is_what_a_png_write_holds(tmp_path: Path) -> None:
    a = rng(11).random((6, 8, 3), dtype=np.float32)
    for pic in (
        Picture(a, None, False, 8, None, None, "PNG"),
        Picture(a, a[..., 1], False, 8, None, None, "PNG"),
        Picture(np.repeat(a[..., :1], 3, 2), None, True, 8, None, None, "PNG"),
    ):
        write_image(tmp_path / "w.png", pic)
        written, im = Image.open(tmp_path / "w.png"), picture_to_pil(pic)
        assert written.mode == im.mode and np.array_equal(np.asarray(written), np.asarray(im))


def test_orientation_and_metadata_as_the_file_path(tmp_path: Path) -> None:
    im = Image.fromarray(rng(12).integers(0, 256, (6, 8, 3)).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    opened = Image.open(tmp_path / "o.jpg")
    from_api, from_file = picture_from_pil(opened), read_image(tmp_path / "o.jpg")
    assert from_api.size == from_file.size == (6, 8)
    np.testing.assert_array_equal(from_api.pixels, from_file.pixels)
    assert from_api.exif == from_file.exif and picture_to_pil(from_api).info["exif"]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_masks_through_the_api_are_read_as_mask_files(mode: str, tmp_path: Path, load, spy) -> None:
    r = load("tiny-inpaint")
    image = Image.fromarray(rng(13).integers(0, 256, (16, 16, 3)).astype(np.uint8))
    image.save(tmp_path / "a.png")
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 1}[mode]
    top = 65535 if mode == "I;16" else 255
    values = (
        rng(14).integers(0, top + 1, (16, 16, bands)).astype(np.uint16 if top > 255 else np.uint8)
    )
    mask = Image.fromarray(values[..., 0] if bands == 1 else values)
    mask.save(tmp_path / "m.png")
    r(image, mask)
    assert (
        restore_file(r, tmp_path / "a.png", tmp_path / "o.png", mask=tmp_path / "m.png")["status"]
        == "ok"
    )
    (_, api_mask), (_, file_mask) = spy
    np.testing.assert_array_equal(api_mask, file_mask)
    np.testing.assert_array_equal(api_mask, read_mask(tmp_path / "m.png", (16, 16)))


def test_api_mask_of_another_size_is_an_input_error(load, spy) -> None:
    r = load("tiny-inpaint")
    image = Image.new("RGB", (16, 16))
    with pytest.raises(InputError, match="mask is 8x8 but the image is 16x16"):
        r(image, Image.new("L", (8, 8)))


def test_undecodable_pil_image_is_an_input_error(tmp_path: Path) -> None:
    noise = rng(16).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="^image: cannot read image"):
        picture_from_pil(Image.open(tmp_path / "cut.jpg"))  # decoded lazily, here


def test_real_model_api_equals_file(tmp_path: Path, load) -> None:
    r = load("tiny-sr")
    image = Image.fromarray(rng(15).integers(0, 256, (8, 8, 4)).astype(np.uint8), "RGBA")
    image.save(tmp_path / "a.png")
    out = r(image, seed=3)
    assert restore_file(r, tmp_path / "a.png", tmp_path / "o.png", seed=3)["status"] == "ok"
    written = Image.open(tmp_path / "o.png")
    assert out.mode == written.mode == "RGBA" and out.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(written))


# --- what a job may cost and where it may write ------------------------------------------------


def test_output_over_the_pixel_limit_is_refused_before_the_model_runs(
    tmp_path: Path, load, spy
) -> None:
    r = load("tiny-sr")  # x4: 16x16 in, 64x64 = 4,096 pixels out
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    record = restore_file(r, tmp_path / "a.png", tmp_path / "o.png", max_pixels=1000)
    assert record["status"] == "error" and "the result would be 64x64" in record["error"]
    assert spy == [] and not (tmp_path / "o.png").exists()
    record = restore_file(r, tmp_path / "a.png", tmp_path / "o.png", max_pixels=1000, scale=1)
    assert record["status"] == "error"  # the model's x4 result is made before it is resized
    assert (
        restore_file(r, tmp_path / "a.png", tmp_path / "o.png", max_pixels=4096)["status"] == "ok"
    )


def test_batch_never_writes_through_a_link_out_of_the_output_folder(
    tmp_path: Path, load, spy
) -> None:
    for rel in ("a.png", "away/b.png", "c.png"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "in" / rel)
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "away").symlink_to(elsewhere, target_is_directory=True)
    items, _ = files.find_inputs([tmp_path / "in"])
    jobs = files.plan_outputs(items, output=out, default_suffix="", several=True)
    records = list(batch.run(jobs, Request(), lambda: load("tiny-sr"), model="tiny-sr"))
    status = {Path(rec.input).name: (rec.status, rec.error or "") for rec in records}
    assert status["a.png"][0] == status["c.png"][0] == "ok"
    assert status["b.png"][0] == "error" and "leads out of it" in status["b.png"][1]
    assert list(elsewhere.iterdir()) == [] and (out / "c.png").is_file()
