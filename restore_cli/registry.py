"""The model registry: ``weights.toml`` -> frozen, typed dataclasses.

A registry file has three tables, all keyed by name:

* ``[unets.NAME]``        a ResShift UNet architecture (``UNetConfig`` fields);
* ``[autoencoders.NAME]`` a VQ autoencoder: architecture (``VQConfig`` fields) plus ``url``,
  ``sha256`` and ``licence`` of its weights;
* ``[models.NAME]``       a released model: task, scale, padding multiple, schedule, the UNet and
  autoencoder it uses, the ``url``/``sha256`` of its UNet weights and its licence.

Keys are checked strictly: an unknown or missing key is an error naming the file and entry, so a
typo in a user's own registry never silently falls back to a default. User files are merged over the
built-in registry (same name = replaced).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ModelError

Task = Literal["sr", "inpaint", "face"]
TASKS: tuple[str, ...] = ("sr", "inpaint", "face")
BUILTIN_REGISTRY = Path(__file__).with_name("weights.toml")


@dataclass(frozen=True)
class UNetConfig:
    """``UNetModelSwin`` hyper-parameters (spec §2.1)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    attention_resolutions: tuple[int, ...]
    image_size: int
    lq_size: int
    cond_mask: bool = False
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: int = 4

    @property
    def latent_multiple(self) -> int:
        """Runtime latent sides must be multiples of this (one window at the deepest level)."""
        return self.window_size * 2 ** (len(self.channel_mult) - 1)

    @property
    def extractor_stages(self) -> int:
        """Strided stages of the LQ feature extractor (0: LQ concatenated directly)."""
        return int(round(math.log2(self.lq_size / self.image_size)))


@dataclass(frozen=True)
class VQConfig:
    """``VQModelTorch`` hyper-parameters (spec §2.2)."""

    embed_dim: int
    n_embed: int
    z_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    in_channels: int = 3
    out_ch: int = 3

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class Schedule:
    """Exponential eta schedule (spec §3.1)."""

    steps: int
    kappa: float
    power: float
    min_noise_level: float
    etas_end: float


@dataclass(frozen=True)
class Source:
    """Where a weights file comes from: ``https://...`` or ``hf://OWNER/REPO[@REV]/FILE``."""

    url: str
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class AutoencoderSpec:
    name: str
    config: VQConfig
    source: Source | None
    licence: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    description: str
    scale: int  # diffusion scale factor: output = scale x input
    pad_multiple: int  # LQ sides are reflect-padded to multiples of this
    schedule: Schedule
    unet: UNetConfig
    autoencoder: AutoencoderSpec
    source: Source | None
    licence: str
    input_size: int | None = None  # face models: the aligned crop side


@dataclass(frozen=True)
class Registry:
    models: Mapping[str, ModelSpec] = field(default_factory=dict)

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelError(
                f"unknown model '{name}'", f"known models: {known}; see `restore models list`"
            ) from None

    def for_task(self, task: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.task == task]


def load_registry(extra: Iterable[Path | str] = ()) -> Registry:
    """The built-in registry, with each file of ``extra`` merged over it in order."""
    tables: dict[str, dict[str, Any]] = {"unets": {}, "autoencoders": {}, "models": {}}
    for path in (BUILTIN_REGISTRY, *map(Path, extra)):
        for section, entries in _read_toml(path).items():
            for name, entry in entries.items():
                tables[section][name] = (path, entry)
    unets = {n: _unet(p, n, e) for n, (p, e) in tables["unets"].items()}
    aes = {n: _autoencoder(p, n, e) for n, (p, e) in tables["autoencoders"].items()}
    models = {n: _model(p, n, e, unets, aes) for n, (p, e) in tables["models"].items()}
    return Registry(MappingProxyType(models))


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: registry file not found", "check the path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: cannot read registry: {exc}", "fix the TOML syntax") from None
    unknown = set(data) - {"unets", "autoencoders", "models"}
    if unknown:
        raise ModelError(
            f"{path}: unknown table(s) {sorted(unknown)}",
            "a registry has only [unets.*], [autoencoders.*] and [models.*] entries",
        )
    return data


