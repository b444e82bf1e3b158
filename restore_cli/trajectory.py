"""Schedule search: which K of a model's trained timesteps to visit, chosen by cost.

For each candidate list of K trained indices the deterministic chain (stochasticity 0, the same
prior noise) is run and compared with the full chain's result for the same images: the latent's
root-mean-square deviation and the PSNR of the decoded image, averaged over the images, with the
network calls and seconds each costs. All subsets are tried when they fit the budget; otherwise a
dynamic programme over the chain picks the ones to try. Its cost is additive per jump, as in
FLUX-IR (Zhu et al., "Learning Efficient and Effective Trajectories for Differential
Equation-Based Image Restoration", TPAMI 2025): from the full chain's recorded states, the
deviation of starting at t (prior there instead of the chain's state), of jumping from t to s in
one step, and of stopping at t (its x0 prediction instead of the final latent). These cost no
network calls.

The core (:func:`search`) takes plain callables (:class:`Probe`), so it runs without networks;
:func:`probes` builds them from a loaded :class:`~restore_cli.pipeline.Restorer`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from . import sampler
from .device import bicubic, make_generator
from .schedule import full_timesteps, space_timesteps

Run = Callable[[tuple[int, ...]], torch.Tensor]  # timesteps -> final latent (stochasticity 0)
Decode = Callable[[torch.Tensor], torch.Tensor]  # latent -> (1, 3, H, W) image in [-1, 1]
Progress = Callable[[int, int], None]  # (chains done, chains to run)


@dataclass(frozen=True)
class Chain:
    """The full deterministic chain of one image: ``x[t]`` the state before the network call at
    trained index t, ``x0[t]`` that call's prediction, ``final`` the result."""

    tab: sampler.Tables
    y: torch.Tensor  # (1, C, h, w) latent of the LQ
    noise: torch.Tensor  # the prior noise, (1, C, h, w)
    x: Mapping[int, torch.Tensor]
    x0: Mapping[int, torch.Tensor]
    final: torch.Tensor


@dataclass(frozen=True)
class Probe:
    """One image of the search. ``run(timesteps)`` gives the final latent of the chain over
    ``timesteps`` with stochasticity 0 and this image's fixed prior noise; ``decode`` turns a
    latent into the image (PSNR is left out without it); ``chain`` records the full chain, for the
    dynamic programme (needed only when the subsets do not fit the budget)."""

    run: Run
    decode: Decode | None = None
    chain: Callable[[], Chain] | None = None


@dataclass(frozen=True)
class Candidate:
    timesteps: tuple[int, ...]
    latent_l2: float  # RMS of (latent - full chain's latent), mean over the images
    psnr: float | None  # dB, decoded vs the full chain's decoded image (inf: identical), mean
    calls: int  # network calls per image
    seconds: float  # chain seconds per image (decoding not counted)
    estimate: float | None = None  # the dynamic programme's additive cost, where it chose it


@dataclass(frozen=True)
class SearchResult:
    trained: int  # the model's trained steps T
    steps: int  # K
    method: Literal["exhaustive", "dynamic programme"]
    subsets: int  # all lists of K trained indices, C(T, K)
    full: Candidate  # the full chain (the reference: deviation 0)
    ranked: tuple[Candidate, ...] = field(default=())  # best first

    @property
    def best(self) -> Candidate:
        return self.ranked[0]


