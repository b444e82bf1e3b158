"""Pipeline behaviour on tiny models: padding, sizes, seeds, tiling, masks, face resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restore_cli import tiling
from restore_cli.errors import UsageError
from restore_cli.pipeline import pad_to_multiple


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_pad_equals_reflect_where_reflect_works_and_extends_beyond() -> None:
    x = torch.arange(40.0).view(1, 1, 5, 8)
    assert torch.equal(
        pad_to_multiple(x, 8), torch.nn.functional.pad(x, (0, 0, 0, 3), mode="reflect")
    )
    tiny = pad_to_multiple(torch.ones(1, 3, 1, 1) * 0.3, 64)
    assert tiny.shape == (1, 3, 64, 64) and torch.allclose(tiny, torch.tensor(0.3))
    big = pad_to_multiple(torch.arange(3.0).view(1, 1, 1, 3), 16)
    assert big.shape == (1, 1, 16, 16) and set(big.unique().tolist()) == {0.0, 1.0, 2.0}


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (7, 5), (16, 16), (20, 33)])
def test_any_size_gives_scale_times_size(load, h: int, w: int) -> None:
    r = load("tiny-sr")
    out = r.restore(image(h, w), seed=1, tile=0)
    assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_seed_determines_result(load) -> None:
    r = load("tiny-sr")
    a, b, c = (r.restore(image(16, 16), seed=s, tile=0) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_tiled_is_deterministic_covers_everything_and_has_no_seams(load) -> None:
    r = load("tiny-sr")
    x = np.tile(np.linspace(0.2, 0.8, 40, dtype=np.float32)[None, :, None], (36, 1, 3))
    a = r.restore(x, seed=3, tile=16, tile_overlap=4)
    b = r.restore(x, seed=3, tile=16, tile_overlap=4)
    assert a.shape == (144, 160, 3) and np.array_equal(a, b)
    c = r.restore(x, seed=3, tile=11, tile_overlap=4)  # rounded up to the padding multiple, 16
    assert np.array_equal(a, c)
    assert np.isfinite(a).all()


@pytest.mark.parametrize(
    ("device", "free_gib", "model", "size", "expected"),
    [
        ("cpu", 64, "realsr-v3", None, 128),  # capped at 512 output pixels: faster on the CPU
        ("cpu", 64, "realsr-v3", (200, 256), 256),  # <= 1024 output pixels: whole
        ("cpu", 64, "realsr-v3", (200, 257), 128),
        ("cpu", 1, "realsr-v3", (200, 256), 64),  # whole does not fit: 324 out -> 81 -> 64 in
        ("cuda", 64, "realsr-v3", (200, 257), 512),
        ("cuda", 64, "realsr-v3", None, 512),  # capped at 2048 output pixels
        ("cuda", 4, "realsr-v3", None, 192),  # sqrt(0.6 * 4 GiB / 3072 B) = 917 out -> 229 -> 192
        ("cpu", 0.01, "realsr-v3", (64, 64), 64),  # never below one padding multiple
        ("cpu", 64, "inpaint-imagenet", (600, 800), 800),
        ("cpu", 64, "inpaint-imagenet", (600, 1100), 512),
        ("cuda", 64, "faceir", (512, 512), 2048),
    ],
)
def test_auto_tile_from_free_memory_with_caps(monkeypatch, device, free_gib, model, size, expected):
    from restore_cli.registry import default_registry

    spec = default_registry().get(model)
    budget = tiling.Budget(int(free_gib * 2**30), cpu=device == "cpu", half=device != "cpu")
    assert tiling.auto_tile(spec.scale, spec.pad_multiple, budget, size) == expected


@pytest.mark.parametrize(("h", "w", "tile", "ov", "s"), [(36, 40, 16, 4, 2), (50, 17, 16, 8, 4)])
def test_weight_totals_equal_the_sum_of_all_tile_weights(h, w, tile, ov, s) -> None:
    plan = tiling.plan(h, w, tile, ov)
    total = np.zeros((h * s, w * s), np.float32)
    for box in plan:
        total[
            box.top * s : (box.top + box.height) * s, box.left * s : (box.left + box.width) * s
        ] += tiling.blend_weights(box, h, w, ov, s)
    ty, tx = tiling.weight_totals(plan, h, w, ov, s)
    assert np.allclose(ty[:, None] * tx[None, :], total, rtol=1e-6) and total.min() > 0


def test_smaller_tile_halves_in_padding_multiples() -> None:
    assert [tiling.smaller_tile(t, 64) for t in (512, 320, 200, 128, 64)] == [
        256,
        128,
        64,
        64,
        None,
    ]


def test_auto_tile_halves_when_memory_runs_out(load, monkeypatch) -> None:
    r = load("tiny-sr")
    x = image(36, 40)
    expected = r.restore(x, seed=5, tile=16)
    real_run = type(r).run
    sizes: list[tuple[int, int]] = []

    def run(self, lq, mask, generator, progress=None, **kw):
        sizes.append(tuple(lq.shape[-2:]))
        if lq.shape[-1] > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(self, lq, mask, generator, progress, **kw)

    monkeypatch.setattr(type(r), "run", run)
    out = r.restore(x, seed=5)  # auto: whole image (40 wide) -> out of memory -> 16-pixel tiles
    assert sizes[0] == (36, 40) and all(w <= 16 for _, w in sizes[1:])
    assert np.array_equal(out, expected)  # as if that tile had been asked for
    with pytest.raises(RuntimeError, match="out of memory"):
        r.restore(x, seed=5, tile=40)  # the caller's own tile is not changed behind their back

    def broken(self, lq, mask, generator, progress=None, **kw):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(type(r), "run", broken)
    with pytest.raises(RuntimeError, match="some other failure"):
        r.restore(x, seed=5)


def test_blend_weights_sum_smoothly() -> None:
    h, w, tile, ov, s = 36, 40, 16, 4, 2
    total = np.zeros((h * s, w * s))
    for box in tiling.plan(h, w, tile, ov):
        wt = tiling.blend_weights(box, h, w, ov, s)
        total[
            box.top * s : (box.top + box.height) * s, box.left * s : (box.left + box.width) * s
        ] += wt
    assert total.min() > 0.5  # every pixel covered with weight
    plan = tiling.plan(h, w, tile, ov)
    assert plan[0].top == 0 and plan[-1].top + plan[-1].height == h
    assert plan[-1].left + plan[-1].width == w


def test_inpainting_keeps_known_pixels_and_needs_a_mask(load) -> None:
    r = load("tiny-inpaint")
    x = image(40, 50)
    m = np.zeros((40, 50), np.float32)
    m[10:20, 5:30] = 1
    out = r.restore(x, m, seed=1, tile=0)
    assert out.shape == x.shape
    known = m == 0
    assert np.allclose(out[known], x[known], atol=1e-6)
    assert not np.allclose(out[~known], x[~known], atol=1e-3)
    with pytest.raises(ValueError):
        r.restore(x, None, seed=1)


def test_face_crops_of_other_sizes_are_resized_to_the_model_and_back(load) -> None:
    r = load("tiny-face")
    assert r.restore(image(100, 100), seed=1).shape == (100, 100, 3)
    assert r.restore(image(128, 128), seed=1).shape == (128, 128, 3)
    whole = r.restore(image(128, 128), seed=1, tile=0)
    assert np.array_equal(r.restore(image(128, 128), seed=1, tile=32), whole)  # a crop is not tiled


def test_device_and_dtype_errors() -> None:
    from restore_cli.device import cpu_native, resolve_device, resolve_dtype

    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    warned: list[str] = []
    if not cpu_native(torch.float16):
        assert resolve_dtype("fp16", torch.device("cpu"), warned.append) == torch.float32
        assert "no native fp16" in warned[-1]
    with pytest.raises(UsageError):
        resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UsageError):
        resolve_device("tpu")


def test_bicubic_helper_matches_torch_resize() -> None:
    from restore_cli.device import bicubic

    x = torch.rand(1, 3, 9, 7)
    torch.testing.assert_close(
        bicubic(x, scale=4), torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")
    )
    y = bicubic(x, size=(4, 3), antialias=True)
    assert y.shape == (1, 3, 4, 3) and y.device == x.device


def test_reduced_precision_on_the_cpu_only_where_it_is_native(monkeypatch) -> None:
    """An AVX2-only CPU emulates bf16 (a convolution ~200x slower): warn and run in fp32."""
    from restore_cli import device

    cpu = torch.device("cpu")
    assert device.cpu_native(torch.bfloat16, frozenset({"avx2", "fma"})) is False
    assert device.cpu_native(torch.bfloat16, frozenset({"avx512f", "avx512_bf16"})) is True
    assert device.cpu_native(torch.bfloat16, frozenset({"amx_bf16"})) is True
    assert device.cpu_native(torch.float16, frozenset({"avx512_bf16"})) is False
    # AVX-512 FP16 without AMX-FP16 ran fp16 at half fp32's speed: not native for this purpose
    assert device.cpu_native(torch.float16, frozenset({"avx512_fp16", "amx_bf16"})) is False
    assert device.cpu_native(torch.float16, frozenset({"amx_fp16"})) is True
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    warned: list[str] = []
    assert device.resolve_dtype("bf16", cpu, warned.append) == torch.float32
    assert device.resolve_dtype("auto", cpu, warned.append) == torch.float32
    assert len(warned) == 1 and "no native bf16" in warned[0] and "fp32" in warned[0]
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert device.resolve_dtype("bf16", cpu, warned.append) == torch.bfloat16
    assert device.resolve_dtype("auto", cpu, warned.append) == torch.float32  # never picked
    assert len(warned) == 1


def test_autoencoder_tiles_keep_small_latents_exact_and_blend_large_ones(load, monkeypatch) -> None:
    """Latents larger than the autoencoder tile go through encoder and decoder in tiles (flat
    memory); smaller ones exactly as the reference (whole)."""
    r = load("tiny-sr")
    x = image(48, 40)  # padded to 48x48; the tiny model's latent has the LQ's size
    whole = r.restore(x, seed=2, tile=0, vae_tile=0)
    assert np.array_equal(r.restore(x, seed=2, tile=0, vae_tile=48), whole)  # fits: untouched
    assert np.array_equal(r.restore(x, seed=2, tile=0, vae_tile=44), whole)  # 9/8 of it fits
    shapes: dict[str, list[tuple[int, ...]]] = {"encode": [], "decode": []}
    for name in shapes:
        real = getattr(r.vq, name)

        def spy(t, real=real, name=name):
            shapes[name].append(tuple(t.shape[-2:]))
            return real(t)

        monkeypatch.setattr(r.vq, name, spy)
    tiled = r.restore(x, seed=2, tile=0, vae_tile=16)
    assert tiled.shape == whole.shape and np.isfinite(tiled).all()
    # 48 latent, 16-tiles overlapping by 2 would need 4 per side (starts 0, 14, 28, 32): three
    # tiles of 18 (at most 9/8 of the tile) do it, starts 0, 16, 30; encoded from the x4 upsampled
    assert shapes["encode"] == [(72, 72)] * 9
    assert shapes["decode"] == [(18, 18)] * 9


def test_unet_filters_are_transformed_once_for_all_steps_of_an_image(
    load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNet keeps its Winograd filters for the steps of one image (or tile): each of its
    filters is transformed once per image, with the same result as transforming them at every
    call, and they are dropped afterwards (nothing is kept between images or into the decoder)."""
    from restore_cli import pipeline
    from restore_cli.nets import winograd

    r = load("tiny-sr")
    convs = [m for m in r.unet.modules() if isinstance(m, winograd.Conv3x3)]
    owner = {id(m.weight): m for m in convs}
    unet_filters = set(owner)
    calls: list[int] = []
    real = winograd.transform_weight

    def counting(w):
        if id(w) in owner and not keeping_off:  # a UNet filter: only inside the sampling block
            assert owner[id(w)].kept is not None
        calls.append(id(w))
        return real(w)

    keeping_off = False
    monkeypatch.setattr(winograd, "transform_weight", counting)
    pixels = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    kept = r.restore(pixels, seed=3, tile=0)
    unet_calls = [c for c in calls if c in unet_filters]
    assert unet_calls and len(unet_calls) == len(set(unet_calls))
    assert all(m.kept is None for m in convs)
    tiled = r.restore(pixels, seed=3, tile=16, tile_overlap=4)
    calls.clear()
    keeping_off = True
    monkeypatch.setattr(winograd, "KEEP_BYTES", 0)
    every_call = r.restore(pixels, seed=3, tile=0)
    assert len([c for c in calls if c in unet_filters]) == 4 * len(unet_calls)
    assert np.array_equal(kept, every_call)
    monkeypatch.setattr(winograd, "KEEP_BYTES", 2**30)
    monkeypatch.setattr(pipeline, "KEEP_FILTERS_LATENT", 32 * 32 - 1)  # a larger latent
    calls.clear()
    assert np.array_equal(r.restore(pixels, seed=3, tile=0), kept)
    assert len([c for c in calls if c in unet_filters]) == 4 * len(unet_calls)
    assert np.array_equal(tiled, r.restore(pixels, seed=3, tile=16, tile_overlap=4))
