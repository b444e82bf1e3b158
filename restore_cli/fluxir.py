"""FLUX-IR's task-model sampling: the val schedule, the 10-step (rein) loop and the distilled loops.

FLUX-IR ``Task_specitic_restoration/model/ddpm_modules/diffusion.py: GaussianDiffusion``
(``set_new_noise_schedule``, ``p_sample_loop``, ``p_sample_loop_distill``, ``ode_jump_t``). Plain
functions on tensors: the network is a callable, randomness one CPU ``torch.Generator`` per image,
progress a callback.

Notation (levels k = 0 ... T, T = 10)::

    beta_k      linear in k from linear_start (k = 1) to linear_end (k = T), float64
    alpha_k     1 - beta_k;   abar_k = prod_{i <= k} alpha_i;   abar_0 = 1
    l_k         sqrt(abar_k), the network's conditioning (a float32 per sample)
    y           the padded LQ image in [-1, 1];  eps(x, k) = net(cat[y, x], l_k)

    rein (DDIM-type) step, ``p_sample`` -> ``q_posterior``, no noise added:
        x_{k-1} = x_k / sqrt(alpha_k) - (sqrt(1 - abar_k) / sqrt(alpha_k) - sqrt(1 - abar_{k-1})) eps

    jump J(x, ks -> ke), ``ode_jump_t``, verbatim (the distilled weights were trained through it):
        a_T = l_ks,  a_0 = l_1,  D = sqrt(1 - a_T^2) a_0 / a_T - sqrt(1 - a_0^2)
        e_w = ((a_0 / a_T) n - y) / D          n ~ N(0, I), one fresh draw per jump
        e'  = (1 + w) eps(x, ks) - w e_w       w = 0.001
        J   = x / sqrt(alpha_ks) - (sqrt(1 - abar_ks) / sqrt(alpha_ks) - sqrt(1 - abar_ke)) e'

The factor on x is the single-step 1/sqrt(alpha_ks), not a textbook DDIM jump's
sqrt(abar_ke / abar_ks): kept as the authors coded and trained it. Coefficients are computed in
float64 and applied to float32 states; states are never clamped.

Batches: every sample gets its own network output and its own generator stream (the authors'
``denoise_fn(...)[0]`` and shared (1, 3, H, W) draws mixed samples of a batch), so each result
equals its batch-of-one result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

OMEGA = 0.001  # weight of the re-noised estimate e_w in the jump (``ode_jump_t``)

# net(cat[y, x] (B, 6, H, W) float32, level (B,) float32) -> eps_hat (B, 3, H, W) float32
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# trace(name, tensor): the vectors' names, "noise.i", "state.i", "eps.i", "level.i"
Trace = Callable[[str, torch.Tensor], None]
# callback(done, total): after each network evaluation
Callback = Callable[[int, int], None]


@dataclass(frozen=True)
class Tables:
    """The val schedule: ``betas[k]`` and ``alphas_cumprod[k]`` for k = 0 ... T (``betas[0] = 0``,
    ``alphas_cumprod[0] = 1``), float64."""

    betas: tuple[float, ...]
    alphas_cumprod: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.betas) - 1

    def level(self, k: int) -> float:
        """l_k = sqrt(abar_k) (the authors' ``sqrt_alphas_cumprod_prev[k]``)."""
        return math.sqrt(self.alphas_cumprod[k])

    def recip_sqrt_alpha(self, k: int) -> float:
        return 1.0 / math.sqrt(1.0 - self.betas[k])

    def eps_coef(self, k_from: int, k_to: int) -> float:
        """sqrt(1 - abar_from) / sqrt(alpha_from) - sqrt(1 - abar_to)."""
        ab = self.alphas_cumprod
        return math.sqrt(1.0 - ab[k_from]) * self.recip_sqrt_alpha(k_from) - math.sqrt(
            1.0 - ab[k_to]
        )

    def wide_coefs(self, k_from: int) -> tuple[float, float]:
        """(w_n, w_y) with e_w = w_n n - w_y y for a jump from level ``k_from``."""
        a_t, a_0 = self.level(k_from), self.level(1)
        d = math.sqrt(1.0 - a_t**2) * a_0 / a_t - math.sqrt(1.0 - a_0**2)
        return (a_0 / a_t) / d, 1.0 / d


def linear_tables(linear_start: float, linear_end: float, n_timestep: int) -> Tables:
    """``make_beta_schedule('linear', ...)``: ``np.linspace(start, end, n)`` in float64."""
    if n_timestep < 2:
        raise ValueError("a linear schedule needs at least 2 steps")
    step = (linear_end - linear_start) / (n_timestep - 1)
    betas = [linear_start + i * step for i in range(n_timestep - 1)] + [linear_end]
    ab, prod = [1.0], 1.0
    for beta in betas:
        prod *= 1.0 - beta
        ab.append(prod)
    return Tables((0.0, *betas), tuple(ab))


class _Noise:
    """Draws (B, 3, H, W) float32 noise: sample b from its own CPU generator, then to ``device``."""

    def __init__(self, generators: Sequence[torch.Generator], shape: torch.Size, device: torch.device,
                 trace: Trace | None) -> None:  # fmt: skip
        self.generators, self.shape, self.device, self.trace = generators, shape, device, trace
        self.count = 0

    def draw(self) -> torch.Tensor:
        one = (1, *self.shape[1:])
        parts = [torch.randn(one, generator=g, dtype=torch.float32) for g in self.generators]
        n = torch.cat(parts).to(self.device)
        if self.trace is not None:
            self.trace(f"noise.{self.count}", n)
        self.count += 1
        return n


def _check(y: torch.Tensor, generators: Sequence[torch.Generator]) -> None:
    assert y.dim() == 4 and y.shape[1] == 3 and y.dtype == torch.float32
    assert len(generators) == y.shape[0], "one generator per image"


def _eps(net: Denoiser, y: torch.Tensor, x: torch.Tensor, level: float, i: int,
         trace: Trace | None) -> torch.Tensor:  # fmt: skip
    lv = torch.full((x.shape[0],), level, dtype=torch.float32, device=x.device)
    e = net(torch.cat([y, x], dim=1), lv)
    if trace is not None:
        trace(f"level.{i}", lv[:, None])
        trace(f"eps.{i}", e)
    return e


def sample_rein(
    net: Denoiser,
    y: torch.Tensor,  # (B, 3, H, W) float32 in [-1, 1], padded
    tables: Tables,
    generators: Sequence[torch.Generator],
    *,
    trace: Trace | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:  # (B, 3, H, W) float32 x_0, unclamped
    """``p_sample_loop``: x_T = z, then T DDIM-type steps k = T ... 1."""
    _check(y, generators)
    x = _Noise(generators, y.shape, y.device, trace).draw()
    if trace is not None:
        trace("state.0", x)
    t = tables.steps
    for i, k in enumerate(range(t, 0, -1), start=1):
        e = _eps(net, y, x, tables.level(k), i, trace)
        x = x * tables.recip_sqrt_alpha(k) - tables.eps_coef(k, k - 1) * e
        if trace is not None:
            trace(f"state.{i}", x)
        if callback is not None:
            callback(i, t)
    return x


def sample_distilled(
    net: Denoiser,
    y: torch.Tensor,  # (B, 3, H, W) float32 in [-1, 1], padded
    tables: Tables,
    generators: Sequence[torch.Generator],
    jumps: Sequence[tuple[int, int]],
    *,
    start_index: int | None,
    trace: Trace | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:  # (B, 3, H, W) float32 x_0, unclamped
    """``p_sample_loop_distill``: a start state, then one jump per (k_from, k_to) of ``jumps``.

    The authors' loop always draws n_1 first. ``start_index`` s: x = sqrt(abar_s) y +
    sqrt(1 - abar_s) n_1 (Raindrop 8, UnderwaterB 7); None: n_1 is thrown away and x = z, a second
    draw (LOLv1). The first jump's level may differ from s (Raindrop's 2-step loop: 9).
    """
    _check(y, generators)
    noise = _Noise(generators, y.shape, y.device, trace)
    n1 = noise.draw()
    if start_index is None:
        x = noise.draw()
    else:
        ab = tables.alphas_cumprod[start_index]
        x = math.sqrt(ab) * y + math.sqrt(1.0 - ab) * n1
    if trace is not None:
        trace("state.0", x)
    for i, (k_from, k_to) in enumerate(jumps, start=1):
        e = _eps(net, y, x, tables.level(k_from), i, trace)
        x = jump(x, e, noise.draw(), y, tables, k_from, k_to)
        if trace is not None:
            trace(f"state.{i}", x)
        if callback is not None:
            callback(i, len(jumps))
    return x


def jump(
    x: torch.Tensor,
    eps: torch.Tensor,
    n: torch.Tensor,
    y: torch.Tensor,
    tables: Tables,
    k_from: int,
    k_to: int,
    omega: float = OMEGA,
) -> torch.Tensor:
    """J(x, k_from -> k_to) of ``ode_jump_t`` (see the notation above), for a given draw ``n``."""
    w_n, w_y = tables.wide_coefs(k_from)
    e_wide = w_n * n - w_y * y
    e_mix = (1.0 + omega) * eps - omega * e_wide
    return x * tables.recip_sqrt_alpha(k_from) - tables.eps_coef(k_from, k_to) * e_mix
