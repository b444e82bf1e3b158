"""Choosing the trajectory: the registry's timesteps (SinSR, per-K defaults, strict checks) and the
cost-aware schedule search (exhaustive and by dynamic programme), on callables and tiny models."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import restore_cli
from restore_cli import sampler, trajectory
from restore_cli.errors import ModelError, UsageError
from restore_cli.registry import default_registry, load_registry
from restore_cli.schedule import Schedule

from .conftest import TINY_REGISTRY

V1 = Schedule(steps=15, kappa=2.0, power=0.3, min_noise_level=0.04, etas_end=0.99)


@pytest.fixture()
def one_thread():
    """Tiny tensors run one thread: on a busy machine each op of a 2-thread pool can wait
    milliseconds for the second thread (thousands of 6x6 chains here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- registry ---------------------------------------------------------------------------------


def test_sinsr_models_are_one_step_realsr_v1_students() -> None:
    reg = default_registry()
    v1 = reg.get("realsr-v1")
    for name in ("sinsr-v1", "sinsr-v2"):
        spec = reg.get(name)
        assert spec.task == "sr" and spec.unet == v1.unet and spec.schedule == v1.schedule
        assert spec.autoencoder == v1.autoencoder and spec.licence == "CC BY-NC-SA 4.0"
        assert spec.fixed_timesteps and spec.default_timesteps == (14,)
        assert spec.trajectory() == (14,) == spec.trajectory(steps=1)
        assert spec.trajectory(timesteps=[14]) == (14,)
        assert spec.source.url.endswith(f"/SinSR/releases/download/v1.0/SinSR_{name[-2:]}.pth")
    assert "guessed" in reg.get("sinsr-v2").description


def test_trajectory_requests() -> None:
    reg = load_registry([TINY_REGISTRY])
    v1, v3 = reg.get("realsr-v1"), reg.get("realsr-v3")
    assert v1.trajectory() == tuple(range(14, -1, -1)) == v1.trajectory(steps=15)
    assert v1.trajectory(steps=4) == (11, 7, 3, 0)  # the reference's uniform rule
    assert v1.trajectory(timesteps=[12, 5]) == (12, 5)
    assert v3.trajectory(steps=2) == (2, 0) and v3.trajectory() == (3, 2, 1, 0)
    assert reg.get("tiny-sr15").trajectory(steps=3) == (14, 6, 0)  # the registry's default for 3
    assert reg.get("tiny-sr15").trajectory(steps=4) == (11, 7, 3, 0)


@pytest.mark.parametrize(
    ("name", "request_", "words"),
    [
        ("realsr-v1", {"steps": 16}, "15 trained steps"),
        ("realsr-v1", {"steps": 0}, "15 trained steps"),
        ("realsr-v1", {"timesteps": [3, 7]}, "strictly decreasing"),
        ("realsr-v1", {"timesteps": [15]}, "not a trained index"),
        ("realsr-v1", {"steps": 2, "timesteps": [3, 0]}, "not both"),
        ("sinsr-v1", {"steps": 4}, "exactly 1 step"),
        ("sinsr-v1", {"timesteps": [14, 0]}, "exactly 1 step"),
        ("sinsr-v1", {"timesteps": [13]}, "exactly 1 step"),
    ],
)
def test_impossible_requests_are_usage_errors(name, request_, words) -> None:
    spec = default_registry().get(name)
    with pytest.raises(UsageError, match=words) as info:
        spec.trajectory(**request_)
    assert info.value.hint and info.value.option in ("steps", "timesteps")


MODEL = """
[models.mine]
task = "sr"
scale = 4
pad_multiple = 64
unet = "swinunet-sr"
autoencoder = "vq-f4"
schedule = { steps = 15, kappa = 2.0, power = 0.3, min_noise_level = 0.04, etas_end = 0.99 }
"""


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("timesteps = [15]", "not a trained index"),
        ("timesteps = [3, 7]", "strictly decreasing"),
        ("timesteps = []", "empty"),
        ("timesteps = [1.5]", "integers"),
        ("timesteps = 14", "must be a list"),
        ("fixed_timesteps = true", "needs a timesteps list"),
        ('timesteps = [14]\nfixed_timesteps = "yes"', "true or false"),
        ('[models.mine.trajectories]\n"3" = [11, 7, 3, 0]', "its key must be"),
        ('[models.mine.trajectories]\nfour = [11, 7, 3, 0]', "its key must be"),
        ('[models.mine.trajectories]\n"2" = [3, 9]', "strictly decreasing"),
        ('timesteps = [14]\nfixed_timesteps = true\n[models.mine.trajectories]\n"1" = [9]',
         "no other trajectories"),
        ("trajectories = 3", "must be a table"),
    ],
)  # fmt: skip
def test_bad_trajectories_name_the_file_and_entry(tmp_path: Path, extra, words) -> None:
    head, _, table = extra.partition("[models.mine.trajectories]")
    text = MODEL + head + ("\n[models.mine.trajectories]" + table if table else "")
    path = tmp_path / "mine.toml"
    path.write_text(text + "\n")
    with pytest.raises(ModelError, match=words) as info:
        load_registry([path])
    assert str(path) in info.value.message and "[models.mine]" in info.value.message


