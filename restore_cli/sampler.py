"""ResShift sampling math (Yue, Wang, Loy 2023/2024), pure functions on tensors.

Notation (journal paper Eqs. 1-7; reference ``models/gaussian_diffusion.py: GaussianDiffusion``):

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

Fewer steps (ResShift ``models/respace.py: SpacedDiffusion``): a chain may visit only some trained
indices t_1 > ... > t_K. The tables are then rebuilt over the kept indices (eta_{t-1} above becomes
the eta of the next kept index, 0 after the last), the chain starts from the prior at t_1, and the
network still sees the original index. The last step's output is x0_hat.

Stochasticity L in [0, 1] (``eta`` below; DDIM's eta, not the schedule's eta_t): the jump t -> s is

    eps_hat = (x_t - x0_hat - eta_t (y - x0_hat)) / (kappa sqrt(eta_t))
    sigma   = L kappa sqrt(eta_s (eta_t - eta_s) / eta_t)
    x_s     = x0_hat + eta_s (y - x0_hat) + sqrt(kappa^2 eta_s - sigma^2) eps_hat + sigma eps

L = 1 is the posterior step above (computed in its form, so results equal the reference's);
L = 0 is deterministic: only the prior noise matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .schedule import Schedule, check_timesteps, full_timesteps

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
    return _tables(increaser**power_ts * start, s.kappa)


def respace(tab: Tables, timesteps: Sequence[int]) -> Tables:
    """The tables of a chain visiting only ``timesteps`` (trained indices, any order), indexed
    0..K-1 in ascending order of the kept indices, as ResShift ``models/respace.py:
    SpacedDiffusion`` rebuilds its ``GaussianDiffusion`` over the kept ``sqrt_etas``."""
    return _tables(tab.sqrt_etas[sorted(timesteps)], tab.kappa)


def _tables(sqrt_etas: torch.Tensor, kappa: float) -> Tables:
    """The posterior terms over ``sqrt_etas`` (``GaussianDiffusion.__init__``)."""
    etas = sqrt_etas**2
    etas_prev = torch.cat([torch.zeros(1, dtype=torch.float64), etas[:-1]])
    alpha = etas - etas_prev
    var = kappa**2 * etas_prev / etas * alpha
    # Index 0 takes index 1's variance (it is never used); a one-step chain has none to take.
    var_clipped = torch.cat([var[1:2], var[1:]]) if len(var) > 1 else var
    return Tables(
        sqrt_etas=sqrt_etas,
        etas=etas,
        coef1=etas_prev / etas,
        coef2=alpha / etas,
        posterior_std=torch.exp(0.5 * torch.log(var_clipped)),
        kappa=kappa,
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


def generalized_step(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    y: torch.Tensor,
    eta_t: float,
    eta_s: float,
    kappa: float,
    eta: float,
    noise: torch.Tensor,
) -> torch.Tensor:
    """The jump from schedule value ``eta_t`` to ``eta_s`` (< eta_t; 0 = the output) with
    stochasticity ``eta`` (the DDIM form in residual coordinates; SinSR ``models/
    gaussian_diffusion.py: ddim_sample`` writes it for eta_s = eta_{t-1})."""
    if eta_s == 0.0:
        return x0_hat
    sigma = eta * kappa * math.sqrt(eta_s * (eta_t - eta_s) / eta_t)
    eps_hat = (x_t - x0_hat - eta_t * (y - x0_hat)) / (kappa * math.sqrt(eta_t))
    x_s = x0_hat + eta_s * (y - x0_hat) + math.sqrt(max(kappa**2 * eta_s - sigma**2, 0.0)) * eps_hat
    return x_s + sigma * noise if sigma > 0 else x_s


def jump(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    y: torch.Tensor,
    k: int,
    tab: Tables,
    eta: float,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Step ``k`` of a chain over ``tab`` (to index k-1; k = 0 gives x0_hat): the reference's
    posterior step at ``eta = 1``, the generalised step otherwise."""
    if eta == 1.0:
        return posterior_step(x_t, x0_hat, k, tab, noise)
    eta_s = float(tab.etas[k - 1]) if k > 0 else 0.0
    return generalized_step(x_t, x0_hat, y, float(tab.etas[k]), eta_s, tab.kappa, eta, noise)


def scale_input(x_t: torch.Tensor, t: int, tab: Tables) -> torch.Tensor:
    """Network input x_t / sqrt(kappa^2 eta_t + 1), computed as the reference does (float32)."""
    return x_t / torch.sqrt(_at(tab.etas, t, x_t) * tab.kappa**2 + 1)


