"""Building a :class:`Restorer`: registry entry -> networks on ``meta`` -> strict weight load."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import download, selfcheck
from .checkpoints import load_into, read_state_dict
from .device import resolve_device, resolve_dtype
from .errors import WeightsError
from .nets.unet import UNetModelSwin
from .nets.vqgan import VQModel
from .pipeline import Restorer
from .registry import ModelSpec, Registry, Source, load_registry

REGISTRY_ENV = "RESTORE_REGISTRY"  # extra registry files, separated by os.pathsep
SELF_CHECK_ENV = "RESTORE_SELF_CHECK"  # 0: never run the device self-check, 1: on every device


def default_registry(extra: list[Path] | None = None) -> Registry:
    """The built-in registry plus files named in ``$RESTORE_REGISTRY`` and ``extra``."""
    env = [Path(p) for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    return load_registry([*env, *(extra or [])])


def load(
    name: str | ModelSpec = "realsr-v3",
    checkpoint: str | Path | None = None,
    autoencoder: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    registry: Registry | None = None,
    offline: bool = False,
    progress: download.ProgressFn | None = None,
    on_first_download: Callable[[str], None] | None = None,
    self_check: bool | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Restorer:
    """Load a model by registry name (or spec) onto a device.

    ``checkpoint`` / ``autoencoder`` replace the registry's UNet / autoencoder weights with local
    files (``.safetensors`` or the authors' ``.pth``) or ``hf://OWNER/REPO[@REV]/FILE``. Registry
    weights are downloaded on first use into the Hugging Face cache (``offline``: never).

    ``self_check`` (default: ``$RESTORE_SELF_CHECK`` if it is 0 or 1, else on Apple MPS only) first
    compares small networks on the device with the CPU (:mod:`restore_cli.selfcheck`); where they
    disagree, ``on_warning`` (default :func:`warnings.warn`) is told and the model runs on the CPU
    in float32 instead.
    """
    spec = name if isinstance(name, ModelSpec) else (registry or default_registry()).get(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if _wants_check(self_check, dev):
        dev, dt = _checked(dev, dt, on_warning or _warn)
    fetch = {"name": spec.name, "offline": offline, "progress": progress}
    fetch["on_first_download"] = on_first_download
    unet_file = _weights_file(checkpoint, spec.source, "UNet", fetch)
    ae_file = _weights_file(autoencoder, spec.autoencoder.source, "autoencoder", fetch)
    with torch.device("meta"):
        unet = UNetModelSwin(spec.unet)
        vq = VQModel(spec.autoencoder.config)
    load_into(unet, read_state_dict(unet_file), f"{unet_file} (UNet of {spec.name})")
    load_into(vq, read_state_dict(ae_file), f"{ae_file} (autoencoder of {spec.name})")
    unet = unet.to(dev, dt).eval().requires_grad_(False)
    vq = vq.to(dev, dt).eval().requires_grad_(False)
    if dev.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
        vq = vq.to(memory_format=torch.channels_last)
    return Restorer(spec, unet, vq, dev, dt)


def _weights_file(
    local: str | Path | None, source: Source | None, part: str, fetch: dict[str, Any]
) -> Path:
    """A local file as is; a registry source or ``hf://``/URL string through the download cache."""
    if isinstance(local, str) and (local.startswith("hf://") or "://" in local):
        return download.resolve(local, **fetch)
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: {part} checkpoint not found", "check the path")
        return path
    if source is None:
        raise WeightsError(
            f"model '{fetch['name']}' names no {part} weights in its registry entry",
            "pass a local file (--checkpoint / --autoencoder) or add a url to the entry",
        )
    return download.resolve(source, **fetch)


def _wants_check(self_check: bool | None, dev: torch.device) -> bool:
    if self_check is not None:
        return self_check
    env = os.environ.get(SELF_CHECK_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    return dev.type == "mps"


def _warn(text: str) -> None:
    warnings.warn(text, RuntimeWarning, stacklevel=3)


def _checked(
    dev: torch.device, dt: torch.dtype, on_warning: Callable[[str], None]
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype if the self-check passes there, else the CPU in float32."""
    result = selfcheck.run(dev, dt)
    if result.ok:
        return dev, dt
    on_warning(
        f"device self-check {result.describe()}; running on the CPU instead "
        "(slower but correct; please report your torch version and machine)"
    )
    return torch.device("cpu"), torch.float32
