"""``restore schedule search`` end to end on tiny models: the ranked table, --json, the programme
beyond the budget, and the usage errors with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.models import TyperInfo

from restore_cli.cli import app, main
from restore_cli.cli import schedule as schedule_cli
from restore_cli.registry import load_registry

from .conftest import TINY_REGISTRY


@pytest.fixture(autouse=True)
def schedule_group(monkeypatch):
    """The ``schedule`` group on the main app (where the app does not register it yet)."""
    if not any(g.name == "schedule" for g in app.registered_groups):
        groups = [*app.registered_groups, TyperInfo(schedule_cli.app, name="schedule")]
        monkeypatch.setattr(app, "registered_groups", groups)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a busy 2-thread pool only waits
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def args(weights):
    def make(model: str = "tiny-sr") -> list[str]:
        unet, ae = weights(model)
        return ["--registry", str(TINY_REGISTRY), "-m", model, "--checkpoint", str(unet),
                "--autoencoder", str(ae), "--device", "cpu"]  # fmt: skip

    return make


def images(folder: Path) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(16, 16), (16, 24)]):
        path = folder / f"crop{i}.png"
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_and_best_timesteps(tmp_path, args, capsys) -> None:
    code, out, err = run(["schedule", "search", "--steps", "2", *args(), *images(tmp_path)], capsys)
    assert code == 0, err
    assert "latent RMS" in out and "full chain" in out and "uniform" in out
    best = out.strip().splitlines()[-1]
    assert best.startswith("best: --timesteps ")
    ts = [int(t) for t in best.split()[-1].split(",")]
    spec = load_registry([TINY_REGISTRY]).get("tiny-sr")
    assert spec.trajectory(timesteps=ts) == tuple(ts) and len(ts) == 2  # accepted back


def test_json_ranking(tmp_path, args, capsys) -> None:
    argv = ["schedule", "search", "-k", "2", "--json", "--seed", "3", *args(), *images(tmp_path)]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["method"] == "exhaustive" and record["subsets"] == record["evaluated"] == 6
    assert record["trained"] == 4 and record["steps"] == 2 and record["seed"] == 3
    ranked = record["ranked"]
    assert [r["latent_l2"] for r in ranked] == sorted(r["latent_l2"] for r in ranked)
    assert record["best"] == ",".join(map(str, ranked[0]["timesteps"]))
    assert record["full"]["latent_l2"] == 0 and record["full"]["psnr"] is None  # identical
    assert all(r["calls"] == 2 and r["psnr"] is not None for r in ranked)
    assert sum(r["uniform"] for r in ranked) == 1
    # Beyond the budget the dynamic programme picks the subsets to try.
    code, out, _ = run([*argv, "--budget", "2"], capsys)
    record = json.loads(out)
    assert code == 0 and record["method"] == "dynamic programme" and record["evaluated"] in (2, 3)


def test_usage_errors(tmp_path, args, capsys) -> None:
    crops = images(tmp_path)
    code, _, err = run(["schedule", "search", "-k", "1", *args("tiny-sinsr"), *crops], capsys)
    assert code == 2 and "runs only timesteps [14]" in err
    code, _, err = run(["schedule", "search", "-k", "5", *args(), *crops], capsys)
    assert code == 2 and "4 trained steps" in err
    code, _, err = run(["schedule", "search", "-k", "2", *args(), str(tmp_path / "no.png")], capsys)
    assert code == 1 and "no.png" in err
    code, _, err = run(["schedule", "search", "-k", "2", "-m", "nope", *crops], capsys)
    assert code == 3 and "unknown model" in err