def search(
    probes: Sequence[Probe],
    trained: int,
    steps: int,
    *,
    budget: int = 100,
    progress: Progress | None = None,
) -> SearchResult:
    """Rank lists of ``steps`` of ``trained`` timesteps by how far their result lands from the
    full chain's. ``budget``: the chains tried per image besides the full one; every subset is
    tried when they fit, else the ``budget`` best by the additive jump cost (and the reference's
    uniform rule, if it is not among them)."""
    if not probes:
        raise ValueError("the search needs at least one probe image")
    if not 1 <= steps <= trained:
        raise ValueError(f"cannot take {steps} of {trained} trained timesteps (1..{trained})")
    if budget < 1:
        raise ValueError(f"the budget must be at least 1 chain, not {budget}")
    subsets = math.comb(trained, steps)
    full = full_timesteps(trained)
    if subsets <= budget:
        method: Literal["exhaustive", "dynamic programme"] = "exhaustive"
        lists = list(itertools.combinations(full, steps))
        estimates: dict[tuple[int, ...], float] = {}
        refs = [_timed(p.run, full) for p in probes]
    else:
        method = "dynamic programme"
        if any(p.chain is None for p in probes):
            raise ValueError(
                f"{subsets} subsets exceed the budget of {budget} and a probe records no chain"
            )
        chains = [_timed(lambda _ts, p=p: p.chain(), full) for p in probes]  # type: ignore[misc]
        refs = [(c.final, s) for c, s in chains]
        costs = mean_costs([jump_costs(c) for c, _s in chains])
        estimates = {ts: c for c, ts in best_paths(costs, trained, steps, budget)}
        uniform = space_timesteps(trained, steps)  # always show where the reference's rule lands
        estimates.setdefault(uniform, path_cost(costs, uniform))
        lists = sorted(estimates, key=lambda ts: (estimates[ts], ts))
    images = [
        None if p.decode is None else p.decode(x) for p, (x, _s) in zip(probes, refs, strict=True)
    ]
    same = math.inf if all(im is not None for im in images) else None
    full_c = Candidate(full, 0.0, same, trained, sum(s for _x, s in refs) / len(probes))
    total = len(lists) * len(probes)
    ranked = []
    for i, ts in enumerate(lists):
        ranked.append(_measure(probes, [x for x, _s in refs], images, ts, estimates.get(ts)))
        if progress is not None:
            progress((i + 1) * len(probes), total)
    ranked.sort(key=_rank_key)
    return SearchResult(trained, steps, method, subsets, full_c, tuple(ranked))


def _measure(
    probes: Sequence[Probe],
    refs: Sequence[torch.Tensor],
    images: Sequence[torch.Tensor | None],
    ts: tuple[int, ...],
    estimate: float | None,
) -> Candidate:
    """One list's deviation from the full chain, averaged over the probes."""
    devs, dbs, seconds = [], [], 0.0
    for p, ref, image in zip(probes, refs, images, strict=True):
        latent, s = _timed(p.run, ts)
        seconds += s
        devs.append(rms(latent - ref))
        if p.decode is not None and image is not None:
            dbs.append(psnr(p.decode(latent), image))
    n = len(probes)
    db = sum(dbs) / n if len(dbs) == n else None
    return Candidate(ts, sum(devs) / n, db, len(ts), seconds / n, estimate)


def _rank_key(c: Candidate) -> tuple[float, float, tuple[int, ...]]:
    return (c.latent_l2, -(c.psnr if c.psnr is not None else 0.0), c.timesteps)


def _timed(run: Callable[[tuple[int, ...]], object], ts: tuple[int, ...]) -> tuple:
    t0 = time.perf_counter()
    out = run(ts)
    return out, time.perf_counter() - t0


