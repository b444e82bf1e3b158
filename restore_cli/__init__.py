"""restore: photo restoration with ResShift (residual-shifting diffusion, few steps).

import restore_cli
r = restore_cli.load("realsr-v3")            # or checkpoint=/autoencoder= local files
out = r(image, seed=12345)                   # PIL.Image in, PIL.Image out
rec = restore_cli.restore_file(r, "in.jpg", "out.png")  # files, as the CLI: a --json record
f = restore_cli.load("lowlight-lolv1", steps=2)   # FLUX-IR (after `restore models add`): FluxRestorer

The names below are imported on first use, so ``import restore_cli`` (and the command line's
``--help``) does not pay for torch, and the console script's start-up guard (``_entry``) is in
place within a few milliseconds of Python's own start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import RestoreError

if TYPE_CHECKING:
    from .batch import restore_file
    from .facephoto import FacePhotoRestorer
    from .fluxir_pipeline import FluxRestorer
    from .loader import load
    from .pipeline import Restorer
    from .request import DEFAULT_SEED, ColorFix, Request

_LAZY = {
    "DEFAULT_SEED": "request",
    "ColorFix": "request",
    "Request": "request",
    "Restorer": "pipeline",
    "FluxRestorer": "fluxir_pipeline",
    "FacePhotoRestorer": "facephoto",
    "load": "loader",
    "restore_file": "batch",
}

__all__ = [
    "DEFAULT_SEED",
    "ColorFix",
    "FacePhotoRestorer",
    "FluxRestorer",
    "Request",
    "RestoreError",
    "Restorer",
    "__version__",
    "load",
    "restore_file",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
