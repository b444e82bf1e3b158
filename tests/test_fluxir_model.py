"""FLUX-IR task models: architecture, schedule tables and the authors' traces (golden vectors).

The vectors were made with the authors' ``model/ddpm_modules/unet.py: UNet`` and ``diffusion.py:
GaussianDiffusion`` (FLUX-IR ``Task_specitic_restoration``) with every UNet parameter filled by the
rule of ``tests/reference_fill.py``; here the same weights go through the public loader in the
authors' file layout (``denoise_fn.`` prefix plus stored *train* schedule buffers, which must be
ignored), then through ``FluxRestorer`` exactly as the project's parity check calls it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import restore_cli
from restore_cli import fluxir, nets
from restore_cli.device import make_generator
from restore_cli.fluxir_pipeline import pads_for, symmetric_pad
from restore_cli.registry import FluxSpec, default_registry
from restore_cli.weights.local import SCHEDULE_BUFFERS

from .reference_fill import fill_kinds, reference_state_dict

DATA = Path(__file__).parent / "data" / "fluxir"
VECTORS = sorted(p.name for p in (DATA / "vectors").iterdir())
# Raindrop and UnderwaterB share one architecture and one key list (keys/raindrop.json).
KEYS = {"lowlight-lolv1": "lolv1", "derain-raindrop": "raindrop", "underwater-uieb": "raindrop"}


def flux(name: str) -> FluxSpec:
    return default_registry().fluxir[name]


def authors_keys(config: str) -> dict[str, list[int]]:
    return json.loads((DATA / "keys" / f"{config}.json").read_text())


# --- architecture ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEYS))
def test_keys_and_shapes_are_the_authors(name: str) -> None:
    """UNet keys = checkpoint keys minus ``denoise_fn.``, in the same order; the rest are the 12
    schedule buffers of ``GaussianDiffusion.set_new_noise_schedule``."""
    ref = authors_keys(KEYS[name])
    unet = nets.build(flux(name).net)
    ours = [(f"denoise_fn.{k}", list(v.shape)) for k, v in unet.state_dict().items()]
    assert ours == [(k, v) for k, v in ref.items() if k.startswith("denoise_fn.")]
    assert [k for k in ref if not k.startswith("denoise_fn.")] == list(SCHEDULE_BUFFERS)
    assert flux(name).numel == sum(v.numel() for v in unet.state_dict().values())


@pytest.mark.parametrize("config", ["lolv1", "raindrop"])
def test_fill_kinds_agree_with_the_reference(config: str) -> None:
    name = "lowlight-lolv1" if config == "lolv1" else "derain-raindrop"
    expected = json.loads((DATA / "keys" / f"fill-kinds.{config}.json").read_text())
    assert fill_kinds(nets.build(flux(name).net)) == expected


@pytest.mark.parametrize("name", sorted(KEYS))
def test_attention_sits_where_image_size_puts_it(name: str) -> None:
    """``UNet.__init__`` places attention by the config's image_size (128 / 96), not the input."""
    summary = json.loads((DATA / "keys" / "summary.json").read_text())["configs"]
    config = {"lowlight-lolv1": "lolv1", "derain-raindrop": "raindrop"}.get(name, "underwaterb")
    unet = nets.build(flux(name).net)
    blocks = sorted(n.removesuffix(".attn") for n, _ in unet.named_modules() if n.endswith(".attn"))
    assert blocks == sorted(summary[config]["attention_blocks"])


# --- geometry and schedule tables --------------------------------------------------------------


@pytest.mark.parametrize(
    "n, before, after", [(5, 2, 3), (3, 0, 7), (4, 9, 1), (1, 3, 2), (7, 0, 0)]
)
def test_symmetric_pad_is_numpy_symmetric(n: int, before: int, after: int) -> None:
    """cv2.BORDER_REFLECT (``data/LoL_dataset.py``): edge repeated, pads longer than the side too."""
    x = torch.arange(2 * 3 * n * (n + 1), dtype=torch.float32).reshape(2, 3, n, n + 1)
    got = symmetric_pad(x, (before, after, after, before))
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (after, before)), mode="symmetric")
    assert np.array_equal(got.numpy(), ref)


def test_pads_split_floor_ceil() -> None:
    assert pads_for(400, 600, 32) == (8, 8, 4, 4)  # the authors' LOLv1 pad
    assert pads_for(480, 720, 16) == (0, 0, 0, 0)  # RainDrop test_a: no pad
    assert pads_for(45, 77, 16) == (1, 2, 1, 2)