def rms(x: torch.Tensor) -> float:
    """Root mean square (the L2 norm over the square root of the element count)."""
    return float(x.double().pow(2).mean().sqrt())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2); inf where they are identical."""
    mse = float((a.double() - b.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


# -- the additive cost and its dynamic programme ------------------------------------------------


@dataclass(frozen=True)
class JumpCosts:
    """RMS deviations from the full chain: ``start[t]`` of the prior at t against the chain's
    state there, ``jump[t, s]`` of one step t -> s from the chain's state at t against its state
    at s, ``end[t]`` of the x0 prediction at t against the final latent."""

    start: Mapping[int, float]
    jump: Mapping[tuple[int, int], float]
    end: Mapping[int, float]


def jump_costs(chain: Chain) -> JumpCosts:
    """The per-jump costs of one image's full chain (no network calls: the chain's own x0
    predictions drive each jump, with stochasticity 0)."""
    tab, ts = chain.tab, sorted(chain.x)
    kappa, etas = tab.kappa, [float(e) for e in tab.etas]
    start = {}
    for t in ts:
        prior = chain.y + kappa * float(tab.sqrt_etas[t]) * chain.noise
        start[t] = rms(prior - chain.x[t])
    jump = {}
    for t, s in itertools.permutations(ts, 2):
        if s < t:
            x_s = sampler.generalized_step(
                chain.x[t], chain.x0[t], chain.y, etas[t], etas[s], kappa, 0.0, chain.noise
            )
            jump[t, s] = rms(x_s - chain.x[s])
    end = {t: rms(chain.x0[t] - chain.final) for t in ts}
    return JumpCosts(start, jump, end)


def mean_costs(costs: Sequence[JumpCosts]) -> JumpCosts:
    """The costs averaged over images."""
    n = len(costs)

    def avg(name: str) -> dict:
        tables = [getattr(c, name) for c in costs]
        return {k: sum(t[k] for t in tables) / n for k in tables[0]}

    return JumpCosts(avg("start"), avg("jump"), avg("end"))


def path_cost(costs: JumpCosts, ts: Sequence[int]) -> float:
    """start + the jumps + end of the list ``ts`` (sampling order)."""
    inner = sum(costs.jump[a, b] for a, b in itertools.pairwise(ts))
    return costs.start[ts[0]] + inner + costs.end[ts[-1]]


def best_paths(
    costs: JumpCosts, trained: int, steps: int, n: int
) -> list[tuple[float, tuple[int, ...]]]:
    """The ``n`` cheapest lists of ``steps`` trained indices under :func:`path_cost`, cheapest
    first: a dynamic programme over (index, visits so far) that keeps the ``n`` best partial lists
    per state, which is exact for the ``n`` best of an additive cost."""
    best: dict[tuple[int, int], list[tuple[float, tuple[int, ...]]]] = {}
    for t in range(trained - 1, -1, -1):  # every predecessor of t (a larger index) comes first
        best[t, 1] = [(costs.start[t], (t,))]
        for j in range(2, steps + 1):
            options = [
                (c + costs.jump[u, t], path + (t,))
                for u in range(t + 1, trained)
                for c, path in best.get((u, j - 1), ())
            ]
            best[t, j] = heapq.nsmallest(n, options)
    finals = [(c + costs.end[t], p) for t in range(trained) for c, p in best.get((t, steps), ())]
    return heapq.nsmallest(n, finals)


# -- probes from a loaded model -------------------------------------------------------------------


class RestorerLike(Protocol):
    tables: sampler.Tables

    def prepare(self, lq: torch.Tensor, mask: torch.Tensor | None = None) -> object: ...
    def denoiser(self, prepared: object) -> sampler.Denoiser: ...
    def decode(self, x: torch.Tensor, prepared: object) -> torch.Tensor: ...


def probes(
    r: RestorerLike,
    images: Sequence[np.ndarray],  # each (H, W, 3) float in [0, 1], as Restorer.process takes
    *,
    seed: int = 12345,
    input_size: int | None = None,  # face models: resized to this square first
) -> list[Probe]:
    """One :class:`Probe` per image of a loaded model (``r.prepare``, ``r.denoiser``, ``r.decode``
    and ``r.tables``), each with the prior noise of ``seed``. Images run untiled."""
    out = []
    for pixels in images:
        img = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        lq = img.permute(2, 0, 1)[None] * 2 - 1  # (1, 3, H, W) in [-1, 1]
        if input_size and lq.shape[-2:] != (input_size, input_size):
            lq = bicubic(lq, size=(input_size, input_size), antialias=True)
        with torch.inference_mode():
            prepared = r.prepare(lq)
        out.append(_probe(r, prepared, seed))
    return out


def _probe(r: RestorerLike, prepared: object, seed: int) -> Probe:
    net, y = r.denoiser(prepared), prepared.z_y  # type: ignore[attr-defined]

    @torch.inference_mode()
    def run(ts: tuple[int, ...]) -> torch.Tensor:
        return sampler.sample(net, y, r.tables, make_generator(seed), timesteps=ts, eta=0.0)

    @torch.inference_mode()
    def decode(x: torch.Tensor) -> torch.Tensor:
        return r.decode(x, prepared)

    @torch.inference_mode()
    def chain() -> Chain:
        return record_chain(net, y, r.tables, seed)

    return Probe(run, decode, chain)


def record_chain(net: sampler.Denoiser, y: torch.Tensor, tab: sampler.Tables, seed: int) -> Chain:
    """The full chain with stochasticity 0 and the prior noise of ``seed``, step by step."""
    noise = sampler.randn(y.shape, make_generator(seed), y)  # the chain's first draw
    ts = full_timesteps(len(tab.etas))
    x = {ts[0]: sampler.prior_sample(y, tab, noise)}
    x0: dict[int, torch.Tensor] = {}

    def keep(i: int, n: int, x_after: torch.Tensor, x0_hat: torch.Tensor) -> None:
        x0[ts[i - 1]] = x0_hat.clone()
        if i < n:
            x[ts[i]] = x_after.clone()

    final = sampler.sample(net, y, tab, make_generator(seed), keep, eta=0.0)
    return Chain(tab, y, noise, x, x0, final)
