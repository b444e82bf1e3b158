"""Paste-back (facexlib ``utils/face_restoration_helper.py: get_inverse_affine,
paste_faces_to_input_image``, rectangle mask) against the reference's paste vectors, and the
properties a seamless paste must have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import load_file

from restore_cli import faces
from restore_cli.faces.warp import (
    erode,
    gaussian_blur,
    gaussian_kernel,
    resize_lanczos4,
    warp_affine,
)

from .face_fill import DATA, astronaut, fake_restore

CASES = {  # upscale, crop ratio, background
    "up1_rect_nobg": (1, 1.0, None),
    "up2_rect_nobg": (2, 1.0, None),
    "up2_rect_bg": (2, 1.0, "nearest"),
    "up3_rect_nobg_crop1.25": (3, 1.25, None),
}


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    return load_file(str(DATA / "paste.safetensors"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_rect_paste_matches_reference(case: str, vectors: dict[str, np.ndarray]) -> None:
    upscale, ratio, bg_kind = CASES[case]
    photo = astronaut()
    aligned = [faces.align(photo, lm, 512, (ratio, ratio)) for lm in vectors[f"{case}.landmarks"]]
    for k, (_, affine) in enumerate(aligned):
        inv = faces.paste_affine(affine, upscale)
        assert np.abs(inv - vectors[f"{case}.inverse_affine_used"][k]).max() <= 1e-8
    a = np.asarray(photo)
    if bg_kind == "nearest":  # the reference's given upsample_img: nearest x2, channels reversed
        background = Image.fromarray(np.ascontiguousarray(a.repeat(2, 0).repeat(2, 1)[..., ::-1]))
    else:
        background = faces.upscaled_background(photo, upscale)
    out = faces.paste(background, fake_restore([c for c, _ in aligned]), [m for _, m in aligned],
                      upscale)  # fmt: skip
    got = np.asarray(out).astype(int)
    assert got.shape == (512 * upscale, 512 * upscale, 3)
    grid = np.asarray(Image.open(DATA / f"paste_{case}_grid.png")).astype(int)
    step = 3 if upscale == 3 else 2
    sampled = grid[..., 3] == 255
    diff = np.abs(got[::step, ::step][sampled] - grid[..., :3][sampled])
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3  # bit-exact in practice
    corner = np.asarray(Image.open(DATA / f"paste_{case}_corner.png")).astype(int)
    assert np.abs(got[-40:, -40:] - corner).max() <= 1


def smooth_photo(w: int = 160, h: int = 128) -> Image.Image:
    """Low-frequency content: bilinear resampling twice changes it by well under a level."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 120 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 40 + 0.8 * x + 0.3 * y
    b = 200 - 0.5 * y + 20 * np.cos((x + y) / 40.0)
    return Image.fromarray(np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8))


LANDMARKS = faces.FFHQ_TEMPLATE_512 * 0.16 + (40, 20)  # a 82-px face, well inside the photo


