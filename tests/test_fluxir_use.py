"""FLUX-IR task models in use, on tiny configurations (``data/fluxir/tiny.toml``): FluxRestorer
(geometry, seeds, batches, tiles, PIL), bring-your-own weights (``restore models add``, offline
loading by name, wrong files) and the one-line error of a missing checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import restore_cli
from restore_cli import fluxir, nets, tiling
from restore_cli.cli import main
from restore_cli.device import make_generator
from restore_cli.errors import EXIT_MODEL, EXIT_USAGE, UsageError, WeightsError
from restore_cli.fluxir_pipeline import FluxRestorer
from restore_cli.registry import FluxSpec, load_registry
from restore_cli.weights import local

from .reference_fill import reference_state_dict

TINY = Path(__file__).parent / "data" / "fluxir" / "tiny.toml"


@pytest.fixture(scope="module")
def specs() -> dict[str, FluxSpec]:
    return dict(load_registry([TINY]).fluxir)


@pytest.fixture(scope="module")
def states(specs) -> dict[str, dict[str, torch.Tensor]]:
    return {n: reference_state_dict(nets.build(s.net)) for n, s in specs.items()}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache per test (``restore_cli.weights.cache_root``)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def restorer(specs, states, name: str = "tiny-lowlight", steps: int = 2) -> FluxRestorer:
    unet = nets.build(specs[name].net, device="cpu")
    unet.load_state_dict(states[name])
    return FluxRestorer(specs[name], steps, unet.eval(), torch.device("cpu"), torch.float32)


def authors_pth(path: Path, state: dict[str, torch.Tensor], prefix: str = "") -> Path:
    """The authors' layout: ``denoise_fn.`` + UNet keys and 12 schedule buffers (any values)."""
    full = {f"{prefix}denoise_fn.{k}": v for k, v in state.items()}
    full.update({f"{prefix}{b}": torch.rand(10) for b in local.SCHEDULE_BUFFERS})
    torch.save(full, path)
    return path


def pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


# --- FluxRestorer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, steps", [("tiny-lowlight", 1), ("tiny-derain", 2), ("tiny-derain", 10)]
)
def test_restore_any_size_is_seeded_and_in_range(specs, states, name: str, steps: int) -> None:
    r = restorer(specs, states, name, steps)
    img = pixels(13, 22)
    a = r.restore(img, seed=3, tile=0)
    assert a.shape == (13, 22, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, r.restore(img, seed=3, tile=0))
    assert not np.array_equal(a, r.restore(img, seed=4, tile=0))


def test_noise_draws_follow_the_authors_order(specs, states) -> None:
    """LOLv1: n1 (unused), z, one per jump; Raindrop: n1 (the start), one per jump; rein: z only."""
    y = torch.zeros(1, 3, 8, 8)
    counts = {}
    for name, steps in [("tiny-lowlight", 2), ("tiny-derain", 2), ("tiny-derain", 10)]:
        seen: dict[str, torch.Tensor] = {}
        r = restorer(specs, states, name, steps)
        r.sample(y, [make_generator(0)], trace=seen.__setitem__)
        counts[(name, steps)] = [k for k in seen if k.startswith("noise.")]
    assert counts[("tiny-lowlight", 2)] == ["noise.0", "noise.1", "noise.2", "noise.3"]
    assert counts[("tiny-derain", 2)] == ["noise.0", "noise.1", "noise.2"]
    assert counts[("tiny-derain", 10)] == ["noise.0"]


@pytest.mark.parametrize("name", ["tiny-lowlight", "tiny-derain"])
def test_a_batch_equals_its_images_one_by_one(specs, states, name: str) -> None:
    """Each sample its own eps and generator stream (the authors' ``[0]`` broadcast is fixed)."""
    r = restorer(specs, states, name, 2)
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    both = r.run(lq, [make_generator(1), make_generator(2)])
    one = torch.cat([r.run(lq[i : i + 1], [make_generator(i + 1)]) for i in range(2)])
    # a wrong noise stream moves outputs by O(1); a batch of two only rounds differently (CI saw
    # 1.2e-5 once at 1e-5 allowed, on an input drawn from the global generator)
    torch.testing.assert_close(both, one, rtol=0, atol=1e-4)


def test_jump_is_the_authors_operator() -> None:
    """``ode_jump_t`` written out: single-step factor on x, w = 0.001 mix with the re-noised eps."""
    t = fluxir.linear_tables(2e-4, 0.93, 10)
    x, e, n, y = (torch.randn(1, 3, 4, 4, generator=make_generator(i)) for i in range(4))
    a_t, a_0, ab = t.level(10), t.level(1), t.alphas_cumprod
    d = (1 - a_t**2) ** 0.5 * a_0 / a_t - (1 - a_0**2) ** 0.5
    e_mix = 1.001 * e - 0.001 * ((a_0 / a_t) * n - y) / d
    want = (
        x / (1 - t.betas[10]) ** 0.5
        - ((1 - ab[10]) ** 0.5 / (1 - t.betas[10]) ** 0.5 - (1 - ab[2]) ** 0.5) * e_mix
    )
    torch.testing.assert_close(fluxir.jump(x, e, n, y, t, 10, 2), want)