@pytest.mark.parametrize("case", VECTORS)
def test_schedule_and_step_coefficients(case: str) -> None:
    """``set_new_noise_schedule`` (val schedule, float64) and the plan's coefficients."""
    c = json.loads((DATA / "vectors" / case / "case.json").read_text())
    s = flux(c["model"]).schedule
    t = fluxir.linear_tables(s.linear_start, s.linear_end, s.n_timestep)
    assert t.betas[1:] == pytest.approx(c["betas"], rel=1e-13, abs=1e-16)
    assert t.alphas_cumprod == pytest.approx(c["alphas_cumprod_with_1"], rel=1e-13)
    levels = [t.level(k) for k in range(11)]
    assert levels == pytest.approx(c["sqrt_alphas_cumprod_prev"], rel=1e-13)
    for step in c["plan"]:
        k_from, k_to = step["k_from"], step["k_to"]
        assert t.level(k_from) == pytest.approx(step["level"], rel=1e-12)
        assert t.recip_sqrt_alpha(k_from) == pytest.approx(step["coef_x"], rel=1e-12)
        assert t.eps_coef(k_from, k_to) == pytest.approx(step["coef_eps"], rel=1e-12)
        if step["kind"] == "jump":
            w_n, w_y = t.wide_coefs(k_from)
            assert (w_n, w_y) == pytest.approx((step["wide_noise_coef"], step["wide_lq_coef"]))


def test_jump_plans_per_model_and_steps() -> None:
    """``p_sample_loop_distill``: LOLv1 from 10, Raindrop's 2-step first jump at level 9 from a
    level-8 start, UnderwaterB from 7; the rein loops take all 10 steps."""
    plans = {n: {k: (s.loop, s.jumps) for k, s in flux(n).stages.items()} for n in KEYS}
    assert plans["lowlight-lolv1"] == {
        10: ("rein", ()), 2: ("jump", ((10, 2), (2, 0))), 1: ("jump", ((10, 0),))
    }  # fmt: skip
    assert plans["derain-raindrop"][2] == ("jump", ((9, 2), (2, 0)))
    assert plans["derain-raindrop"][1] == ("jump", ((8, 0),))
    assert plans["underwater-uieb"][2] == ("jump", ((7, 2), (2, 0)))
    starts = {n: (flux(n).start, flux(n).start_index, flux(n).pad_multiple) for n in KEYS}
    assert starts == {
        "lowlight-lolv1": ("noise", 10, 32),
        "derain-raindrop": ("noised-input", 8, 16),
        "underwater-uieb": ("noised-input", 7, 16),
    }
    t = fluxir.linear_tables(1e-3, 0.83, 10)  # Raindrop's start: sqrt(abar_8), sqrt(1 - abar_8)
    assert math.sqrt(t.alphas_cumprod[8]) == pytest.approx(0.169218591, abs=1e-9)


# --- golden vectors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory: pytest.TempPathFactory):
    """authors_file(model) -> a .pth in the authors' layout with the filled weights and junk
    (train-schedule) buffers, as ``DDPM.save_network`` writes it; one file per architecture."""
    folder = tmp_path_factory.mktemp("fluxir-weights")
    made: dict[str, Path] = {}

    def get(model: str) -> Path:
        config = KEYS[model]
        if config not in made:
            state = {
                f"denoise_fn.{k}": v
                for k, v in reference_state_dict(nets.build(flux(model).net)).items()
            }
            junk = torch.linspace(1e-4, 0.99, 10)  # never to be used
            state.update({b: junk.clone() for b in SCHEDULE_BUFFERS})
            made[config] = folder / f"{config}_filled.pth"
            torch.save(state, made[config])
        return made[config]

    return get


def close(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |difference| relative to max(1, max |reference|) (the README's trace tolerance)."""
    assert got.shape == ref.shape
    return float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("case", VECTORS)
def test_golden_vector(case: str, authors_file) -> None:
    folder = DATA / "vectors" / case
    c = json.loads((folder / "case.json").read_text())
    ref = load_file(str(folder / "trace.safetensors"))
    r = restore_cli.load(
        c["model"],
        checkpoint=authors_file(c["model"]),
        device="cpu",
        dtype="fp32",
        steps=c["steps"],
    )
    pixels = np.asarray(Image.open(folder / "input.png").convert("RGB"), dtype=np.float32) / 255
    lq = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1

    got: dict[str, torch.Tensor] = {}
    r.run(lq, [make_generator(c["seed"])], trace=lambda k, v: got.__setitem__(k, v.clone()))
    got["final"] = got[f"state.{c['steps']}"]
    assert set(got) == set(ref) - {"output"}
    assert len([k for k in got if k.startswith("noise.")]) == len(c["draws"])
    worst = {k: close(got[k], ref[k]) for k in got}
    assert max(worst.values()) <= 1e-4, worst

    out = r.restore(pixels, seed=c["seed"], tile=0)  # the parity check's call
    diff = np.abs(out - ref["output"].numpy())
    assert out.dtype == np.float32 and out.shape == (*c["input_hw"], 3)
    assert diff.max() <= 1e-3 and diff.mean() <= 1e-5
    expected = np.asarray(Image.open(folder / "expected.png").convert("RGB"), dtype=np.int16)
    ours = np.round(np.clip(out, 0, 1) * np.float32(255)).astype(np.int16)
    assert np.mean(np.abs(ours - expected) <= 1) >= 0.999
