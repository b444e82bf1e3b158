"""Reading checkpoints safely and loading them strictly into modules.

* ``.safetensors`` is read directly; the authors' ``.pth`` only with ``torch.load(weights_only=True)``
  (no pickled code runs), after :mod:`.pth` has checked that nothing in it is compressed or larger
  than it declares. Any failure to read is one :class:`WeightsError`; so is a tensor that is not
  dense real numbers (complex, quantised, sparse).
* The official layouts are normalised: an optional ``state_dict`` wrapper, ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes, present or absent buffers.
* Loading is strict: a :class:`WeightsError` lists missing, unexpected, mis-shaped keys and
  integer or complex tensors where the module has real weights.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file

from ..errors import WeightsError
from . import cachefiles, pth

# Buffers the modules compute themselves; a checkpoint may carry them or not. The reference's Swin
# blocks (``models/swin_transformer.py: SwinTransformerBlock``) never read ``attn_mask`` (the mask
# is recomputed by ``calculate_mask`` on every call) and ``relative_position_index`` is deterministic.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
# BatchNorm's step counter: unused in eval mode, and absent from some releases (torch tolerates a
# missing one in files without version metadata). Taken from the module (zero on ``meta``).
OPTIONAL_BUFFERS = ("num_batches_tracked",)
_PREFIXES = ("module.", "_orig_mod.")
M = TypeVar("M", bound=torch.nn.Module)
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` file, with wrappers and prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found", "check the path")
    try:
        if _is_safetensors(path):
            state = load_file(str(path))
        else:
            zipped = _is_zip(path)
            pth.check(path, zipped)  # nothing compressed, nothing larger than it declares
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except WeightsError:
        raise
    except Exception as exc:  # zip, pickle, safetensors, torch, memory and OS errors alike
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
        _check_tensor(value, name, path)
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


def _check_tensor(value: torch.Tensor, name: str, path: Path | str) -> None:
    """Weights are dense real numbers: floating point, or integers/booleans for index buffers."""
    if value.layout != torch.strided or value.is_quantized or value.is_meta:
        raise WeightsError(
            f"{path}: tensor {name[:80]!r} is not a plain dense tensor ({value.layout})",
            "pass a checkpoint of plain (dense, unquantised) tensors",
        )
    if value.is_complex() or not (value.is_floating_point() or value.dtype in _INDEX_DTYPES):
        raise WeightsError(
            f"{path}: tensor {name[:80]!r} has dtype {value.dtype}, which weights never have",
            "pass a checkpoint of floating-point weights",
        )


def load_into(module: M, state: Mapping[str, torch.Tensor], what: str) -> M:
    """Strictly load ``state`` into ``module`` (which may live on ``meta``) with ``assign=True``;
    returns ``module``.

    Derived buffers (relative position index, Swin attention masks) and BatchNorm's
    ``num_batches_tracked`` are taken from the module when the checkpoint lacks them.
    """
    expected = module.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key not in state and key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            state[key] = value
        elif key not in state and key.rsplit(".", 1)[-1] in OPTIONAL_BUFFERS:
            state[key] = torch.zeros_like(value, device="cpu") if value.is_meta else value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    wrong_dtype = sorted(  # integer or complex numbers where the module has real weights
        f"{k} {state[k].dtype}"
        for k, v in expected.items()
        if k in state
        and (state[k].is_complex() or (v.is_floating_point() and not state[k].is_floating_point()))
    )
    if missing or unexpected or wrong or wrong_dtype:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", wrong),
            ("of the wrong dtype", wrong_dtype),
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
    return module


def convert_to_safetensors(src: Path | str, dst: Path | str) -> Path:
    """Write the tensors of ``src`` (``.pth`` or ``.safetensors``) to ``dst`` atomically."""
    src = Path(src)
    return save_state_dict(read_state_dict(src), dst, converted_from=src.name)


def save_state_dict(
    state: Mapping[str, torch.Tensor], dst: Path | str, *, converted_from: str
) -> Path:
    """Write ``state`` to ``dst`` as ``.safetensors`` atomically, with the umask's permissions."""
    dst = Path(dst)
    tensors, seen = {}, set()
    for key, value in state.items():  # safetensors refuses tensors that share memory (tied ones)
        value = value.contiguous()
        where = value.untyped_storage().data_ptr()
        tensors[key] = value.clone() if where in seen else value
        seen.add(where)
    meta = {"format": "pt", "converted_from": converted_from}
    cachefiles.write_with(dst, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
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
