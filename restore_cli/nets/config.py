"""Architecture hyper-parameters of the networks, as frozen dataclasses (filled from ``weights.toml``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class UNetConfig:
    """``UNetModelSwin`` hyper-parameters (ResShift ``models/unet.py: UNetModelSwin.__init__``)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    attention_resolutions: tuple[int, ...]
    image_size: int
    lq_size: int
    cond_mask: bool = False
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: int = 4

    @property
    def latent_multiple(self) -> int:
        """Runtime latent sides must be multiples of this (one window at the deepest level)."""
        return self.window_size * 2 ** (len(self.channel_mult) - 1)

    @property
    def extractor_stages(self) -> int:
        """Strided stages of the LQ feature extractor (0: LQ concatenated directly)."""
        return int(round(math.log2(self.lq_size / self.image_size)))


@dataclass(frozen=True)
class VQConfig:
    """``VQModelTorch`` hyper-parameters (ResShift ``ldm/models/autoencoder.py: VQModelTorch``)."""

    embed_dim: int
    n_embed: int
    z_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    in_channels: int = 3
    out_ch: int = 3

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class SR3Config:
    """SR3-style conditional UNet of FLUX-IR's task models (FLUX-IR
    ``Task_specitic_restoration/model/ddpm_modules/unet.py: UNet.__init__``, argument names kept).

    ``image_size`` only decides where attention goes (a level whose running resolution is in
    ``attn_res``); the network runs on any size that is a multiple of :attr:`multiple`.
    ``var_conv``: the unused second head is built (so a strict load accepts its keys).
    """

    inner_channel: int
    channel_mults: tuple[int, ...]
    attn_res: tuple[int, ...]
    res_blocks: int
    image_size: int
    var_conv: bool
    in_channel: int = 6
    out_channel: int = 3
    norm_groups: int = 32

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (one pixel after every downsampling)."""
        return 2 ** (len(self.channel_mults) - 1)


@dataclass(frozen=True)
class RetinaFaceConfig:
    """RetinaFace detector (facexlib ``detection/retinaface.py: RetinaFace``; ``cfg_re50`` /
    ``cfg_mnet`` of ``detection/__init__.py``). ``backbone``: ``resnet50`` or ``mobile0.25``."""

    backbone: str

    def __post_init__(self) -> None:
        if self.backbone not in ("resnet50", "mobile0.25"):
            raise ValueError(f"unknown RetinaFace backbone {self.backbone!r}")

    @property
    def backbone_channels(self) -> tuple[int, int, int]:
        """Channels of the backbone maps at strides 8, 16, 32 (the FPN inputs)."""
        return (512, 1024, 2048) if self.backbone == "resnet50" else (64, 128, 256)

    @property
    def fpn_channels(self) -> int:
        return 256 if self.backbone == "resnet50" else 64
