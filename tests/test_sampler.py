"""Schedule tables (``get_named_eta_schedule``), the sampling loop's order of noise draws
(``p_sample_loop``), timestep subsets (``models/respace.py: SpacedDiffusion``) and the
stochasticity knob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restore_cli import sampler
from restore_cli.registry import Schedule
from restore_cli.schedule import space_timesteps

V3 = Schedule(steps=4, kappa=2.0, power=0.3, min_noise_level=0.2, etas_end=0.99)
V1 = Schedule(steps=15, kappa=2.0, power=0.3, min_noise_level=0.04, etas_end=0.99)


def close(a: torch.Tensor, b: list[float]) -> bool:
    return torch.allclose(a, torch.tensor(b, dtype=torch.float64), rtol=0, atol=5e-8)


def test_four_step_tables_match_spec() -> None:
    t = sampler.schedule_tables(V3)
    assert t.sqrt_etas.dtype == torch.float64
    assert close(t.sqrt_etas, [0.1, 0.52009637, 0.76138199, 0.99])
    assert close(t.etas, [0.01, 0.27050024, 0.57970254, 0.9801])
    assert close(t.coef1, [0.0, 0.03696854, 0.46661903, 0.59147285])
    assert close(t.coef2, [1.0, 0.96303146, 0.53338097, 0.40852715])
    assert close(t.posterior_std, [0.19626833, 0.19626833, 0.7596833, 0.97329179])
    scale = [1 / float(torch.sqrt(e * 4 + 1)) for e in t.etas]
    assert scale == pytest.approx([0.98058068, 0.69304197, 0.54891967, 0.45081649], abs=5e-8)


def test_fifteen_step_tables_match_spec() -> None:
    t = sampler.schedule_tables(V1)
    assert close(
        t.sqrt_etas,
        [0.02, 0.11716508, 0.17630456, 0.23362892, 0.29157413, 0.35100928, 0.41235614,
         0.47585773, 0.54167168, 0.60990993, 0.68065802, 0.75398526, 0.82995066,
         0.90860639, 0.99],
    )  # fmt: skip
    assert close(
        t.posterior_std,
        [0.03941293, 0.03941293, 0.17509953, 0.23136264, 0.2795632, 0.3246735, 0.36841605,
         0.41160098, 0.45467749, 0.49792248, 0.54152002, 0.58559957, 0.63025645,
         0.67556343, 0.72157789],
    )  # fmt: skip


def test_loop_draws_prior_then_one_draw_per_step_and_calls_net_with_raw_steps() -> None:
    tab = sampler.schedule_tables(V3)
    y = torch.randn(1, 3, 4, 4)
    seen: list[int] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    out = sampler.sample(net, y, tab, torch.Generator().manual_seed(7))
    assert seen == [3, 2, 1, 0]
    # Replay by hand: prior draw, then steps 3..0, each consuming one draw; the last is unused.
    g = torch.Generator().manual_seed(7)
    x = y + 2.0 * 0.99 * torch.randn(y.shape, generator=g)
    for t in (3, 2, 1, 0):
        noise = torch.randn(y.shape, generator=g)
        x = float(tab.coef1[t]) * x + (float(tab.posterior_std[t]) * noise if t else 0)
    assert torch.allclose(out, x, atol=1e-5)


def test_same_seed_same_result_and_callback_counts_steps() -> None:
    tab = sampler.schedule_tables(V3)
    y = torch.randn(1, 3, 4, 4)
    steps: list[tuple[int, int]] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * 0.5

    a = sampler.sample(
        net, y, tab, torch.Generator().manual_seed(1), lambda i, n, *_: steps.append((i, n))
    )
    b = sampler.sample(net, y, tab, torch.Generator().manual_seed(1))
    c = sampler.sample(net, y, tab, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


# -- timestep subsets, stochasticity (ResShift ``models/respace.py: SpacedDiffusion``) --------------


def toy_net(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """A deterministic stand-in for the UNet that depends on its input and on t."""
    tv = float(t[0]) if isinstance(t, torch.Tensor) else float(t)
    return torch.tanh(x * (1 + 0.1 * tv)) * 0.8 + 0.05 * tv


def spec_sqrt_etas(s: Schedule) -> np.ndarray:
    """sqrt(eta_i) = etas_start * (etas_end / etas_start) ** ((i / (T-1)) ** p), float64."""
    start = min(s.min_noise_level / s.kappa, s.min_noise_level)
    i = np.arange(s.steps, dtype=np.float64)
    return start * (s.etas_end / start) ** ((i / (s.steps - 1)) ** s.power)


def draws(seed: int, shape: tuple[int, ...], n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).double() for _ in range(n)]


def reference_spaced(s: Schedule, kept: list[int], y: torch.Tensor, seed: int) -> torch.Tensor:
    """SpacedDiffusion + p_sample_loop written out from the reference's formulas, float64: the
    tables rebuilt over the kept sqrt_etas, the network called with the original index."""
    use = sorted(kept)
    sqrt_etas = spec_sqrt_etas(s)[use]
    etas = sqrt_etas**2
    etas_prev = np.append(0.0, etas[:-1])
    alpha = etas - etas_prev
    var = s.kappa**2 * etas_prev / etas * alpha
    var_clipped = np.append(var[1], var[1:]) if len(use) > 1 else var
    noise = draws(seed, tuple(y.shape), 1 + len(use))
    x = y.double() + s.kappa * sqrt_etas[-1] * noise[0]
    for i, k in enumerate(reversed(range(len(use)))):
        x0 = toy_net(x / np.sqrt(s.kappa**2 * etas[k] + 1), use[k])
        mean = etas_prev[k] / etas[k] * x + alpha[k] / etas[k] * x0
        with np.errstate(divide="ignore"):  # a one-step chain has variance 0 (never used)
            std = np.exp(0.5 * np.log(var_clipped[k]))
        x = mean + float(k != 0) * std * noise[1 + i]
    return x


def reference_generalized(
    s: Schedule, kept: list[int], lam: float, y: torch.Tensor, seed: int
) -> torch.Tensor:
    """The generalised step exactly as the issue writes it, float64."""
    etas, k2 = spec_sqrt_etas(s) ** 2, s.kappa**2
    noise = draws(seed, tuple(y.shape), 1 + len(kept))
    y = y.double()
    x = y + s.kappa * np.sqrt(etas[kept[0]]) * noise[0]
    for i, t in enumerate(kept):
        x0 = toy_net(x / np.sqrt(k2 * etas[t] + 1), t)
        if i == len(kept) - 1:
            return x0
        e_t, e_s = etas[t], etas[kept[i + 1]]
        eps = (x - x0 - e_t * (y - x0)) / (s.kappa * np.sqrt(e_t))
        sigma = lam * s.kappa * np.sqrt(e_s * (e_t - e_s) / e_t)
        x = x0 + e_s * (y - x0) + np.sqrt(k2 * e_s - sigma**2) * eps + sigma * noise[1 + i]
    raise AssertionError("unreachable")


def legacy_sample(net, y, tab, generator):
    """The sampler before subsets and stochasticity, kept here to pin its results bit for bit."""
    x = sampler.prior_sample(y, tab, sampler.randn(y.shape, generator, y))
    for t in reversed(range(len(tab.etas))):
        tt = torch.full((y.shape[0],), t, dtype=torch.long)
        x0_hat = net(sampler.scale_input(x, t, tab), tt)
        x = sampler.posterior_step(x, x0_hat, t, tab, sampler.randn(x.shape, generator, x))
    return x


@pytest.mark.parametrize("schedule", [V3, V1])
def test_defaults_are_every_step_with_eta_one_bit_for_bit(schedule) -> None:
    tab = sampler.schedule_tables(schedule)
    y = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(3))
    old = legacy_sample(toy_net, y, tab, torch.Generator().manual_seed(11))
    new = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(11))
    full = list(range(schedule.steps - 1, -1, -1))
    explicit = sampler.sample(
        toy_net, y, tab, torch.Generator().manual_seed(11), timesteps=full, eta=1.0
    )
    assert torch.equal(old, new) and torch.equal(old, explicit)


def test_respacing_every_step_gives_the_same_tables() -> None:
    tab = sampler.schedule_tables(V1)
    again = sampler.respace(tab, list(range(15)))
    for name in ("sqrt_etas", "etas", "coef1", "coef2", "posterior_std"):
        assert torch.equal(getattr(tab, name), getattr(again, name)), name


@pytest.mark.parametrize(
    "kept", [[11, 7, 3, 0], [14, 7, 0], [13, 5], [12, 9, 4], [14], [6], [14, 13, 12, 2]]
)
def test_subsets_match_the_reference_spaced_diffusion(kept) -> None:
    tab = sampler.schedule_tables(V1)
    y = torch.randn(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    seen: list[int] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return toy_net(x, t)

    out = sampler.sample(net, y, tab, torch.Generator().manual_seed(5), timesteps=kept)
    assert seen == kept  # the network sees the original indices, in sampling order
    ref = reference_spaced(V1, kept, y, 5)
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=0), (out.double() - ref).abs().max()


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize(
    ("schedule", "kept"),
    [(V1, [14, 10, 6, 2, 0]), (V1, [11, 7, 3, 0]), (V1, [9, 4]), (V3, [3, 2, 1, 0])],
)
def test_generalised_step_matches_the_issue_formula(lam, schedule, kept) -> None:
    tab = sampler.schedule_tables(schedule)
    y = torch.randn(1, 3, 4, 7, generator=torch.Generator().manual_seed(2))
    out = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(9), timesteps=kept, eta=lam)
    ref = reference_generalized(schedule, kept, lam, y, 9)
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=0), (out.double() - ref).abs().max()


def test_eta_zero_is_bit_identical_and_ignores_every_draw_after_the_prior(monkeypatch) -> None:
    tab = sampler.schedule_tables(V1)
    y = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    kept = [13, 9, 5, 1]
    a = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(21), timesteps=kept, eta=0.0)
    b = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(21), timesteps=kept, eta=0.0)
    assert torch.equal(a, b)
    real = sampler.randn
    calls: list[int] = []
    junk = torch.Generator().manual_seed(99)

    def other_noise(shape, generator, like):
        calls.append(1)
        if len(calls) == 1:
            return real(shape, generator, like)  # the same prior
        return torch.randn(shape, generator=junk) * 1e3

    monkeypatch.setattr(sampler, "randn", other_noise)
    c = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(21), timesteps=kept, eta=0.0)
    d = sampler.sample(toy_net, y, tab, torch.Generator().manual_seed(21), timesteps=kept, eta=0.5)
    assert len(calls) == 2 * (1 + len(kept))  # the prior, then one draw per network call
    assert torch.equal(a, c) and not torch.allclose(a, d)


def test_noise_is_drawn_in_the_reference_order_for_subsets() -> None:
    tab = sampler.schedule_tables(V1)
    y = torch.zeros(1, 3, 4, 4)
    g = torch.Generator().manual_seed(8)
    sampler.sample(lambda x, t: torch.zeros_like(x), y, tab, g, timesteps=[11, 7, 3, 0])
    h = torch.Generator().manual_seed(8)
    for _ in range(5):  # prior + 4 calls
        torch.randn(y.shape, generator=h)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=h))


def test_one_step_chain_starts_at_its_index_and_returns_the_prediction() -> None:
    tab = sampler.schedule_tables(V1)
    y = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    got: dict[str, torch.Tensor] = {}

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        got["in"], got["t"] = x.clone(), t.clone()
        got["out"] = toy_net(x, t)
        return got["out"]

    for lam in (1.0, 0.0):
        out = sampler.sample(net, y, tab, torch.Generator().manual_seed(3), timesteps=[14], eta=lam)
        noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
        prior = y + 2.0 * 0.99 * noise
        assert got["t"].tolist() == [14]
        assert torch.allclose(got["in"], prior / (4 * 0.9801 + 1) ** 0.5, atol=1e-6)
        assert torch.equal(out, got["out"])


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ([], "empty"),
        ([3, 3], "strictly decreasing"),
        ([0, 3], "strictly decreasing"),
        ([15], "not a trained index"),
        ([-1], "not a trained index"),
        ([2.0], "integers"),
        ([True], "integers"),
        ("3,2", "list of integers"),
    ],
)
def test_bad_timesteps_are_refused(timesteps, message) -> None:
    tab = sampler.schedule_tables(V1)
    with pytest.raises(ValueError, match=message):
        sampler.sample(
            toy_net, torch.zeros(1, 3, 2, 2), tab, torch.Generator(), timesteps=timesteps
        )


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_eta_outside_zero_one_is_refused(lam) -> None:
    tab = sampler.schedule_tables(V3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sampler.sample(toy_net, torch.zeros(1, 3, 2, 2), tab, torch.Generator(), eta=lam)


def test_uniform_rule_is_the_reference_space_timesteps() -> None:
    assert space_timesteps(15, 4) == (11, 7, 3, 0)
    assert space_timesteps(4, 4) == (3, 2, 1, 0)
    assert space_timesteps(4, 2) == (2, 0)
    assert space_timesteps(15, 1) == (0,)
    for n, k in [(15, 2), (15, 7), (15, 15), (4, 3)]:
        ref = sorted({int((n / k) * x) for x in range(k)}, reverse=True)  # respace.py
        assert list(space_timesteps(n, k)) == ref
    with pytest.raises(ValueError):
        space_timesteps(4, 5)
