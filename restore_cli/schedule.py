"""The eta schedule of a ResShift model, as ``weights.toml`` describes it, and the lists of trained
indices a chain may visit (no torch here).

The sampler (:mod:`restore_cli.sampler`) turns it into per-step tables; the reference builds the
same numbers in ``models/gaussian_diffusion.py: get_named_eta_schedule('exponential', ...)``.
A timestep list names trained integer indices in sampling order (strictly decreasing); the chain
starts from the prior at the first and outputs the x0 prediction of the last.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Exponential eta schedule: ``steps`` trained indices, ``eta`` from ``min_noise_level`` (over
    ``kappa``) up to ``etas_end``, spaced as ``t ** power``."""

    steps: int
    kappa: float
    power: float
    min_noise_level: float
    etas_end: float


# -- which trained indices a chain visits -----------------------------------------------------


def full_timesteps(steps: int) -> tuple[int, ...]:
    """Every trained index in sampling order: ``steps - 1, ..., 0``."""
    return tuple(range(steps - 1, -1, -1))


def space_timesteps(steps: int, count: int) -> tuple[int, ...]:
    """``count`` of ``steps`` trained indices, uniformly spaced, in sampling order: the reference's
    rule (ResShift ``models/respace.py: space_timesteps``), e.g. 15 steps, 4 -> (11, 7, 3, 0)."""
    if not 1 <= count <= steps:
        raise ValueError(f"cannot take {count} of {steps} trained timesteps (1..{steps})")
    return tuple(sorted({int((steps / count) * k) for k in range(count)}, reverse=True))


def check_timesteps(timesteps: object, steps: int) -> tuple[int, ...]:
    """``timesteps`` as a tuple if it is a non-empty, strictly decreasing list of trained indices
    (integers in ``0 .. steps - 1``); ValueError saying what is wrong otherwise."""
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise ValueError(f"timesteps must be a list of integers, not {timesteps!r}")
    ts = tuple(timesteps)  # type: ignore[call-overload]
    if not ts:
        raise ValueError("timesteps must not be empty")
    try:
        if any(isinstance(t, bool) for t in ts):
            raise TypeError
        ts = tuple(operator.index(t) for t in ts)
    except TypeError:
        raise ValueError(f"timesteps must be integers (trained indices), not {list(ts)}") from None
    out = [t for t in ts if not 0 <= t < steps]
    if out:
        raise ValueError(f"timestep {out[0]} is not a trained index (0..{steps - 1})")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly decreasing (sampling order), not {list(ts)}")
    return ts
