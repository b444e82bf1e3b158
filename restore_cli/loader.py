"""Building a :class:`Restorer` (or a :class:`FluxRestorer` for FLUX-IR's task models): registry
entry -> networks on ``meta`` -> strict weight load."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import nets, selfcheck, weights
from .device import resolve_device, resolve_dtype
from .errors import UsageError, WeightsError
from .fluxir_pipeline import FluxRestorer
from .pipeline import Restorer
from .registry import FluxSpec, ModelSpec, Registry, Source, default_registry
from .weights import local

SELF_CHECK_ENV = "RESTORE_SELF_CHECK"  # 0: never run the device self-check, 1: on every device
FLUXIR_DEFAULT_STEPS = 2


def load(
    name: str | ModelSpec | FluxSpec = "realsr-v3",
    checkpoint: str | Path | None = None,
    autoencoder: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    registry: Registry | None = None,
    offline: bool = False,
    progress: weights.ProgressFn | None = None,
    on_first_download: Callable[[str], None] | None = None,
    self_check: bool | None = None,
    on_warning: Callable[[str], None] | None = None,
    steps: int | None = None,
) -> Restorer | FluxRestorer:
    """Load a model by registry name (or spec) onto a device.

    ``checkpoint`` / ``autoencoder`` replace the registry's UNet / autoencoder weights with local
    files (``.safetensors`` or the authors' ``.pth``) or ``hf://OWNER/REPO[@REV]/FILE``. Registry
    weights are downloaded on first use into the Hugging Face cache (``offline``: never).

    ``self_check`` (default: ``$RESTORE_SELF_CHECK`` if it is 0 or 1, else on Apple MPS only) first
    compares small networks on the device with the CPU (:mod:`restore_cli.selfcheck`); where they
    disagree, ``on_warning`` (default :func:`warnings.warn`) is told and the model runs on the CPU
    in float32 instead.

    FLUX-IR task models (``lowlight-lolv1``, ``derain-raindrop``, ``underwater-uieb``) give a
    :class:`FluxRestorer`: ``steps`` (10, 2 or 1; default 2) picks the authors' checkpoint and its
    loop; the weights are the user's own (``checkpoint``, or a file kept by ``restore models add``).
    """
    if not isinstance(name, ModelSpec):
        flux = (
            name
            if isinstance(name, FluxSpec)
            else (registry or default_registry()).fluxir.get(name)
        )
        if flux is not None:
            fluxir_steps = FLUXIR_DEFAULT_STEPS if steps is None else steps
            return _load_fluxir(flux, checkpoint, device, dtype, fluxir_steps, offline, on_warning)
    if steps is not None:
        raise UsageError("steps is only for the FLUX-IR models", "leave it out", option="steps")
    spec = name if isinstance(name, ModelSpec) else (registry or default_registry()).get(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev, on_warning)
    if _wants_check(self_check, dev):
        dev, dt = _checked(dev, dt, on_warning or _warn)
    fetch = {"name": spec.name, "offline": offline, "progress": progress}
    fetch["on_first_download"] = on_first_download
    unet_file = _weights_file(
        checkpoint,
        spec.source,
        "UNet",
        {**fetch, "expect": fits(spec.unet, f"UNet of {spec.name}")},
    )
    ae_file = _weights_file(
        autoencoder,
        spec.autoencoder.source,
        "autoencoder",
        {**fetch, "expect": fits(spec.autoencoder.config, f"autoencoder of {spec.name}")},
    )
    unet = weights.load_into(
        nets.build(spec.unet),
        weights.read_state_dict(unet_file),
        f"{unet_file} (UNet of {spec.name})",
    )
    vq = weights.load_into(
        nets.build(spec.autoencoder.config),
        weights.read_state_dict(ae_file),
        f"{ae_file} (autoencoder of {spec.name})",
    )
    unet = unet.to(dev, dt).eval().requires_grad_(False)
    vq = vq.to(dev, dt).eval().requires_grad_(False)
    if dev.type in ("cpu", "cuda"):  # oneDNN / cuDNN convolutions are faster in NHWC
        vq = vq.to(memory_format=torch.channels_last)
    return Restorer(spec, unet, vq, dev, dt)


def fits(config: nets.UNetConfig | nets.VQConfig, what: str) -> Callable[[dict], None]:
    """A check for ``weights.resolve(expect=...)``: a new download must load strictly into the
    network of ``config`` (built on meta: no memory) before its hash is recorded."""

    def check(state: dict) -> None:
        weights.load_into(nets.build(config), state, f"download of the {what}")

    return check


def _weights_file(
    local: str | Path | None, source: Source | None, part: str, fetch: dict[str, Any]
) -> Path:
    """A local file as is; a registry source or ``hf://``/URL string through the download cache."""
    if isinstance(local, str) and (local.startswith("hf://") or "://" in local):
        return weights.resolve(local, **fetch)
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: {part} checkpoint not found", "check the path")
        return path
    if source is None:
        raise WeightsError(
            f"model '{fetch['name']}' names no {part} weights in its registry entry",
            "give a local file or add a url to the entry",
            option="checkpoint" if part == "UNet" else "autoencoder",
        )
    return weights.resolve(source, **fetch)


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


def _load_fluxir(
    spec: FluxSpec,
    checkpoint: str | Path | None,
    device: str | torch.device,
    dtype: str | torch.dtype,
    steps: int,
    offline: bool,
    on_warning: Callable[[str], None] | None,
) -> FluxRestorer:
    """A FLUX-IR model, in float32 unless told otherwise (fp16/bf16 are unchecked with real weights)."""
    stage = spec.stage(steps)
    dev = resolve_device(device)
    dt = torch.float32 if dtype == "auto" else resolve_dtype(dtype, dev)
    if checkpoint is None:
        path = local.added_file(spec, stage)
        if path is None:
            raise WeightsError(
                f"model '{spec.name}' ({steps} steps) needs the authors' {stage.file}; restore "
                f"cannot download it (licence: {spec.licence})",
                f"get it from the Google Drive folder {spec.folder}, then run "
                f"`restore models add {spec.name} {stage.file}`, or give the file as checkpoint",
                option="checkpoint",
            )
    elif isinstance(checkpoint, str) and "://" in checkpoint:
        path = weights.resolve(checkpoint, name=spec.name, offline=offline)
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: checkpoint not found", "check the path")
        try:
            local.stage_for_file(spec, path, steps)
        except UsageError as exc:  # named as another step count's file: run it, but say so
            (on_warning or _warn)(str(exc))
    what = f"{path} ({spec.name}, {steps} steps)"
    unet = local.load_unet(spec, weights.read_state_dict(path), what)
    unet = unet.to(dev, dt).eval().requires_grad_(False)
    return FluxRestorer(spec, steps, unet, dev, dt)
