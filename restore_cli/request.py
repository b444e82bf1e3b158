"""What one restoration asks for, beyond the model and the image: a frozen, typed request.

The command line builds one :class:`Request` from its options, the Python API from its keyword
arguments; ``batch``, ``restore_file`` and :class:`~restore_cli.pipeline.Restorer` all take it, so
every path reads the same fields and validation happens once, here. No torch here.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from enum import Enum

from .errors import UsageError

DEFAULT_SEED = 12345  # the reference's default seed (``inference_resshift.py --seed``)
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS)


class ColorFix(str, Enum):
    """Optional colour correction toward the input (:mod:`restore_cli.colorfix`)."""

    NONE = "none"
    WAVELET = "wavelet"
    ADAIN = "adain"


@dataclass(frozen=True)
class Request:
    """One restoration's settings.

    ``tile``: tile side in input pixels; ``None`` chooses from the device's free memory, 0 never
    tiles (see :func:`restore_cli.tiling.resolve`). ``tile_overlap``: overlap in input pixels
    (default tile/8, at least 8). ``scale``: resize the model's output to ``scale`` x the input
    (``None``: the model's own scale). ``vae_tile``: the autoencoder's tile in latent pixels
    (``None``: 128, grown by up to 1/8 where that saves a row of tiles, see
    :func:`restore_cli.tiling.autoencoder_tiling`; 0: never).
    ``batch_size``: run up to this many tiles (and same-size images of a folder) through the
    networks at once; every image keeps its own generator, so results equal batch 1's (bit for
    bit on the CPU; up to float rounding on a GPU, see :meth:`Restorer.run_batch`).
    ``early_exit``: stop each image's chain once two successive x0 predictions differ by at most
    this fraction (relative L2 over the latent) and use that prediction; None runs every step
    (see :func:`restore_cli.sampler.sample`).
    """

    seed: int = DEFAULT_SEED
    tile: int | None = None
    tile_overlap: int | None = None
    color_fix: ColorFix = ColorFix.NONE
    scale: float | None = None
    vae_tile: int | None = None
    steps: int | None = None  # run this many of the model's trained timesteps ...
    timesteps: tuple[int, ...] | None = None  # ... or exactly these, in sampling order
    eta: float = 1.0  # stochasticity: 1 = the reference's posterior, 0 = deterministic
    batch_size: int = 1  # tiles / same-size images through the networks at once
    early_exit: float | None = None  # stop once successive x0 predictions agree this closely

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "color_fix", ColorFix(self.color_fix))
        except ValueError:
            known = ", ".join(c.value for c in ColorFix)
            raise UsageError(
                f"unknown colour fix {self.color_fix!r}", f"use one of {known}", option="color_fix"
            ) from None
        for option, what, hint in (
            ("tile", "tile", "use 0 (never tile) or a side in pixels"),
            ("tile_overlap", "tile overlap", "use 0 or more pixels"),
            ("vae_tile", "autoencoder tile", "use 0 (never tile) or a side in latent pixels"),
        ):
            value = getattr(self, option)
            if value is not None and value < 0:
                raise UsageError(f"{what} {value} is negative", hint, option=option)
        if self.tile and self.tile_overlap is not None and self.tile_overlap >= self.tile:
            raise UsageError(
                f"tile overlap {self.tile_overlap} is not smaller than the tile {self.tile}",
                "e.g. a 256-pixel tile with a 32-pixel overlap",
                option="tile_overlap",
            )
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if not (math.isfinite(self.eta) and 0 <= self.eta <= 1):
            raise UsageError(
                f"eta {self.eta:g} is outside [0, 1]",
                "e.g. 0 for a deterministic chain",
                option="eta",
            )
        try:
            object.__setattr__(self, "batch_size", operator.index(self.batch_size))
        except TypeError:
            raise UsageError(
                f"batch size {self.batch_size!r} is not a whole number", "e.g. 4",
                option="batch_size",
            ) from None  # fmt: skip
        if self.batch_size < 1:
            raise UsageError(
                f"batch size {self.batch_size} must be at least 1",
                "e.g. 4 (1 = one tile or image at a time)",
                option="batch_size",
            )
        if self.early_exit is not None and not (
            math.isfinite(self.early_exit) and self.early_exit >= 0
        ):
            raise UsageError(
                f"early-exit tolerance {self.early_exit:g} is not 0 or more",
                "e.g. 0.01 (stop once successive predictions differ by under 1 %)",
                option="early_exit",
            )
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"steps {self.steps} must be at least 1", "e.g. 4", option="steps")
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise UsageError(
                f"scale must be > 0, not {self.scale:g}",
                "e.g. 2 for twice the input's size",
                option="scale",
            )