def test_tiles_draw_in_plan_order_and_blend(specs, states) -> None:
    r = restorer(specs, states, "tiny-derain", 1)
    img = pixels(40, 56)
    events: list[tuple[str, int, int]] = []
    tiled = r.restore(img, seed=5, tile=24, progress=lambda *e: events.append(e))
    boxes = tiling.plan(40, 56, 24, tiling.default_overlap(24))
    assert [e for e in events if e[0] == "tile"] == [
        ("tile", i + 1, len(boxes)) for i in range(len(boxes))
    ]
    assert tiled.shape == (40, 56, 3) and 0 <= tiled.min() and tiled.max() <= 1
    # where no neighbour overlaps them, tiles 1 and 2 are those tiles run in turn on one generator
    lq = torch.from_numpy(img).permute(2, 0, 1)[None] * 2 - 1
    g = make_generator(5)
    first, second = (r.run(lq[:, :, :24, left : left + 24], [g]) for left in (0, 16))
    alone = [((x[0] + 1) / 2).permute(1, 2, 0).numpy() for x in (first, second)]
    np.testing.assert_allclose(tiled[:16, :16], alone[0][:16, :16], atol=1e-6)
    np.testing.assert_allclose(tiled[:16, 24:32], alone[1][:16, 8:16], atol=1e-6)
    assert np.array_equal(r.restore(img, seed=5, tile=64), r.restore(img, seed=5, tile=0))
    assert np.array_equal(r.restore(img, seed=5), r.restore(img, seed=5, tile=0))  # auto: whole


def test_pil_in_pil_out_keeps_kind(specs, states) -> None:
    r = restorer(specs, states, "tiny-lowlight", 1)
    rgba = Image.fromarray((pixels(10, 12) * 255).astype(np.uint8)).convert("RGBA")
    out = r(rgba, seed=1)
    assert out.mode == "RGBA" and out.size == (12, 10)
    assert r(rgba.convert("L"), seed=1).mode == "L"
    plain = r(rgba.convert("RGB"), seed=1)
    assert np.array_equal(np.asarray(plain)[..., :3], np.asarray(out)[..., :3])


def test_progress_counts_network_evaluations(specs, states) -> None:
    steps: list[tuple[str, int, int]] = []
    restorer(specs, states, "tiny-lowlight", 10).restore(
        pixels(8, 8), tile=0, progress=lambda *e: steps.append(e)
    )
    assert steps == [("step", i, 10) for i in range(1, 11)]


# --- weights: load, restore models add -----------------------------------------------------------


def test_missing_checkpoint_names_the_drive_folder() -> None:
    with pytest.raises(WeightsError) as info:
        restore_cli.load("lowlight-lolv1", steps=2)
    text = str(info.value)
    assert "lolv1_dist2step.pth" in text and "drive.google.com/drive/folders/" in text
    assert "restore models add lowlight-lolv1" in text and "\n" not in text


def test_load_reads_the_authors_layout_and_ignores_stored_buffers(
    specs, states, tmp_path: Path
) -> None:
    spec = specs["tiny-lowlight"]
    pth = authors_pth(tmp_path / "lolv1_dist1step.pth", states["tiny-lowlight"], prefix="module.")
    r = restore_cli.load(spec, checkpoint=pth, device="cpu", dtype="auto", steps=1)
    assert isinstance(r, FluxRestorer) and r.dtype == torch.float32 and r.device.type == "cpu"
    want = restorer(specs, states, "tiny-lowlight", 1).restore(pixels(9, 9), seed=2, tile=0)
    np.testing.assert_allclose(r.restore(pixels(9, 9), seed=2, tile=0), want, atol=1e-5)
    warned: list[str] = []
    restore_cli.load(spec, checkpoint=pth, device="cpu", steps=2, on_warning=warned.append)
    assert "1-step file" in warned[0]  # named as another step count's file: runs, but says so
    with pytest.raises(UsageError):
        restore_cli.load("realsr-v3", steps=2)


