"""``restore info``: versions, devices, what ``auto`` picks, cache and offline state."""

from __future__ import annotations

import platform

import typer

from .._version import __version__
from . import options as o
from .console import Ui


def info(json_: o.JsonFacts = False) -> None:
    """Versions, devices, what --device auto picks (self-checked), cache folder.

    The device and dtype `auto` picks are compared with the CPU on small networks (the self-check);
    the cache folder is where weights are downloaded to.
    """
    import torch

    from .. import selfcheck, weights
    from ..device import resolve_device, resolve_dtype

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
        "cache": str(weights.cache_root()),
        "offline": weights.is_offline(),
    }
    if json_:
        Ui().emit(facts)
        return
    for key, value in facts.items():
        typer.echo(f"{key:12s} {', '.join(value) if isinstance(value, list) else value}")
