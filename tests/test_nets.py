"""Architecture: state-dict keys and shapes equal the released checkpoints' (reference
``models/unet.py``, ``ldm/models/autoencoder.py``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from restore_cli import nets
from restore_cli.nets.swin import reference_shift_mask, relative_position_index
from restore_cli.registry import default_registry

from .conftest import DATA
from .reference_fill import fill_kinds

CONFIGS = {
    "realsr-v1": "realsr_swinunet_realesrgan256",
    "realsr-v2": "realsr_swinunet_realesrgan256",
    "realsr-v3": "realsr_swinunet_realesrgan256_journal",
    "bicsr": "bicx4_swinunet_lpips",
    "inpaint-imagenet": "inpaint_lama256_imagenet",
    "inpaint-face": "inpaint_lama256_face",
    "faceir": "faceir_gfpgan512_lpips",
}


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def reference_keys(config: str, part: str) -> dict[str, list[int]]:
    return json.loads((DATA / "keys" / f"{config}.{part}.json").read_text())


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_keys_and_shapes_match_released_checkpoints(model: str) -> None:
    spec = default_registry().get(model)
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    assert shapes(unet) == reference_keys(CONFIGS[model], "unet")
    assert shapes(vq) == reference_keys(CONFIGS[model], "autoencoder")


def test_x2_config_without_checkpoint_also_matches() -> None:
    """The x2 config (lq_size 128: a 1-stage extractor) shows the architecture is general."""
    cfg = dataclasses.replace(default_registry().get("realsr-v3").unet, lq_size=128)
    unet = nets.build(cfg)
    assert shapes(unet) == reference_keys("realsr_realesrgan256_x2", "unet")


@pytest.mark.parametrize(
    "model, vectors",
    [("realsr-v3", "realsr_v3"), ("inpaint-imagenet", "inpaint_imagenet"), ("faceir", "faceir")],
)
def test_fill_kinds_agree_with_reference(model: str, vectors: str) -> None:
    """Our classification of keys (norm / vec / nd / buffer) is the reference fill's."""
    spec = default_registry().get(model)
    unet, vq = nets.build(spec.unet), nets.build(spec.autoencoder.config)
    for module, part in ((unet, "unet"), (vq, "autoencoder")):
        expected = json.loads((DATA / "fill-kinds" / f"{vectors}.{part}.json").read_text())
        assert fill_kinds(module) == expected


def test_buffers_are_real_when_built_on_meta() -> None:
    spec = default_registry().get("realsr-v3")
    unet = nets.build(spec.unet)
    index = unet.state_dict()["input_blocks.1.1.blocks.0.attn.relative_position_index"]
    assert index.device.type == "cpu"
    assert torch.equal(index, relative_position_index(8))
    assert index.max().item() == 224 and index[0, 0].item() == 112  # (2*8-1)^2 - 1, centre


def test_reference_shift_mask_only_masks_bottom_window_row_by_column_halves() -> None:
    mask = reference_shift_mask(4, 3, 8, 4).view(4, 3, 64, 64)
    assert mask[:3].abs().sum() == 0  # upper window rows: no mask at all
    col = torch.arange(64) % 8
    for win in range(3):  # every window of the bottom row, the right-most one included
        expected = ((col[:, None] >= 4) != (col[None, :] >= 4)).float() * -100.0
        assert torch.equal(mask[3, win], expected)


def test_registry_numel_matches_the_networks() -> None:
    """`restore models list` shows sizes from weights.toml's `numel` without building networks."""
    for spec in default_registry().models.values():
        built = (nets.build(spec.unet), nets.build(spec.autoencoder.config))
        assert spec.numel == sum(t.numel() for m in built for t in m.state_dict().values())