def randn(shape: torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Noise from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


def noise_draws(tab: Tables, timesteps: Sequence[int] | None = None) -> int:
    """How many noise tensors :func:`sample` draws over ``timesteps``: the prior and one per
    network call."""
    return 1 + (len(tab.etas) if timesteps is None else len(timesteps))


def draw_noise(
    generator: torch.Generator, shape: torch.Size, count: int, like: torch.Tensor
) -> list[torch.Tensor]:
    """``count`` noise tensors of ``shape`` drawn from ``generator`` one after another, as
    :func:`sample` draws them, on ``like``'s device and dtype: a chain's ``noise`` drawn ahead."""
    return [randn(shape, generator, like) for _ in range(count)]


def sample(
    net: Denoiser,
    y: torch.Tensor,  # (B, C, h, w) latent of the LQ
    tab: Tables,
    generator: torch.Generator | None,
    callback: StepCallback | None = None,
    *,
    timesteps: Sequence[int] | None = None,
    eta: float = 1.0,
    noise: Sequence[torch.Tensor] | None = None,
    early_exit: float | None = None,
) -> torch.Tensor:  # (B, C, h, w) the final latent
    """The reverse chain over ``timesteps`` (trained indices in sampling order, strictly
    decreasing; default all, T-1 ... 0) with stochasticity ``eta`` in [0, 1].

    The chain starts from the prior at the first listed index and returns the x0 prediction of
    the last. Noise is drawn in the reference's order: the prior, then one draw after every
    network call (the last is multiplied by zero). ``callback(i, K, x, x0_hat)`` after step i of K.

    ``noise``: the K + 1 tensors of ``y``'s shape to use instead of drawing from ``generator``
    (which may then be None), in that order. A batch whose images draw from generators of their
    own passes each image's draws (:func:`draw_noise`) stacked along the batch.

    ``early_exit``: stop once successive x0 predictions agree, i.e. ``|x0_k - x0_{k-1}| <=
    early_exit * |x0_{k-1}|`` (L2 norms over each image's latent), and return that prediction.
    Each image of a batch stops on its own (its result is what it alone would give; the chain
    runs on while any image has not converged). None (default) or 0 run the whole chain.
    """
    steps = len(tab.etas)
    ts = full_timesteps(steps) if timesteps is None else check_timesteps(timesteps, steps)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta (stochasticity) must be in [0, 1], not {eta}")
    if noise is not None:
        if len(noise) != len(ts) + 1 or any(n.shape != y.shape for n in noise):
            raise ValueError(f"noise must be {len(ts) + 1} tensors of shape {tuple(y.shape)}")
        drawn = iter(noise)

        def eps(like: torch.Tensor) -> torch.Tensor:
            return next(drawn).to(like)

    elif generator is None:
        raise ValueError("sample needs a generator or the noise drawn ahead")
    else:

        def eps(like: torch.Tensor, g: torch.Generator = generator) -> torch.Tensor:
            return randn(like.shape, g, like)

    if ts != full_timesteps(steps):
        tab = respace(tab, ts)
    if early_exit is not None and not (math.isfinite(early_exit) and early_exit >= 0):
        raise ValueError(f"early_exit must be a tolerance of 0 or more, not {early_exit}")
    x = prior_sample(y, tab, eps(y))
    exit_at = _EarlyExit(early_exit, x) if early_exit else None
    for i, t in enumerate(ts):
        k = len(ts) - 1 - i  # index into the (respaced) tables
        tt = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
        x0_hat = net(scale_input(x, k, tab), tt)
        x = jump(x, x0_hat.to(x.dtype), y, k, tab, eta, eps(x))
        if callback is not None:
            callback(i + 1, len(ts), x, x0_hat)
        if exit_at is not None and k > 0 and exit_at.converged(x0_hat.to(x.dtype)):
            for _ in range(k):  # the draws the rest of the chain would have made, so that a
                eps(x)  # generator shared with the next tile or image is where it would be
            return exit_at.result
    return x if exit_at is None else exit_at.finish(x)


class _EarlyExit:
    """Per image of a batch: the x0 prediction it stopped at, once two in a row agree."""

    def __init__(self, tolerance: float, like: torch.Tensor) -> None:
        self.tolerance = tolerance
        self.previous: torch.Tensor | None = None
        self.result = torch.empty_like(like)  # stopped images' predictions, the rest unset
        self.stopped = torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)

    def converged(self, x0_hat: torch.Tensor) -> bool:
        """Note this step's prediction; True once every image has stopped."""
        if self.previous is not None:
            flat, before = x0_hat.flatten(1), self.previous.flatten(1)
            agree = (flat - before).norm(dim=1) <= self.tolerance * before.norm(dim=1)
            newly = agree & ~self.stopped
            self.result[newly] = x0_hat[newly]
            self.stopped |= newly
        self.previous = x0_hat
        return bool(self.stopped.all())

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's end: images that stopped keep their prediction, the others the last state."""
        return torch.where(self.stopped.view(-1, *([1] * (x.dim() - 1))), self.result, x)
