"""Types and ranges of registry values, checked before anything is built from them.

A wrong type (``scale = "4"``, ``channel_mult = 2``), a zero, negative or absurd size
(``image_size = 0``, ``steps = 1e9``, ``model_channels = 10_000_000``) or a value the networks
cannot be built with (channels GroupNorm cannot split into 32 groups) is a :class:`ModelError`
naming the file and entry, never an "unexpected ..." from deep inside or a run that never ends.
Field types come from the dataclass annotations, so a new field is type-checked without a line
here; the ranges below are for the ResShift networks and schedule.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from .errors import ModelError
from .nets.config import UNetConfig, VQConfig
from .schedule import Schedule

Range = tuple[float, float]  # inclusive bounds of a number, or of every number in a list

_UNET: dict[str, Range] = {
    "in_channels": (1, 64), "out_channels": (1, 64), "model_channels": (32, 2048),
    "channel_mult": (1, 16), "num_res_blocks": (1, 16), "attention_resolutions": (1, 4096),
    "image_size": (1, 1024), "lq_size": (1, 8192), "num_head_channels": (1, 1024),
    "swin_depth": (1, 32), "swin_embed_dim": (1, 4096), "window_size": (1, 64),
    "mlp_ratio": (1, 16),
}  # fmt: skip
_VQ: dict[str, Range] = {
    "embed_dim": (1, 64), "n_embed": (1, 1 << 20), "z_channels": (1, 64), "ch": (32, 1024),
    "ch_mult": (1, 16), "num_res_blocks": (1, 16), "in_channels": (1, 16), "out_ch": (1, 16),
}  # fmt: skip
_SCHEDULE: dict[str, Range] = {
    "steps": (2, 1000), "kappa": (1e-6, 100), "power": (1e-6, 10),
    "min_noise_level": (1e-9, 1), "etas_end": (1e-9, 1),
}  # fmt: skip
LIMITS: dict[type, dict[str, Range]] = {UNetConfig: _UNET, VQConfig: _VQ, Schedule: _SCHEDULE}
LENGTHS: dict[str, Range] = {  # list lengths, by field name
    "channel_mult": (1, 8), "ch_mult": (1, 8), "num_res_blocks": (1, 8),
    "attention_resolutions": (0, 8),
}  # fmt: skip

# Keys of entries that are not dataclass fields: (type, range or None).
META: dict[str, tuple[Any, Range | None]] = {
    "url": (str, None), "sha256": (str, None), "licence": (str, None),
    "description": (str, None), "numel": (int, (1, 10**11)),
}  # fmt: skip
MODEL: dict[str, tuple[Any, Range | None]] = {
    **META, "task": (str, None), "unet": (str, None), "autoencoder": (str, None),
    "scale": (int, (1, 16)), "pad_multiple": (int, (1, 4096)), "input_size": (int, (16, 8192)),
    "schedule": (dict, None),
}  # fmt: skip


def check_fields(cls: type, where: str, entry: Mapping[str, Any]) -> None:
    """Every value of ``entry`` that names a field of ``cls`` has that field's type and range."""
    hints = _hints(cls)
    limits = LIMITS.get(cls, {})
    for key, value in entry.items():
        if key in hints:
            _check(where, key, value, hints[key], limits.get(key))


def check_keys(where: str, entry: Mapping[str, Any], table: Mapping[str, tuple]) -> None:
    """Every value of ``entry`` listed in ``table`` has its type and range."""
    for key, value in entry.items():
        if key in table:
            _check(where, key, value, *table[key])
    sha = entry.get("sha256")
    if isinstance(sha, str) and sha and not _is_hex64(sha):
        raise ModelError(
            f"{where}: sha256 must be 64 hex digits, not {sha[:70]!r}",
            "copy the hash as published, or leave it out to record it at first download",
        )


def check_unet(where: str, cfg: UNetConfig) -> None:
    ratio = cfg.lq_size // cfg.image_size
    if cfg.lq_size % cfg.image_size or ratio & (ratio - 1):
        raise ModelError(f"{where}: lq_size must be image_size times a power of two")
    if cfg.swin_embed_dim % cfg.num_head_channels:
        raise ModelError(f"{where}: swin_embed_dim must be a multiple of num_head_channels")
    _groups(where, "model_channels", cfg.model_channels, cfg.channel_mult)


def check_vq(where: str, cfg: VQConfig) -> None:
    _groups(where, "ch", cfg.ch, cfg.ch_mult)


def check_schedule(where: str, s: Schedule) -> None:
    if min(s.min_noise_level / s.kappa, s.min_noise_level) >= s.etas_end:
        raise ModelError(f"{where}: etas_end must exceed the start, min_noise_level (over kappa)")


def _groups(where: str, key: str, base: int, mults: tuple[int, ...]) -> None:
    bad = [base * m for m in (1, *mults) if (base * m) % 32]
    if bad:
        raise ModelError(f"{where}: {key} x each multiplier must be a multiple of 32 (GroupNorm)")


def _check(where: str, key: str, value: Any, hint: Any, limit: Range | None) -> None:
    if not _matches(value, hint):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ModelError(
            f"{where}: {key} must be {_describe(hint)}, not {shown}",
            "see weights.toml for the format",
        )
    numbers = value if isinstance(value, list) else [value]
    if key in LENGTHS and isinstance(value, list):
        lo, hi = LENGTHS[key]
        if not lo <= len(value) <= hi:
            raise ModelError(f"{where}: {key} must have {lo:g} to {hi:g} entries, not {len(value)}")
    if limit is not None:
        lo, hi = limit
        for n in numbers:
            if isinstance(n, (int, float)) and not lo <= n <= hi:
                raise ModelError(
                    f"{where}: {key} = {n!r} is out of range ({lo:g} to {hi:g})",
                    "see weights.toml for sensible values",
                )


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric and math.isfinite(value)
    if hint is str or hint is dict:
        return isinstance(value, hint)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_matches, value, args))
    if origin is Literal:
        return any(type(value) is type(a) for a in args)  # which values: the entry's own check
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args if a is not type(None))
    return True  # a type this check does not know: left to the entry's own checks


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is dict:
        return "a table"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return "a list of " + _describe(args[0]).removeprefix("a ").replace("number", "numbers")
    if origin is tuple:
        return f"a list of {len(args)} values"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return str(hint)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name in hints}


def _is_hex64(text: str) -> bool:
    return len(text.strip()) == 64 and all(c in "0123456789abcdefABCDEF" for c in text.strip())