def footprint_ring(size: tuple[int, int], affine: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """Pixels within 2 px of the edge of where a (w, h) crop lands in the photo."""
    inv = faces.paste_affine(affine)
    mask = warp_affine(np.ones(size[::-1], np.float32), inv, out) > 0
    t = torch.from_numpy(mask).float()[None, None]
    grown = F.max_pool2d(t, 5, 1, 2)[0, 0] > 0
    shrunk = -F.max_pool2d(-t, 5, 1, 2)[0, 0] > 0
    return (grown & ~shrunk).numpy()


@pytest.mark.parametrize("ratio", [(1.0, 1.0), (1.0, 1.25), (1.25, 1.0)])
def test_identity_restoration_returns_the_photo(ratio: tuple[float, float]) -> None:
    photo = smooth_photo()
    crop, affine = faces.align(photo, LANDMARKS, 256, ratio)
    out = np.asarray(faces.paste(photo, [crop], [affine])).astype(int)
    diff = np.abs(out - np.asarray(photo).astype(int)).max(-1)
    # Away from the crop's edge: the photo, within resampling error. A transposed mask (facexlib
    # with rh != rw) would leave a black band inside the face here.
    ring = footprint_ring(crop.size, affine, photo.size)
    assert diff[~ring].max() <= 2
    assert diff[50:90, 55:100].mean() < 0.6
    # At the edge only the reference's faint line: its soft mask reaches one pixel past the
    # eroded face on the right and bottom (even erosion kernel), a few levels dark.
    assert diff[ring].max() <= 8


def test_soft_mask_blends_smoothly() -> None:
    photo = Image.new("RGB", (200, 160), (50, 50, 50))
    crop, affine = faces.align(photo, faces.FFHQ_TEMPLATE_512 * 0.2 + (50, 25), 512)
    face = Image.new("RGB", crop.size, (250, 250, 250))
    out = np.asarray(faces.paste(photo, [face], [affine]))[..., 0].astype(int)
    assert out.max() >= 248 and out.min() >= 45  # face inside, background outside
    # across the seam no neighbour step exceeds a quarter of the 200-level jump ...
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 50
    row = out[out.shape[0] // 2]
    left = row[: int(np.argmax(row))]  # ... the ramp is monotonic and several pixels wide
    assert (np.diff(left) >= 0).all()
    assert np.count_nonzero((left > 60) & (left < 240)) >= 5


def test_paste_keeps_alpha_and_untouched_pixels() -> None:
    photo = smooth_photo()
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((128, 160), 77, np.uint8)))
    crop, affine = faces.align(photo, LANDMARKS, 256)
    out = faces.paste(rgba, [Image.new("RGB", crop.size, (0, 0, 0))], [affine])
    assert out.mode == "RGBA" and np.all(np.asarray(out)[..., 3] == 77)
    a, b = np.asarray(out)[..., :3], np.asarray(photo)
    assert np.array_equal(a[:, :15], b[:, :15]) and np.array_equal(a[-5:], b[-5:])
    assert faces.paste(photo, [], []).tobytes() == photo.tobytes()
    with pytest.raises(ValueError):
        faces.paste(photo, [crop], [])


def test_lanczos_same_size_is_a_copy() -> None:
    a = np.asarray(smooth_photo())
    assert np.array_equal(resize_lanczos4(a, (160, 128)), a)
    assert resize_lanczos4(a, (320, 256)).shape == (256, 320, 3)


def reflect101(n: int, r: int) -> np.ndarray:
    i = np.abs(np.arange(-r, n + r)) % (2 * (n - 1))
    return np.where(i >= n, 2 * (n - 1) - i, i)


@pytest.mark.parametrize("k", [3, 9, 11, 21])
def test_blur_and_erode_equal_the_plain_opencv_order(k: int) -> None:
    # face-spec: rows as a fused multiply-add chain, columns symmetric; the shortcut for constant
    # neighbourhoods must not change a bit
    rng = np.random.default_rng(k)
    m = (rng.random((60, 70)) > 0.5).astype(np.float32)
    m[10:50, 10:60], m[:5] = 1, 0.25
    g, r = gaussian_kernel(k).astype(np.float64), k // 2
    rows = m[:, reflect101(70, r)]
    acc = np.zeros((60, 70), np.float32)
    for i in range(k):
        acc = (rows[:, i : i + 70].astype(np.float64) * g[i] + acc).astype(np.float32)
    cols = acc[reflect101(60, r)]
    want = (cols[r : r + 60].astype(np.float64) * g[r]).astype(np.float32)
    for j in range(1, r + 1):
        pair = (cols[r - j : r - j + 60] + cols[r + j : r + j + 60]).astype(np.float64)
        want = (pair * g[r + j] + want).astype(np.float32)
    assert np.array_equal(gaussian_blur(torch.from_numpy(m), k).numpy(), want)
    e = k // 2 + 1  # even kernel: [x - e/2, x + e/2 - 1]; outside the image is ignored
    padded = np.pad(m, ((e // 2, e - 1 - e // 2),) * 2, constant_values=np.inf)
    ref = np.min([padded[i : i + 60, j : j + 70] for i in range(e) for j in range(e)], axis=0)
    assert np.array_equal(erode(torch.from_numpy(m), e).numpy(), ref)
    assert gaussian_kernel(k).sum() == pytest.approx(1, abs=1e-6)
