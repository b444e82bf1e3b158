"""Network definitions only (``nn.Module``), attribute names identical to the checkpoint keys.

:func:`build` is the one place a network is made from its config: on the ``meta`` device, so no
memory is spent before the weights are assigned (``restore_cli.weights.load_into``). Importing this
package (and :mod:`.config`) does not import torch; :func:`build` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import RetinaFaceConfig, SR3Config, UNetConfig, VQConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["RetinaFaceConfig", "SR3Config", "UNetConfig", "VQConfig", "build"]


def build(
    config: UNetConfig | VQConfig | SR3Config | RetinaFaceConfig, *, device: str = "meta"
) -> nn.Module:
    """The network ``config`` describes, built on ``device`` (default ``meta``: shapes only)."""
    import torch

    from .unet import UNetModelSwin
    from .vqgan import VQModel

    with torch.device(device):
        if isinstance(config, UNetConfig):
            return UNetModelSwin(config)
        if isinstance(config, VQConfig):
            return VQModel(config)
        if isinstance(config, SR3Config):
            from .sr3 import SR3UNet

            return SR3UNet(config)
        if isinstance(config, RetinaFaceConfig):
            from .retinaface import RetinaFace

            return RetinaFace(config)
    raise TypeError(f"no network for {type(config).__name__}")
