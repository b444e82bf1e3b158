"""``--batch-size N``: tiles and same-size images through the networks together, each image with
its own generator, giving batch 1's results bit for bit on the CPU (and close ones on the whole
batch path a GPU takes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore_cli import faces, sampler
from restore_cli.cli import main
from restore_cli.device import make_generator
from restore_cli.errors import UsageError
from restore_cli.facephoto import FacePhotoRestorer
from restore_cli.pipeline import Restorer
from restore_cli.request import Request


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def hole(h: int, w: int, seed: int = 0) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    m[top : top + h // 3, left : left + w // 3] = 1
    return m


def save(path: Path, h: int, w: int, seed: int) -> None:
    a = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(path)


def cli(argv: list[str], capsys) -> tuple[int, list[dict]]:
    code = main(argv)
    out, _ = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# -- the sampler takes noise drawn ahead --------------------------------------------------------


@pytest.mark.parametrize(("timesteps", "eta"), [(None, 1.0), ((3, 1), 1.0), ((3, 2, 0), 0.0)])
def test_noise_drawn_ahead_is_what_the_generator_draws(load, timesteps, eta) -> None:
    tab = load("tiny-sr").tables
    y = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + t.view(-1, 1, 1, 1) * 0.01

    direct = sampler.sample(net, y, tab, make_generator(7), timesteps=timesteps, eta=eta)
    count = sampler.noise_draws(tab, timesteps)
    noise = sampler.draw_noise(make_generator(7), y.shape, count, y)
    ahead = sampler.sample(net, y, tab, None, timesteps=timesteps, eta=eta, noise=noise)
    assert torch.equal(direct, ahead)
    with pytest.raises(ValueError, match="noise must be"):
        sampler.sample(net, y, tab, None, timesteps=timesteps, noise=noise[:-1])
    with pytest.raises(ValueError, match="generator or the noise"):
        sampler.sample(net, y, tab, None, timesteps=timesteps)


# -- tiles of one image --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 3])
def test_tiles_of_one_image_batched_equal_batch_one(load, batch: int) -> None:
    r = load("tiny-sr")
    x = image(28, 56)  # 2 x 5 tiles of 16 with overlap 4
    one = r.restore(x, seed=3, tile=16, tile_overlap=4)
    assert np.array_equal(r.restore(x, seed=3, tile=16, tile_overlap=4, batch_size=batch), one)


@pytest.mark.parametrize(("timesteps", "eta"), [(None, 0.0), ((3, 1), 1.0), ((2, 0), 0.5)])
def test_eta_and_timesteps_batched_equal_batch_one(load, timesteps, eta) -> None:
    r = load("tiny-sr")
    x = image(28, 40, seed=1)
    kw = {"seed": 5, "tile": 16, "tile_overlap": 4, "timesteps": timesteps, "eta": eta}
    assert np.array_equal(r.restore(x, batch_size=3, **kw), r.restore(x, **kw))


@pytest.mark.parametrize("batch", [2, 3])
def test_inpaint_tiles_with_a_mask_batched_equal_batch_one(load, batch: int) -> None:
    r = load("tiny-inpaint")
    x, m = image(96, 80, seed=2), hole(96, 80, seed=2)  # 2 x 2 tiles of 64
    one = r.restore(x, m, seed=4, tile=64, tile_overlap=16)
    assert np.array_equal(r.restore(x, m, seed=4, tile=64, tile_overlap=16, batch_size=batch), one)


def test_running_out_of_memory_halves_the_batch_not_the_result(load, monkeypatch) -> None:
    r = load("tiny-sr")
    x = image(28, 40, seed=6)
    one = r.restore(x, seed=2, tile=16, tile_overlap=4)
    real, sizes = Restorer.run_many, []

    def scarce(self, lqs, *args, **kwargs):
        sizes.append(len(lqs))
        if len(lqs) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, lqs, *args, **kwargs)

    monkeypatch.setattr(Restorer, "run_many", scarce)
    assert np.array_equal(r.restore(x, seed=2, tile=16, tile_overlap=4, batch_size=4), one)
    assert sizes[:2] == [4, 2] and set(sizes[2:]) == {1}


# -- several images ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 3])
def test_same_size_images_batched_equal_one_by_one(load, batch: int) -> None:
    r = load("tiny-sr")
    pics = [image(16, 24, seed=s) for s in range(3)] + [image(20, 20, seed=9), image(16, 24, 4)]
    request = Request(seed=8, tile=0)
    one = [r.process(p, None, request) for p in pics]
    many = r.process_many(pics, None, Request(seed=8, tile=0, batch_size=batch))
    assert all(np.array_equal(a, b) for a, b in zip(one, many, strict=True))


def test_same_size_inpaint_images_with_their_masks(load) -> None:
    r = load("tiny-inpaint")
    pics = [image(30, 40, seed=s) for s in range(3)]
    masks = [hole(30, 40, seed=s) for s in range(3)]
    request = Request(seed=1, tile=0)
    one = [r.process(p, m, request) for p, m in zip(pics, masks, strict=True)]
    many = r.process_many(pics, masks, Request(seed=1, tile=0, batch_size=3))
    assert all(np.array_equal(a, b) for a, b in zip(one, many, strict=True))


def test_face_crops_of_a_photo_batched(load) -> None:
    class Stub:
        def detect(self, image, threshold: float = 0.97, nms: float = 0.4) -> list[faces.Face]:
            return [_face((20, 20, 80, 80), 0.99), _face((100, 40, 170, 110), 0.98)]

    photo = FacePhotoRestorer(load("tiny-face"), Stub())  # type: ignore[arg-type]
    x = image(160, 200, seed=3)
    one = photo.restore_pixels(x, Request(seed=6))
    assert np.array_equal(photo.restore_pixels(x, Request(seed=6, batch_size=2)), one)
    assert not np.array_equal(one, x)  # the faces were restored and pasted


def _face(box: tuple[float, float, float, float], score: float) -> faces.Face:
    x1, y1, x2, y2 = box
    cx, cy, d = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 3
    lm = np.array([[cx - d / 2, cy - d / 3], [cx + d / 2, cy - d / 3], [cx, cy],
                   [cx - d / 3, cy + d / 2], [cx + d / 3, cy + d / 2]])  # fmt: skip
    return faces.Face(box=box, score=score, landmarks=lm)


def test_whole_batches_as_on_a_gpu_are_close(load, monkeypatch) -> None:
    """The path a GPU takes (the batch through the networks whole, latents in autoencoder tiles
    too): the same noise, so equal to batch 1 up to float rounding."""
    r = load("tiny-sr")
    x = image(40, 56, seed=7)
    kw = {"seed": 3, "tile": 32, "tile_overlap": 8, "vae_tile": 16}
    one = r.restore(x, **kw)
    inp = load("tiny-inpaint")
    px, m = image(30, 40, seed=1), hole(30, 40, seed=1)
    one_inpaint = inp.restore(px, m, seed=2, tile=0)
    monkeypatch.setattr(Restorer, "_whole_batches", lambda self: True)
    np.testing.assert_allclose(r.restore(x, batch_size=3, **kw), one, atol=1e-3)
    np.testing.assert_allclose(inp.restore(px, m, seed=2, tile=0, batch_size=2), one_inpaint,
                               atol=1e-3)  # fmt: skip


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("tiles", [[], ["--tile", "16", "--tile-overlap", "4"]])
def test_folder_batched_writes_the_same_bytes(tmp_path, tiny_args, capsys, tiles) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name, (h, w), seed in [("a", (16, 24), 0), ("b", (16, 24), 1), ("c", (20, 20), 2),
                               ("d", (16, 24), 3), ("e", (16, 24), 4), ("f", (16, 24), 5),
                               ("g", (16, 24), 6)]:  # fmt: skip
        save(src / f"{name}.png", h, w, seed)
    (src / "d0_broken.png").write_bytes((src / "a.png").read_bytes()[:60])  # inside a batch
    runs = {}
    for batch in ("1", "3"):
        out = tmp_path / f"out{batch}"
        code, records = cli(["sr", str(src), "-o", str(out), "--json", "--batch-size", batch,
                             *tiles, *tiny_args()], capsys)  # fmt: skip
        assert code == 1
        runs[batch] = (out, [(Path(r["input"]).name, r["status"]) for r in records])
    (out1, records1), (out3, records3) = runs["1"], runs["3"]
    assert records3 == records1  # in job order, the broken file alone failing
    assert [name for name, status in records1 if status == "error"] == ["d0_broken.png"]
    written = sorted(p.name for p in out1.iterdir())
    assert written == sorted(p.name for p in out3.iterdir()) and len(written) == 7
    for name in written:
        assert (out3 / name).read_bytes() == (out1 / name).read_bytes(), name


def test_inpaint_folder_batched_writes_the_same_bytes(tmp_path, tiny_args, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for seed in range(3):
        save(src / f"{seed}.png", 30, 40, seed)
    mask = tmp_path / "mask.png"
    Image.fromarray((hole(30, 40) * 255).astype(np.uint8)).save(mask)
    for batch in ("1", "2"):
        argv = ["inpaint", str(src), "--mask", str(mask), "-o", str(tmp_path / f"o{batch}"),
                "--batch-size", batch, *tiny_args("tiny-inpaint")]  # fmt: skip
        assert cli(argv, capsys)[0] == 0
    for name in ("0.png", "1.png", "2.png"):
        assert (tmp_path / "o2" / name).read_bytes() == (tmp_path / "o1" / name).read_bytes()


def test_aligned_faces_of_any_size_batch_together(tmp_path, tiny_args, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for seed, side in enumerate((64, 96, 128)):  # all resized to the model's 128 x 128
        save(src / f"{seed}.png", side, side, seed)
    for batch in ("1", "3"):
        argv = ["face", str(src), "--aligned", "-o", str(tmp_path / f"o{batch}"),
                "--batch-size", batch, *tiny_args("tiny-face")]  # fmt: skip
        assert cli(argv, capsys)[0] == 0
    for name in ("0.png", "1.png", "2.png"):
        assert (tmp_path / "o3" / name).read_bytes() == (tmp_path / "o1" / name).read_bytes()


def test_batch_size_below_one_is_a_usage_error(tmp_path, tiny_args, capsys) -> None:
    save(tmp_path / "a.png", 16, 16, 0)
    assert main(["sr", str(tmp_path / "a.png"), "--batch-size", "0", *tiny_args()]) == 2
    assert "--batch-size" in capsys.readouterr().err
    for bad in (0, -2, 2.5, "3"):
        with pytest.raises(UsageError, match="batch size"):
            Request(batch_size=bad)  # type: ignore[arg-type]
    assert Request(batch_size=np.int64(4)).batch_size == 4  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "words"),
    [("tile", "tile -1 is negative"), ("tile_overlap", "tile overlap -1 is negative"),
     ("vae_tile", "autoencoder tile -1 is negative")],
)  # fmt: skip
def test_a_negative_tile_setting_is_a_usage_error_naming_its_option(option, words) -> None:
    with pytest.raises(UsageError, match=words) as info:
        Request(**{option: -1})
    assert info.value.option == option