def test_user_registry_can_declare_a_distilled_student(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MODEL + "timesteps = [14, 7]\nfixed_timesteps = true\n")
    spec = load_registry([path]).get("mine")
    assert spec.trajectory() == (14, 7) == spec.trajectory(steps=2)
    with pytest.raises(UsageError):
        spec.trajectory(steps=1)


# -- the search core on callables ---------------------------------------------------------------


def toy_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x * (1 + 0.1 * float(t[0]))) * 0.8 + 0.05 * float(t[0])


def toy_probe(seed: int, tab: sampler.Tables, decode: bool = True) -> trajectory.Probe:
    y = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))

    def run(ts: tuple[int, ...]) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + 100)
        return sampler.sample(toy_net, y, tab, g, timesteps=ts, eta=0.0)

    def chain() -> trajectory.Chain:
        return trajectory.record_chain(toy_net, y, tab, seed + 100)

    return trajectory.Probe(run, (lambda x: torch.tanh(x)) if decode else None, chain)


def brute_force(probes, trained: int, k: int) -> list[tuple[float, tuple[int, ...]]]:
    """Every subset run and scored on its own: mean RMS deviation from the full chain's latent."""
    full = tuple(range(trained - 1, -1, -1))
    refs = [p.run(full) for p in probes]
    scores = []
    for ts in itertools.combinations(full, k):
        dev = [
            float((p.run(ts) - r).pow(2).mean().sqrt()) for p, r in zip(probes, refs, strict=True)
        ]
        scores.append((sum(dev) / len(dev), ts))
    return sorted(scores)


def test_exhaustive_search_ranks_like_brute_force(one_thread) -> None:
    tab = sampler.schedule_tables(V1)
    probes = [toy_probe(1, tab), toy_probe(2, tab)]
    seen: list[tuple[int, int]] = []
    result = trajectory.search(
        probes, 15, 3, budget=1000, progress=lambda d, n: seen.append((d, n))
    )
    expected = brute_force(probes, 15, 3)
    assert result.method == "exhaustive" and result.subsets == math.comb(15, 3) == 455
    assert [c.timesteps for c in result.ranked] == [ts for _, ts in expected]
    assert result.best.timesteps == expected[0][1]
    assert result.best.latent_l2 == pytest.approx(expected[0][0], rel=1e-6)
    assert result.full.latent_l2 == 0 and result.full.psnr == math.inf and result.full.calls == 15
    assert all(c.calls == 3 and c.psnr is not None and c.seconds >= 0 for c in result.ranked)
    assert seen[-1] == (455 * 2, 455 * 2) and len(seen) == 455  # every subset, per image


def test_jump_costs_are_zero_along_the_full_chain(one_thread) -> None:
    tab = sampler.schedule_tables(V1)
    costs = trajectory.jump_costs(toy_probe(3, tab).chain())
    assert costs.start[14] == 0 and costs.end[0] == 0
    assert all(costs.jump[t, t - 1] < 1e-6 for t in range(1, 15))
    assert trajectory.path_cost(costs, list(range(14, -1, -1))) < 1e-5
    assert costs.start[11] > 0 and costs.jump[14, 0] > 0 and costs.end[5] > 0