def _fields(cls: type, where: str, entry: dict[str, Any], extra: set[str] = frozenset()) -> dict:
    """Check ``entry`` against the dataclass fields of ``cls`` (plus ``extra`` keys); tuples for lists."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown = set(entry) - names - extra
    missing = required - set(entry)
    if unknown or missing:
        parts = [f"unknown key(s) {sorted(unknown)}"] if unknown else []
        parts += [f"missing key(s) {sorted(missing)}"] if missing else []
        raise ModelError(f"{where}: {'; '.join(parts)}", "see weights.toml for the format")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k in names}


def _source(entry: dict[str, Any]) -> Source | None:
    url = entry.get("url")
    return Source(url, entry.get("sha256") or None) if url else None


def _unet(path: Path, name: str, entry: dict[str, Any]) -> UNetConfig:
    where = f"{path} [unets.{name}]"
    cfg = UNetConfig(**_fields(UNetConfig, where, entry))
    if cfg.lq_size % cfg.image_size or cfg.lq_size < cfg.image_size:
        raise ModelError(f"{where}: lq_size must be image_size times a power of two")
    if len(cfg.num_res_blocks) != len(cfg.channel_mult):
        raise ModelError(f"{where}: num_res_blocks and channel_mult differ in length")
    return cfg


def _autoencoder(path: Path, name: str, entry: dict[str, Any]) -> AutoencoderSpec:
    where = f"{path} [autoencoders.{name}]"
    meta = {"url", "sha256", "licence"}
    kwargs = _fields(VQConfig, where, entry, meta)
    if isinstance(kwargs.get("num_res_blocks"), int):
        kwargs["num_res_blocks"] = (kwargs["num_res_blocks"],) * len(kwargs["ch_mult"])
    cfg = VQConfig(**kwargs)
    if len(cfg.num_res_blocks) != len(cfg.ch_mult):
        raise ModelError(f"{where}: num_res_blocks and ch_mult differ in length")
    return AutoencoderSpec(name, cfg, _source(entry), entry.get("licence", "unknown"))


_MODEL_KEYS = {
    "task", "description", "scale", "pad_multiple", "unet", "autoencoder", "url", "sha256",
    "licence", "schedule", "input_size",
}  # fmt: skip


def _model(
    path: Path,
    name: str,
    entry: dict[str, Any],
    unets: dict[str, UNetConfig],
    aes: dict[str, AutoencoderSpec],
) -> ModelSpec:
    where = f"{path} [models.{name}]"
    unknown = set(entry) - _MODEL_KEYS
    missing = {"task", "scale", "pad_multiple", "unet", "autoencoder", "schedule"} - set(entry)
    if unknown or missing:
        raise ModelError(
            f"{where}: unknown key(s) {sorted(unknown)}, missing key(s) {sorted(missing)}",
            "see weights.toml for the format",
        )
    if entry["task"] not in TASKS:
        raise ModelError(f"{where}: task must be one of {TASKS}, not {entry['task']!r}")
    if entry["unet"] not in unets:
        raise ModelError(f"{where}: no [unets.{entry['unet']}] entry")
    if entry["autoencoder"] not in aes:
        raise ModelError(f"{where}: no [autoencoders.{entry['autoencoder']}] entry")
    schedule = Schedule(**_fields(Schedule, f"{where}.schedule", entry["schedule"]))
    if schedule.steps < 2:
        raise ModelError(f"{where}: schedule.steps must be at least 2")
    unet, ae = unets[entry["unet"]], aes[entry["autoencoder"]]
    spec = ModelSpec(
        name=name,
        task=entry["task"],
        description=entry.get("description", ""),
        scale=int(entry["scale"]),
        pad_multiple=int(entry["pad_multiple"]),
        schedule=schedule,
        unet=unet,
        autoencoder=ae,
        source=_source(entry),
        licence=entry.get("licence", "unknown"),
        input_size=entry.get("input_size"),
    )
    _check_consistent(where, spec)
    return spec


def _check_consistent(where: str, spec: ModelSpec) -> None:
    unet, vq = spec.unet, spec.autoencoder.config
    if unet.in_channels != vq.embed_dim or unet.out_channels != vq.embed_dim:
        raise ModelError(f"{where}: UNet in/out channels must equal the autoencoder's embed_dim")
    # Latent pixels per LQ pixel must be the same on both conditioning paths.
    latent_per_lq = spec.scale / vq.downsample  # latent pixels per LQ pixel
    feat_per_lq = unet.image_size / unet.lq_size  # feature pixels per LQ pixel
    if not math.isclose(latent_per_lq, feat_per_lq):
        raise ModelError(
            f"{where}: scale {spec.scale} with a /{vq.downsample} autoencoder gives latents at "
            f"{latent_per_lq}x the input, but the UNet's LQ path gives {feat_per_lq}x"
        )
    latent_pad = spec.pad_multiple * latent_per_lq
    if latent_pad % unet.latent_multiple:
        raise ModelError(
            f"{where}: pad_multiple {spec.pad_multiple} gives latent sides that are not multiples "
            f"of {unet.latent_multiple} (window size x 2^levels)"
        )
