"""tiling.resolve interprets --tile in one place; tiling.stitch blends tiles back losslessly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore_cli import tiling

BIG = tiling.Budget(64 * 2**30, cpu=False)


@pytest.mark.parametrize(
    ("tile", "overlap", "size", "fixed", "expected"),
    [
        (0, None, (300, 500), False, tiling.Tiling(0, 0, False)),  # never tile
        (100, None, (300, 500), False, tiling.Tiling(128, 16, False)),  # rounded up to 64
        (100, 40, (300, 500), False, tiling.Tiling(128, 40, False)),
        (512, None, (300, 500), False, tiling.Tiling(0, 0, False)),  # fits: whole, as the reference
        (64, None, (300, 500), True, tiling.Tiling(0, 0, False)),  # a fixed-size crop never tiles
        (None, None, (300, 500), True, tiling.Tiling(0, 0, False)),
        (None, None, (300, 500), False, tiling.Tiling(0, 0, True)),  # automatic: 512 fits it
        (None, None, (900, 500), False, tiling.Tiling(512, 64, True)),
    ],
)
def test_resolve_is_the_one_place_a_tile_is_interpreted(tile, overlap, size, fixed, expected):
    got = tiling.resolve(tile, overlap, size, scale=4, multiple=64, fixed_size=fixed, budget=BIG)
    assert got == expected


def test_resolve_refuses_overlap_not_smaller_than_the_tile() -> None:
    with pytest.raises(ValueError, match="smaller than the tile"):
        tiling.resolve(64, 64, (300, 500), scale=4, multiple=64)
    with pytest.raises(ValueError, match="memory budget"):
        tiling.resolve(None, None, (300, 500), scale=4, multiple=64)


def test_smaller_halves_whole_images_and_tiles_down_to_one_multiple() -> None:
    whole = tiling.Tiling(0, 0, True)
    assert tiling.smaller(whole, (300, 500), 64) == tiling.Tiling(192, 24, True)
    assert tiling.smaller(tiling.Tiling(128, 16, True), (300, 500), 64, overlap=40) == (
        tiling.Tiling(64, 40, True)
    )
    assert tiling.smaller(tiling.Tiling(64, 8, True), (300, 500), 64) is None


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap", "scale"),
    [
        (37, 53, 16, 4, 1),
        (64, 64, 16, 8, 4),
        (50, 17, 16, 15, 2),
        (20, 90, 32, 0, 3),
        (9, 9, 4, 1, 1),
    ],
)
def test_identity_model_tiled_at_any_size_returns_the_image(h, w, tile, overlap, scale) -> None:
    g = torch.Generator().manual_seed(h * w)
    image = torch.rand(1, 3, h, w, generator=g)
    target = F.interpolate(image, scale_factor=scale, mode="nearest")
    seen: list[tiling.Box] = []

    def identity(box: tiling.Box) -> torch.Tensor:
        seen.append(box)
        part = image[:, :, box.top : box.top + box.height, box.left : box.left + box.width]
        return F.interpolate(part, scale_factor=scale, mode="nearest")

    t = tiling.Tiling(tile, overlap, False)
    out = tiling.stitch(identity, h, w, t, scale)
    assert len(seen) == len(tiling.plan(h, w, tile, overlap)) > 1
    assert out.shape == target.shape
    assert (out - target).abs().max() < 1e-6  # float rounding of the weighted mean only
    as_u8 = (out * 255).round().to(torch.uint8)  # and exactly the same image once quantised
    assert torch.equal(as_u8, (target * 255).round().to(torch.uint8))


def test_stitch_untiled_is_one_call_and_reports_tiles() -> None:
    calls: list[tuple[int, int]] = []
    image = torch.rand(1, 3, 20, 30)
    out = tiling.stitch(lambda box: image, 20, 30, tiling.Tiling(0, 0, False), 1)
    assert torch.equal(out, image)

    def part(box: tiling.Box) -> torch.Tensor:
        return image[:, :, box.top : box.top + box.height, box.left : box.left + box.width]

    tiling.stitch(part, 20, 30, tiling.Tiling(16, 4, False), 1, lambda i, n: calls.append((i, n)))
    assert calls == [(i + 1, 6) for i in range(6)]
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize(
    ("side", "tile", "starts"),
    [
        (129, 129, [0]),  # within 9/8 of the 128 tile: whole, exactly as the reference
        (192, 128, [0, 64]),  # two 128-tiles already
        (256, 136, [0, 120]),  # three 128-tiles (0, 112, 128) become two of 136
        (280, 128, [0, 112, 152]),  # two would need 148 > 144: three of 128
        (512, 140, [0, 124, 248, 372]),  # five 128-tiles become four of 140
    ],
)
def test_autoencoder_tiles_grow_a_little_to_save_a_row_of_tiles(side, tile, starts) -> None:
    t = tiling.autoencoder_tiling((side, side))
    boxes = tiling.plan(side, side, t.tile, t.overlap)
    assert t.tile == (0 if starts == [0] else tile)
    assert sorted({b.top for b in boxes}) == starts
    if t.tile:
        assert t.tile <= 128 * 9 / 8 and t.overlap == 16
        tops = sorted({b.top for b in boxes})
        assert all(b - a <= t.tile - t.overlap for a, b in zip(tops, tops[1:], strict=False))
