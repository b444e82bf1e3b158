"""``restore info``: versions, devices, what ``auto`` picks, cache and offline state."""

from __future__ import annotations

import platform

import torch
import typer

from .. import __version__, download, selfcheck
from ..device import resolve_device, resolve_dtype
from . import options as o
from .console import Ui


def info(json_: o.JsonFacts = False) -> None:
    """Show version, torch, devices, the device and dtype `auto` picks (with a self-check comparing
    it with the CPU), cache folder, offline."""
    device = resolve_device("auto")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    dtype = resolve_dtype("auto", device)
    check = "not needed on the cpu"
    if device.type != "cpu":
        check = selfcheck.run(device, dtype).describe()
    facts = {
        "restore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devices": devices,
        "auto_device": str(device),
        "auto_dtype": str(dtype).replace("torch.", ""),
        "self_check": check,
        "cache": str(download.cache_root()),
        "offline": download.is_offline(),
    }
    if json_:
        Ui().emit(facts)
        return
    for key, value in facts.items():
        typer.echo(f"{key:12s} {', '.join(value) if isinstance(value, list) else value}")
