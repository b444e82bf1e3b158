"""The public golden vectors (reference README): every stage and the written image.

Weights are rebuilt by the deterministic fill, so no weight file is needed. Full-size networks:
about 15 s per case on 2 CPU cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import restore_cli
from restore_cli import sampler
from restore_cli.device import make_generator

from .conftest import GOLDEN

CASES = {"sr_v3_64": "realsr-v3", "inpaint_256": "inpaint-imagenet", "faceir_512": "faceir"}
LATENT_TOL = 1e-3


def read01(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.float32) / 255.0


def assert_image_close(out: np.ndarray, expected: np.ndarray) -> None:
    """README tolerance: >= 99.5 % of values within 1 level, mean |difference| <= 0.1 level."""
    diff = np.abs(out.astype(np.int32) - expected.astype(np.int32))
    assert out.shape == expected.shape
    assert (diff <= 1).mean() >= 0.995, f"only {(diff <= 1).mean():.4%} within 1 level"
    assert diff.mean() <= 0.1, f"mean difference {diff.mean():.3f}"


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, weights):
    name = request.param
    folder = GOLDEN / name
    meta = json.loads((folder / "case.json").read_text())
    unet_file, ae_file = weights(CASES[name])
    r = restore_cli.load(CASES[name], checkpoint=unet_file, autoencoder=ae_file, device="cpu")
    return name, folder, meta, r


def test_every_stage_matches_reference(case) -> None:
    name, folder, meta, r = case
    stages = load_file(str(folder / "stages.safetensors"))
    lq = torch.from_numpy(read01(folder / "input.png")).permute(2, 0, 1)[None] * 2 - 1
    mask = None
    if (folder / "mask.png").exists():
        mask = torch.from_numpy(read01(folder / "mask.png"))[None, None] * 2 - 1
    steps = meta["steps"]
    with torch.inference_mode():
        p = r.prepare(lq, mask)
        assert (p.z_y - stages["z_y"]).abs().max() <= LATENT_TOL
        for t in (steps - 1, 0):
            out = r.unet(stages["unet.in.x"], torch.full((1,), t), lq=p.lq, mask=p.mask)
            assert (out - stages[f"unet.out.t{t}"]).abs().max() <= LATENT_TOL, t
        g = make_generator(meta["seed"])
        assert torch.equal(torch.randn(p.z_y.shape, generator=g), stages["noise.prior"])
        seen: dict[str, torch.Tensor] = {}

        def keep(i: int, n: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            seen[f"sample.t{n - i}"], seen[f"x0_hat.t{n - i}"] = x.clone(), x0.clone()

        sampler.sample(r.denoiser(p), p.z_y, r.tables, make_generator(meta["seed"]), keep)
    assert len(seen) == 2 * steps
    for key, value in seen.items():
        assert (value - stages[key]).abs().max() <= LATENT_TOL, key


def test_expected_png_through_public_api(case) -> None:
    name, folder, meta, r = case
    image = Image.open(folder / "input.png")
    mask = Image.open(folder / "mask.png") if (folder / "mask.png").exists() else None
    out = r(image, mask=mask, seed=meta["seed"], tile=0, aligned=True)
    assert isinstance(out, Image.Image)
    assert_image_close(np.asarray(out), np.asarray(Image.open(folder / "expected.png")))
