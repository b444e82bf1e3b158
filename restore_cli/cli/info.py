"""``restore info``: versions, devices, what ``auto`` picks, cache and offline state."""

from __future__ import annotations

import platform

import torch
import typer

from .. import __version__, download
from ..device import resolve_device, resolve_dtype
from . import options as o
from .console import Ui


def info(json_: o.Json = False) -> None:
    """Show version, torch, devices, the device and dtype `auto` picks, cache folder, offline."""
    device = resolve_device("auto")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    facts = {
        "restore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devices": devices,
        "auto_device": str(device),
        "auto_dtype": str(resolve_dtype("auto", device)).replace("torch.", ""),
        "cache": str(download.cache_root()),
        "offline": download.is_offline(),
    }
    if json_:
        Ui().emit(facts)
        return
    for key, value in facts.items():
        typer.echo(f"{key:12s} {', '.join(value) if isinstance(value, list) else value}")
