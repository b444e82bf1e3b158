"""Schedule tables (spec §3.1) and the sampling loop's order of noise draws (spec §3.5)."""

from __future__ import annotations

import pytest
import torch

from restore_cli import sampler
from restore_cli.registry import Schedule

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
