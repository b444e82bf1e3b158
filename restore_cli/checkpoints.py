"""Reading checkpoints safely and loading them strictly into modules.

* ``.safetensors`` is read directly; the authors' ``.pth`` only with ``torch.load(weights_only=True)``
  (no pickled code runs).
* The official layouts are normalised: an optional ``state_dict`` wrapper, ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes, present or absent buffers.
* Loading is strict: a :class:`WeightsError` lists missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import WeightsError

# Buffers the modules compute themselves; a checkpoint may carry them or not (spec §2.1, quirk 3).
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` file, with wrappers and prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found", "check the path")
    try:
        if _is_safetensors(path):
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: not a readable checkpoint ({first[:200]})",
            "pass a .safetensors file or a PyTorch state dict; re-download if it is truncated",
        ) from None
    return normalise_state_dict(state, path)


def normalise_state_dict(state: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` and strip ``module.`` / ``_orig_mod.`` prefixes."""
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"{path}: holds no state dict", "pass a model checkpoint")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. a stray step counter beside the tensors
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        out[name] = value
    if not out:
        raise WeightsError(f"{path}: holds no tensors", "pass a model checkpoint")
    return out


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strictly load ``state`` into ``module`` (which may live on ``meta``) with ``assign=True``.

    Derived buffers (relative position index, Swin attention masks) are taken from the module
    when the checkpoint lacks them.
    """
    expected = module.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key not in state and key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            state[key] = value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", wrong),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (
                    f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                )
                parts.append(f"{len(keys)} {label}: {shown}")
        raise WeightsError(
            f"{what}: checkpoint does not fit the architecture ({'; '.join(parts)})",
            "check that the checkpoint belongs to this model (--model) or fix its registry entry",
        )
    for key, value in expected.items():
        if key.rsplit(".", 1)[-1] in DERIVED_BUFFERS and value.device.type != "meta":
            state[key] = value  # keep the module's own (computed) buffers
    dtypes = {k: v.dtype for k, v in expected.items()}
    cast = {k: v.to(dtypes[k]) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=True)


def convert_to_safetensors(src: Path | str, dst: Path | str) -> Path:
    """Write the tensors of ``src`` (``.pth`` or ``.safetensors``) to ``dst`` atomically."""
    src, dst = Path(src), Path(dst)
    state = {k: v.contiguous() for k, v in read_state_dict(src).items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", "converted_from": src.name})
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as fh:
        head = fh.read(9)
    # safetensors: 8-byte little-endian header length, then a JSON object
    return len(head) == 9 and head[8:9] == b"{"


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)
