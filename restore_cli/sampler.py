"""ResShift sampling math (Yue, Wang, Loy 2023/2024), pure functions on tensors.

Notation (spec §3; journal paper Eqs. 1-7):

    y        latent of the (upsampled) LQ image, the end point of the residual shift
    x0       latent of the HQ image;    x0_hat: the network's prediction of it
    eta_t    shifting schedule, 0 < eta_1 < ... < eta_T ~ 1;  sqrt_eta = sqrt(eta_t)
    kappa    noise scale
    forward  x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps
    prior    x_T = y + kappa sqrt(eta_T) eps
    reverse  x_{t-1} = coef1_t x_t + coef2_t x0_hat + std_t eps,    eps ~ N(0, I)
             coef1 = eta_{t-1} / eta_t,  coef2 = alpha_t / eta_t,  alpha_t = eta_t - eta_{t-1}
             std^2 = kappa^2 eta_{t-1} alpha_t / eta_t   (index 0 takes index 1's value, unused)

Indices are 0-based as in the reference code: step t = T-1 ... 0, the network sees the raw integer t.
Tables are float64 on the CPU and cast to float32 where used (MPS has no float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .registry import Schedule

# x0_hat = net(x_t scaled, t); conditioning is bound into the callable by the caller.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step_index_done, total_steps, x_after_step, x0_hat)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class Tables:
    """Per-step constants, each a float64 CPU tensor of length T."""

    sqrt_etas: torch.Tensor
    etas: torch.Tensor
    coef1: torch.Tensor
    coef2: torch.Tensor
    posterior_std: torch.Tensor
    kappa: float


def schedule_tables(s: Schedule) -> Tables:
    """Exponential schedule (``get_named_eta_schedule('exponential', ...)``) and posterior terms."""
    steps = s.steps
    start = min(s.min_noise_level / s.kappa, s.min_noise_level)
    increaser = math.exp(math.log(s.etas_end / start) / (steps - 1))
    power_ts = torch.linspace(0, 1, steps, dtype=torch.float64) ** s.power * (steps - 1)
    sqrt_etas = increaser**power_ts * start
    etas = sqrt_etas**2
    etas_prev = torch.cat([torch.zeros(1, dtype=torch.float64), etas[:-1]])
    alpha = etas - etas_prev
    var = s.kappa**2 * etas_prev / etas * alpha
    var_clipped = torch.cat([var[1:2], var[1:]])
    return Tables(
        sqrt_etas=sqrt_etas,
        etas=etas,
        coef1=etas_prev / etas,
        coef2=alpha / etas,
        posterior_std=torch.exp(0.5 * torch.log(var_clipped)),
        kappa=s.kappa,
    )


def _at(table: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return table[t].to(torch.float32).to(like.device)


def prior_sample(y: torch.Tensor, tab: Tables, noise: torch.Tensor) -> torch.Tensor:
    """x_T = y + kappa sqrt(eta_T) noise."""
    return y + tab.kappa * _at(tab.sqrt_etas, -1, y) * noise


def posterior_step(
    x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, tab: Tables, noise: torch.Tensor
) -> torch.Tensor:
    """One reverse step t -> t-1 (no noise is added at t = 0, but it is still drawn)."""
    mean = _at(tab.coef1, t, x_t) * x_t + _at(tab.coef2, t, x_t) * x0_hat
    return mean + float(t != 0) * _at(tab.posterior_std, t, x_t) * noise


def scale_input(x_t: torch.Tensor, t: int, tab: Tables) -> torch.Tensor:
    """Network input x_t / sqrt(kappa^2 eta_t + 1), computed as the reference does (float32)."""
    return x_t / torch.sqrt(_at(tab.etas, t, x_t) * tab.kappa**2 + 1)


def randn(shape: torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Noise from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


def sample(
    net: Denoiser,
    y: torch.Tensor,  # (B, C, h, w) latent of the LQ
    tab: Tables,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:  # (B, C, h, w) the final latent x_0
    """The full reverse chain. Noise is drawn in the reference's order: the prior, then one
    draw per step from t = T-1 down to 0 (the last is multiplied by zero)."""
    x = prior_sample(y, tab, randn(y.shape, generator, y))
    steps = len(tab.etas)
    for i, t in enumerate(reversed(range(steps))):
        tt = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
        x0_hat = net(scale_input(x, t, tab), tt)
        x = posterior_step(x, x0_hat.to(x.dtype), t, tab, randn(x.shape, generator, x))
        if callback is not None:
            callback(i + 1, steps, x, x0_hat)
    return x