def test_best_paths_are_the_cheapest_under_the_additive_cost() -> None:
    rng = random.Random(0)
    n = 8
    costs = trajectory.JumpCosts(
        start={t: rng.random() for t in range(n)},
        jump={(t, s): rng.random() for t in range(n) for s in range(t)},
        end={t: rng.random() for t in range(n)},
    )
    for k in (1, 2, 3, 5, 8):
        everything = sorted(
            (trajectory.path_cost(costs, ts), ts)
            for ts in itertools.combinations(range(n - 1, -1, -1), k)
        )
        got = trajectory.best_paths(costs, n, k, 6)
        assert [ts for _, ts in got] == [ts for _, ts in everything[:6]]
        assert [c for c, _ in got] == pytest.approx([c for c, _ in everything[:6]])


def test_dynamic_programme_when_the_subsets_exceed_the_budget(one_thread) -> None:
    tab = sampler.schedule_tables(V1)
    probes = [toy_probe(1, tab, decode=False), toy_probe(2, tab, decode=False)]
    result = trajectory.search(probes, 15, 4, budget=12)
    assert result.method == "dynamic programme" and result.subsets == 1365
    tried = [c.timesteps for c in result.ranked]
    assert len(tried) in (12, 13) and (11, 7, 3, 0) in tried  # the uniform rule is always shown
    assert all(len(ts) == 4 and list(ts) == sorted(ts, reverse=True) for ts in tried)
    assert all(c.estimate is not None and c.psnr is None for c in result.ranked)
    devs = [c.latent_l2 for c in result.ranked]
    assert devs == sorted(devs)
    # Here the true best of all 1365 subsets is among the few the programme picked.
    assert result.best.timesteps == brute_force(probes, 15, 4)[0][1]


def test_search_refuses_what_it_cannot_do() -> None:
    tab = sampler.schedule_tables(V1)
    no_chain = trajectory.Probe(toy_probe(1, tab).run)
    with pytest.raises(ValueError, match="budget"):
        trajectory.search([no_chain], 15, 4, budget=10)
    with pytest.raises(ValueError, match="1..15"):
        trajectory.search([no_chain], 15, 16)
    with pytest.raises(ValueError, match="probe"):
        trajectory.search([], 15, 2)


# -- on a tiny model ----------------------------------------------------------------------------


def test_search_on_a_tiny_model_matches_brute_force(weights, registry, one_thread) -> None:
    unet, ae = weights("tiny-sr")
    r = restore_cli.load("tiny-sr", unet, ae, device="cpu", registry=registry)
    rng = np.random.default_rng(0)
    images = [
        rng.random((16, 16, 3)).astype(np.float32),
        rng.random((16, 32, 3)).astype(np.float32),
    ]
    probes = trajectory.probes(r, images, seed=7)
    result = trajectory.search(probes, 4, 2, budget=10)
    assert result.method == "exhaustive" and len(result.ranked) == 6
    # Brute force, independently: each subset through the sampler and the decoder.
    scores = []
    with torch.inference_mode():
        prepared = [r.prepare(torch.from_numpy(a).permute(2, 0, 1)[None] * 2 - 1) for a in images]

        def chain(p, ts):
            g = torch.Generator().manual_seed(7)
            return sampler.sample(r.denoiser(p), p.z_y, r.tables, g, timesteps=ts, eta=0.0)

        refs = [chain(p, (3, 2, 1, 0)) for p in prepared]
        for ts in itertools.combinations((3, 2, 1, 0), 2):
            outs = [chain(p, ts) for p in prepared]
            dev = np.mean(
                [float((o - f).pow(2).mean().sqrt()) for o, f in zip(outs, refs, strict=True)]
            )
            db = np.mean(
                [trajectory.psnr(r.decode(o, p), r.decode(f, p))
                 for o, f, p in zip(outs, refs, prepared, strict=True)]
            )  # fmt: skip
            scores.append((dev, ts, db))
    scores.sort()
    assert result.best.timesteps == scores[0][1]
    assert [c.timesteps for c in result.ranked] == [ts for _, ts, _ in scores]
    assert [c.psnr for c in result.ranked] == pytest.approx([db for *_, db in scores])
    # The programme path on the same model: chains recorded through the Restorer's networks.
    dp = trajectory.search(probes, 4, 2, budget=2)
    assert dp.method == "dynamic programme" and len(dp.ranked) in (2, 3)


# --- early exit ------------------------------------------------------------------------------


