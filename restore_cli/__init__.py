"""restore: photo restoration with ResShift (residual-shifting diffusion, few steps)."""

from ._version import __version__

__all__ = ["__version__"]
