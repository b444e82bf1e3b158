"""restore: photo restoration with ResShift (residual-shifting diffusion, few steps).

import restore_cli
r = restore_cli.load("realsr-v3")            # or checkpoint=/autoencoder= local files
out = r(image, seed=12345)                   # PIL.Image in, PIL.Image out
rec = restore_cli.restore_file(r, "in.jpg", "out.png")  # files, as the CLI: a --json record
"""

from ._version import __version__
from .batch import restore_file
from .errors import RestoreError
from .loader import load
from .pipeline import Restorer

__all__ = ["Restorer", "RestoreError", "__version__", "load", "restore_file"]