def test_models_add_then_load_by_name_offline(specs, states, tmp_path: Path, cache: Path) -> None:
    spec = specs["tiny-derain"]
    pth = authors_pth(tmp_path / "raindrop_dist2step.pth", states["tiny-derain"])
    added = local.add(spec, pth)
    folder = cache / "restore" / "added" / "tiny-derain"
    assert added.steps == 2 and added.path == folder / "raindrop_dist2step.safetensors"
    recorded = (folder / "raindrop_dist2step.safetensors.sha256").read_text().split()
    assert recorded[0] == added.sha256
    source = (folder / "raindrop_dist2step.source.sha256").read_text().split()
    assert source == [added.source_sha256, pth.name]
    pth.unlink()
    r = restore_cli.load(spec, steps=2, offline=True)
    want = restorer(specs, states, "tiny-derain", 2).restore(pixels(12, 8), seed=1, tile=0)
    np.testing.assert_allclose(r.restore(pixels(12, 8), seed=1, tile=0), want, atol=1e-5)
    with pytest.raises(WeightsError, match="raindrop_dist1step.pth"):
        restore_cli.load(spec, steps=1)  # only the 2-step file was added
    added.path.write_bytes(added.path.read_bytes()[:-1] + b" ")
    with pytest.raises(WeightsError, match="corrupt"):
        restore_cli.load(spec, steps=2)


def test_add_refuses_wrong_files(specs, states, tmp_path: Path) -> None:
    derain = specs["tiny-derain"]
    lolv1_file = authors_pth(tmp_path / "raindrop_rein.pth", states["tiny-lowlight"])
    with pytest.raises(WeightsError, match="var_conv"):
        local.add(derain, lolv1_file)
    short = dict(states["tiny-derain"])
    short.pop("final_conv.block.3.bias")
    with pytest.raises(WeightsError, match="1 missing: final_conv.block.3.bias"):
        local.add(derain, authors_pth(tmp_path / "raindrop_rein.pth", short))
    stray = {
        **{f"denoise_fn.{k}": v for k, v in states["tiny-derain"].items()},
        "ema.w": torch.ones(1),
    }
    save_file(stray, str(tmp_path / "x.safetensors"))
    with pytest.raises(WeightsError, match="outside denoise_fn"):
        local.add(derain, tmp_path / "x.safetensors", steps=1)
    good = authors_pth(tmp_path / "mine.pth", states["tiny-derain"])
    with pytest.raises(UsageError, match="cannot tell"):
        local.add(derain, good)
    with pytest.raises(UsageError, match="2-step file"):
        local.add(
            derain, authors_pth(tmp_path / "raindrop_dist2step.pth", states["tiny-derain"]), steps=1
        )
    assert not (local.added_dir("tiny-derain")).exists()


def test_models_add_command(specs, states, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pth = authors_pth(tmp_path / "lolv1_rein.pth", states["tiny-lowlight"])
    code = main(["models", "add", "tiny-lowlight", str(pth), "--registry", str(TINY), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["steps"] == 10 and Path(record["path"]).is_file()
    assert main(["models", "list", "--json", "--registry", str(TINY)]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["tiny-lowlight"]["added_steps"] == [10] and rows["tiny-lowlight"]["cached"]
    assert rows["tiny-derain"]["added_steps"] == [] and not rows["tiny-derain"]["cached"]
    assert main(["models", "path", "tiny-lowlight", "--registry", str(TINY)]) == 0
    assert record["path"] in capsys.readouterr().out
    wrong = authors_pth(tmp_path / "raindrop_rein.pth", states["tiny-lowlight"])
    assert main(["models", "add", "tiny-derain", str(wrong), "--registry", str(TINY)]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert "var_conv" in err
    assert main(["models", "add", "realsr-v3", str(pth)]) == EXIT_USAGE
    assert (
        main(
            ["models", "add", "tiny-lowlight", str(tmp_path / "mine.pth"), "--registry", str(TINY)]
        )
        != 0
    )


def test_registry_entries_are_strict(tmp_path: Path) -> None:
    text = TINY.read_text()
    for bad, match in [
        (text.replace("seed = 733", "seed = 733\nurl = 'x'"), "unknown key"),
        (text.replace("[[10, 2], [2, 0]]", "[[10, 3], [2, 0]]"), "jumps"),
        (text.replace('loop = "rein"', 'loop = "ddim"'), "loop"),
        (text.replace('start = "noise"', 'start = "zeros"'), "start"),
        (text.replace("pad_multiple = 8", "pad_multiple = 3"), "pad_multiple"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(bad)
        with pytest.raises(restore_cli.RestoreError, match=match):
            load_registry([path])
    spec = load_registry([TINY]).fluxir["tiny-derain"]
    with pytest.raises(restore_cli.RestoreError, match="no 3-step"):
        dataclasses.replace(spec).stage(3)


def test_restore_file_writes_like_the_command_line(specs, states, tmp_path: Path) -> None:
    """``FluxRestorer`` has what ``batch`` uses (``spec.name/task/scale``, ``restore_picture``)."""
    r = restorer(specs, states, "tiny-lowlight", 1)
    src = tmp_path / "dark.png"
    Image.fromarray((pixels(11, 17) * 255).astype(np.uint8)).convert("LA").save(src)
    record = restore_cli.restore_file(r, src, tmp_path / "out.png", seed=7, tile=0)
    assert record["status"] == "ok", record
    with Image.open(tmp_path / "out.png") as out:
        assert out.mode == "LA" and out.size == (17, 11)