def settling_net(rates: list[float]):
    """A denoiser whose x0 prediction for image b settles geometrically at rate ``rates[b]``
    (0: the same prediction every call; 1: never settles), counting its calls."""
    calls: list[int] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(int(t[0]))
        i = len(calls)
        base = torch.linspace(1.0, 2.0, x[0].numel()).view(x[0].shape)
        out = [base + (r**i if r < 1 else (-1) ** i) * 0.5 for r in rates]
        return torch.stack(out).to(x)

    return net, calls


def test_early_exit_stops_when_predictions_agree_and_keeps_the_generator_in_step() -> None:
    tab = sampler.schedule_tables(V1)
    y = torch.zeros(1, 3, 4, 4)
    net, calls = settling_net([0.1])
    g_full, g_exit = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    full = sampler.sample(net, y, tab, g_full)
    assert len(calls) == 15
    calls.clear()
    # successive predictions differ by 0.5 * 0.1^i * (1 - 0.1) relative to about 1.5: 3 % at i=2
    out = sampler.sample(net, y, tab, g_exit, early_exit=0.05)
    assert len(calls) == 2
    expect = torch.linspace(1.0, 2.0, 48).view(1, 3, 4, 4) + 0.5 * 0.1**2
    torch.testing.assert_close(out, expect)  # the second prediction is the result
    # the draws a whole chain makes were taken: the next tile or image sees the same noise
    assert torch.equal(torch.randn(3, generator=g_exit), torch.randn(3, generator=g_full))
    calls.clear()
    for off in (None, 0.0):  # off: every step, the full chain's result
        assert torch.equal(sampler.sample(net, y, tab, torch.Generator().manual_seed(5),
                                          early_exit=off), full)  # fmt: skip
    with pytest.raises(ValueError, match="tolerance"):
        sampler.sample(net, y, tab, torch.Generator(), early_exit=-1.0)
    for ts in ([14], [0], [7, 0]):  # chains too short to stop early are simply run
        calls.clear()
        plain = sampler.sample(net, y, tab, torch.Generator().manual_seed(2), timesteps=ts)
        calls.clear()
        exits = sampler.sample(net, y, tab, torch.Generator().manual_seed(2), timesteps=ts,
                               early_exit=1e9)  # fmt: skip
        assert exits.shape == plain.shape and torch.isfinite(exits).all()
        if len(ts) == 1:
            assert torch.equal(exits, plain)


def test_early_exit_in_a_batch_gives_each_image_its_own_result() -> None:
    """One image settles, the other never does: the batch runs the whole chain, and each image's
    result is what it alone gives (the settled one its early prediction)."""
    tab = sampler.schedule_tables(V1)
    y = torch.zeros(2, 3, 4, 4)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    count = sampler.noise_draws(tab)
    drawn = [sampler.draw_noise(g, y[:1].shape, count, y[:1]) for g in gens]
    noise = [torch.cat(step) for step in zip(*drawn, strict=True)]
    net, calls = settling_net([0.1, 1.0])
    both = sampler.sample(net, y, tab, None, noise=noise, early_exit=0.05)
    assert len(calls) == 15  # the second image kept the chain going
    for b, rate in enumerate((0.1, 1.0)):
        alone_net, _ = settling_net([rate])
        alone = sampler.sample(alone_net, y[:1], tab, None, noise=[n[b : b + 1] for n in noise],
                               early_exit=0.05)  # fmt: skip
        torch.testing.assert_close(both[b : b + 1], alone, rtol=0, atol=1e-6)


def test_early_exit_from_the_api_and_the_command_line(tmp_path, load, tiny_args, capsys) -> None:
    from PIL import Image

    from restore_cli.cli import main

    r = load("tiny-sr")
    x = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    whole = r.restore(x, seed=3, tile=0)
    assert np.array_equal(r.restore(x, seed=3, tile=0, early_exit=0.0), whole)
    stopped = r.restore(x, seed=3, tile=0, early_exit=10.0)  # any two predictions "agree"
    assert stopped.shape == whole.shape and not np.array_equal(stopped, whole)
    with pytest.raises(UsageError, match="early-exit"):
        r.restore(x, seed=3, early_exit=float("nan"))
    src = tmp_path / "a.png"
    Image.fromarray((x * 255).astype(np.uint8)).save(src)
    out = tmp_path / "a_x4.png"
    assert main(["sr", str(src), "-o", str(out), "--early-exit", "10", *tiny_args()]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["lowlight", str(src), "--early-exit", "0.1"]) == 2
    assert "--early-exit" in capsys.readouterr().err
