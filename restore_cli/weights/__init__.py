"""Model weights: where they come from, where they are kept, and how they get into a network.

One public face for the modules: :mod:`.download` (a registry source -> a verified local
``.safetensors`` in the cache), :mod:`.hub` (``hf://`` files), :mod:`.transfer` (resumable HTTP),
:mod:`.checkpoints` (safe reading and strict loading; :mod:`.pth` checks a ``.pth`` first),
:mod:`.cachefiles` (files in the cache, never through links), :mod:`.urls` (cache keys; credentials
kept out of messages: :func:`redact` for anything that prints a source) and :mod:`.legacy` (caches
of earlier versions). Names are imported on first use, so asking where a file is cached does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoints import convert_to_safetensors, load_into, read_state_dict
    from .download import CacheStatus, cache_root, is_offline, resolve, status, verify
    from .transfer import ProgressFn
    from .urls import redact

_HOME = {
    "convert_to_safetensors": "checkpoints",
    "load_into": "checkpoints",
    "read_state_dict": "checkpoints",
    "CacheStatus": "download",
    "cache_root": "download",
    "is_offline": "download",
    "resolve": "download",
    "status": "download",
    "verify": "download",
    "ProgressFn": "transfer",
    "redact": "urls",
}

__all__ = [
    "CacheStatus",
    "ProgressFn",
    "cache_root",
    "convert_to_safetensors",
    "is_offline",
    "load_into",
    "read_state_dict",
    "redact",
    "resolve",
    "status",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
