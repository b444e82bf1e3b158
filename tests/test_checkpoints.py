"""Checkpoint formats: safetensors, the authors' .pth layouts, strict errors, no pickled code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from restore_cli import nets
from restore_cli.errors import WeightsError
from restore_cli.weights.checkpoints import convert_to_safetensors, load_into, read_state_dict

from .reference_fill import reference_state_dict


@pytest.fixture(scope="module")
def tiny(registry):
    spec = registry.get("tiny-sr")
    unet = nets.build(spec.unet)
    full = {k: v.clone() for k, v in reference_state_dict(unet).items()}
    model = nets.build(spec.unet, device="cpu")
    load_into(model, full, "reference")
    full.update({k: v for k, v in model.state_dict().items() if k not in full})  # with buffers
    return spec, full


def fresh(spec) -> torch.nn.Module:
    return nets.build(spec.unet)


def assert_loads_same(spec, state_file: Path, full: dict[str, torch.Tensor]) -> None:
    model = fresh(spec)
    load_into(model, read_state_dict(state_file), str(state_file))
    for key, value in model.state_dict().items():
        assert torch.equal(value, full[key]), key


@pytest.mark.parametrize(
    "layout",
    ["plain", "state_dict", "module.", "_orig_mod.", "module._orig_mod.", "no-buffers"],
)
def test_pth_layouts_load(tmp_path: Path, tiny, layout: str) -> None:
    spec, full = tiny
    state = dict(full)
    if layout == "no-buffers":
        state = {k: v for k, v in state.items() if not k.endswith(("attn_mask", "position_index"))}
    elif layout.endswith("."):
        state = {layout + k: v for k, v in state.items()}
    obj = {"state_dict": state, "step": 3} if layout == "state_dict" else state
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert_loads_same(spec, path, full)


def test_safetensors_and_conversion_round_trip(tmp_path: Path, tiny) -> None:
    spec, full = tiny
    pth = tmp_path / "a.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in full.items()}}, pth)
    out = convert_to_safetensors(pth, tmp_path / "a.safetensors")
    assert out.read_bytes()[8:9] == b"{"
    assert_loads_same(spec, out, full)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_strict_error_lists_missing_unexpected_and_misshaped(tmp_path: Path, tiny) -> None:
    spec, full = tiny
    state = dict(full)
    del state["out.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError) as info:
        load_into(fresh(spec), read_state_dict(path), str(path))
    msg = str(info.value)
    assert "1 missing: out.2.bias" in msg
    assert "1 unexpected: extra.weight" in msg
    assert "time_embed.0.weight (3, 3) != (128, 32)" in msg
    assert str(path) in msg


def test_wrong_model_checkpoint_is_a_clear_error(tmp_path: Path, registry) -> None:
    vq = nets.build(registry.get("tiny-sr").autoencoder.config)
    path = tmp_path / "vq.safetensors"
    save_file(reference_state_dict(vq), str(path))
    with pytest.raises(WeightsError, match="does not fit the architecture"):
        load_into(fresh(registry.get("tiny-sr")), read_state_dict(path), "unet")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_garbage_files_are_weights_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        read_state_dict(path)


def test_truncated_safetensors_is_a_weights_error(tmp_path: Path, tiny) -> None:
    _spec, full = tiny
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in full.items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError):
        read_state_dict(path)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "payload": Boom()}, path)
    with pytest.raises(WeightsError):
        read_state_dict(path)
    assert not (tmp_path / "pwned").exists()
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(WeightsError):
        read_state_dict(legacy)
    assert not (tmp_path / "pwned").exists()
