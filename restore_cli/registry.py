"""The model registry: ``weights.toml`` -> frozen, typed dataclasses.

A registry file has these tables, all keyed by name:

* ``[unets.NAME]``        a ResShift UNet architecture (``UNetConfig`` fields);
* ``[autoencoders.NAME]`` a VQ autoencoder: architecture (``VQConfig`` fields) plus ``url``,
  ``sha256`` and ``licence`` of its weights;
* ``[models.NAME]``       a released model: task, scale, padding multiple, schedule, the UNet and
  autoencoder it uses, the ``url``/``sha256`` of its UNet weights and its licence; optionally
  its trajectory: ``timesteps`` (default list of trained indices), ``fixed_timesteps`` (runs only
  that list) and ``[models.NAME.trajectories]`` (``"K" = [...]``, the list for K steps);
* ``[fluxir.NAME]``       a FLUX-IR task model (``FluxSpec``): SR3 UNet, val schedule, start state,
  per step count the authors' file and its loop; weights are brought by the user (no ``url``).
* ``[detectors.NAME]``    a face detector (``DetectorSpec``): RetinaFace ``backbone``, ``url``,
  ``sha256``, ``licence``, ``description``.

Keys are checked strictly: an unknown or missing key is an error naming the file and entry, so a
typo in a user's own registry never silently falls back to a default; so is a value of the wrong
type or out of range (:mod:`.registry_values`). User files are merged over the built-in registry
(same name = replaced); :attr:`Registry.replaced` names the built-in entries a user file changed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import registry_values as values
from .errors import ModelError, UsageError
from .nets.config import SR3Config, UNetConfig, VQConfig
from .schedule import Schedule, check_timesteps, full_timesteps, space_timesteps

Task = Literal["sr", "inpaint", "face"]
TASKS: tuple[str, ...] = ("sr", "inpaint", "face")
BUILTIN_REGISTRY = Path(__file__).with_name("weights.toml")
REGISTRY_ENV = "RESTORE_REGISTRY"  # extra registry files, separated by os.pathsep


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
    numel: int | None = None  # tensor elements of both networks' state dicts, where known
    # The trajectory: trained indices in sampling order (default: every step, T-1 ... 0).
    timesteps: tuple[int, ...] | None = None
    fixed_timesteps: bool = False  # runs only `timesteps` (a distilled one-step student)
    trajectories: Mapping[int, tuple[int, ...]] = field(  # per step count K, for steps=K
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def size_bytes(self) -> int | None:
        """float32 size of the weights (``numel`` x 4), or None where the registry does not say."""
        return None if self.numel is None else 4 * self.numel

    @property
    def default_timesteps(self) -> tuple[int, ...]:
        """The trained indices a plain run visits (one network call each)."""
        return self.timesteps or full_timesteps(self.schedule.steps)

    def trajectory(
        self, steps: int | None = None, timesteps: Sequence[int] | None = None
    ) -> tuple[int, ...]:
        """The trained indices to visit for a request of ``steps`` (a count) or ``timesteps`` (a
        list in sampling order), or the default; UsageError for a request the model cannot run.

        ``steps=K`` takes the model's ``trajectories`` entry for K, else the default list if it
        has K entries, else the reference's uniform rule (ResShift ``models/respace.py:
        space_timesteps``)."""
        n = self.schedule.steps
        if steps is not None and timesteps is not None:
            raise UsageError(
                "give a step count or a timestep list, not both",
                "a timestep list already says how many steps",
                option="steps",
            )
        if self.fixed_timesteps:
            fixed = self.default_timesteps
            wrong_count = steps is not None and steps != len(fixed)
            if wrong_count or (timesteps is not None and tuple(timesteps) != fixed):
                raise UsageError(
                    f"model '{self.name}' runs exactly {len(fixed)} step(s), at timesteps "
                    f"{list(fixed)}: it was distilled for that call only",
                    "leave the step count and timesteps unset for this model",
                    option="steps",
                )
            return fixed
        if timesteps is not None:
            try:
                return check_timesteps(timesteps, n)
            except ValueError as exc:
                raise UsageError(
                    f"model '{self.name}': {exc}",
                    f"e.g. {','.join(map(str, space_timesteps(n, min(4, n))))} "
                    f"(trained indices 0..{n - 1}, decreasing)",
                    option="timesteps",
                ) from None
        if steps is None:
            return self.default_timesteps
        if not 1 <= steps <= n:
            raise UsageError(
                f"model '{self.name}' has {n} trained steps; cannot run {steps}",
                f"use a step count from 1 to {n}",
                option="steps",
            )
        if steps in self.trajectories:
            return self.trajectories[steps]
        if len(self.default_timesteps) == steps:
            return self.default_timesteps
        return full_timesteps(n) if steps == n else space_timesteps(n, steps)


@dataclass(frozen=True)
class DetectorSpec:
    """A face detector for whole-photo face restoration (RetinaFace, facexlib's weights)."""

    name: str
    backbone: str  # RetinaFaceConfig.backbone: resnet50 or mobile0.25
    source: Source | None
    licence: str
    description: str = ""
    numel: int | None = None  # tensor elements of the state dict, where known

    @property
    def size_bytes(self) -> int | None:
        return None if self.numel is None else 4 * self.numel


@dataclass(frozen=True)
class Registry:
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    fluxir: Mapping[str, FluxSpec] = field(default_factory=dict)
    detectors: Mapping[str, DetectorSpec] = field(default_factory=dict)
    # Built-in entries a user registry file changed, as "TABLE.NAME" (e.g. "autoencoders.vq-f4").
    replaced: tuple[str, ...] = ()

    def replaced_notice(self) -> str | None:
        """One line for the console when a user registry changed built-in entries, else None."""
        if not self.replaced:
            return None
        return "user registry replaces built-in " + ", ".join(f"[{r}]" for r in self.replaced)

    def detector(self, name: str) -> DetectorSpec:
        try:
            return self.detectors[name]
        except KeyError:
            known = ", ".join(sorted(self.detectors)) or "none"
            raise ModelError(
                f"unknown face detector '{name}'", f"known detectors: {known}"
            ) from None

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted([*self.models, *self.fluxir])) or "none"
            raise ModelError(
                f"unknown model '{name}'", f"known models: {known}; see `restore models list`"
            ) from None


def default_registry(extra: Iterable[Path | str] | None = None) -> Registry:
    """The built-in registry plus files named in ``$RESTORE_REGISTRY`` and ``extra``."""
    env = [Path(p) for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    return load_registry([*env, *(extra or [])])


def load_registry(extra: Iterable[Path | str] = ()) -> Registry:
    """The built-in registry, with each file of ``extra`` merged over it in order."""
    tables: dict[str, dict[str, Any]] = {"unets": {}, "autoencoders": {}, "models": {}}
    tables["fluxir"] = {}
    tables["detectors"] = {}
    builtin: dict[tuple[str, str], Any] = {}
    replaced: list[str] = []
    for path in (BUILTIN_REGISTRY, *map(Path, extra)):
        for section, entries in _read_toml(path).items():
            for name, entry in entries.items():
                if path == BUILTIN_REGISTRY:
                    builtin[(section, name)] = entry
                elif builtin.get((section, name), entry) != entry:
                    replaced.append(f"{section}.{name}")
                tables[section][name] = (path, entry)
    unets = {n: _unet(p, n, e) for n, (p, e) in tables["unets"].items()}
    aes = {n: _autoencoder(p, n, e) for n, (p, e) in tables["autoencoders"].items()}
    numel = {
        (section, n): e.get("numel") for section in ("unets", "autoencoders")
        for n, (_p, e) in tables[section].items()
    }  # fmt: skip
    models = {n: _model(p, n, e, unets, aes, numel) for n, (p, e) in tables["models"].items()}
    fluxir = _fluxir_entries(tables["fluxir"], set(models))
    detectors = {n: _detector(p, n, e) for n, (p, e) in tables["detectors"].items()}
    return Registry(
        MappingProxyType(models),
        fluxir,
        detectors=MappingProxyType(detectors),
        replaced=tuple(dict.fromkeys(replaced)),
    )


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: registry file not found", "check the path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: cannot read registry: {exc}", "fix the TOML syntax") from None
    unknown = set(data) - {"unets", "autoencoders", "models", "fluxir", "detectors"}
    if unknown:
        raise ModelError(
            f"{path}: unknown table(s) {sorted(unknown)}",
            "a registry has only [unets.*], [autoencoders.*], [models.*], [fluxir.*] and "
            "[detectors.*] entries",
        )
    for section, entries in data.items():
        if not isinstance(entries, dict):
            bad = [f"[{section}]"]
        else:
            bad = [f"[{section}.{n}]" for n, e in entries.items() if not isinstance(e, dict)]
        if bad:
            raise ModelError(
                f"{path} {bad[0]}: must be a table of keys (write [{section}.NAME] and key = value)",
                "see weights.toml for the format",
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
    values.check_fields(cls, where, entry)
    values.check_keys(where, entry, values.META)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k in names}


def _source(entry: dict[str, Any]) -> Source | None:
    url = entry.get("url")
    return Source(url, entry.get("sha256") or None) if url else None


def _unet(path: Path, name: str, entry: dict[str, Any]) -> UNetConfig:
    where = f"{path} [unets.{name}]"
    cfg = UNetConfig(**_fields(UNetConfig, where, entry, {"numel"}))
    values.check_unet(where, cfg)
    if len(cfg.num_res_blocks) != len(cfg.channel_mult):
        raise ModelError(f"{where}: num_res_blocks and channel_mult differ in length")
    return cfg


def _autoencoder(path: Path, name: str, entry: dict[str, Any]) -> AutoencoderSpec:
    where = f"{path} [autoencoders.{name}]"
    meta = {"url", "sha256", "licence", "numel"}
    blocks, mults = entry.get("num_res_blocks"), entry.get("ch_mult")
    if isinstance(blocks, int) and not isinstance(blocks, bool) and isinstance(mults, list):
        entry = {**entry, "num_res_blocks": [blocks] * len(mults)}  # one count for every level
    cfg = VQConfig(**_fields(VQConfig, where, entry, meta))
    values.check_vq(where, cfg)
    if len(cfg.num_res_blocks) != len(cfg.ch_mult):
        raise ModelError(f"{where}: num_res_blocks and ch_mult differ in length")
    return AutoencoderSpec(name, cfg, _source(entry), entry.get("licence", "unknown"))


_MODEL_KEYS = {
    "task", "description", "scale", "pad_multiple", "unet", "autoencoder", "url", "sha256",
    "licence", "schedule", "input_size", "timesteps", "fixed_timesteps", "trajectories",
}  # fmt: skip


def _model(
    path: Path,
    name: str,
    entry: dict[str, Any],
    unets: dict[str, UNetConfig],
    aes: dict[str, AutoencoderSpec],
    numel: Mapping[tuple[str, str], int | None],
) -> ModelSpec:
    where = f"{path} [models.{name}]"
    unknown = set(entry) - _MODEL_KEYS
    missing = {"task", "scale", "pad_multiple", "unet", "autoencoder", "schedule"} - set(entry)
    if unknown or missing:
        raise ModelError(
            f"{where}: unknown key(s) {sorted(unknown)}, missing key(s) {sorted(missing)}",
            "see weights.toml for the format",
        )
    values.check_keys(where, entry, values.MODEL)
    if entry["task"] not in TASKS:
        raise ModelError(f"{where}: task must be one of {TASKS}, not {entry['task']!r}")
    if entry["unet"] not in unets:
        raise ModelError(f"{where}: no [unets.{entry['unet']}] entry")
    if entry["autoencoder"] not in aes:
        raise ModelError(f"{where}: no [autoencoders.{entry['autoencoder']}] entry")
    schedule = Schedule(**_fields(Schedule, f"{where}.schedule", entry["schedule"]))
    if schedule.steps < 2:
        raise ModelError(f"{where}: schedule.steps must be at least 2")
    values.check_schedule(f"{where}.schedule", schedule)
    unet, ae = unets[entry["unet"]], aes[entry["autoencoder"]]
    parts = (numel[("unets", entry["unet"])], numel[("autoencoders", entry["autoencoder"])])
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
        numel=None if None in parts else sum(parts),  # type: ignore[arg-type]
        **_trajectory_fields(where, entry, schedule.steps),
    )
    _check_consistent(where, spec)
    return spec


def _trajectory_fields(where: str, entry: dict[str, Any], steps: int) -> dict[str, Any]:
    """``timesteps``, ``fixed_timesteps`` and ``trajectories`` of a model entry, checked."""

    def checked(key: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise ModelError(f"{where}: {key} must be a list of trained indices, not {value!r}")
        try:
            return check_timesteps(value, steps)
        except ValueError as exc:
            raise ModelError(f"{where}: {key}: {exc}", "see weights.toml for the format") from None

    timesteps = checked("timesteps", entry["timesteps"]) if "timesteps" in entry else None
    fixed = entry.get("fixed_timesteps", False)
    if not isinstance(fixed, bool):
        raise ModelError(f"{where}: fixed_timesteps must be true or false, not {fixed!r}")
    if fixed and timesteps is None:
        raise ModelError(
            f"{where}: fixed_timesteps needs a timesteps list", "e.g. timesteps = [14]"
        )
    table = entry.get("trajectories", {})
    if not isinstance(table, dict):
        raise ModelError(f"{where}: trajectories must be a table of step count = [timesteps]")
    if fixed and table:
        raise ModelError(f"{where}: a model with fixed_timesteps has no other trajectories")
    trajectories: dict[int, tuple[int, ...]] = {}
    for key, value in table.items():
        ts = checked(f"trajectories.{key}", value)
        if not key.isdigit() or int(key) != len(ts):
            raise ModelError(
                f"{where}: trajectories.{key} lists {len(ts)} timesteps; its key must be "
                f'the step count ("{len(ts)}")'
            )
        trajectories[len(ts)] = ts
    return {
        "timesteps": timesteps,
        "fixed_timesteps": fixed,
        "trajectories": MappingProxyType(trajectories),
    }


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


# --- FLUX-IR task models ([fluxir.NAME]) ---------------------------------------------------------

FluxTask = Literal["lowlight", "derain", "underwater"]
FLUX_TASKS: tuple[str, ...] = ("lowlight", "derain", "underwater")
FLUX_STARTS: tuple[str, ...] = ("noise", "noised-input")
FLUX_LOOPS: tuple[str, ...] = ("rein", "jump")


@dataclass(frozen=True)
class FluxSchedule:
    """Linear betas of the authors' *val* schedule (``config/*_test.json``: ``beta_schedule.val``)."""

    linear_start: float
    linear_end: float
    n_timestep: int = 10


@dataclass(frozen=True)
class FluxStage:
    """One released checkpoint of a FLUX-IR model: its step count, file name and sampling loop.

    ``rein``: ``n_timestep`` DDIM-type steps from pure noise (``p_sample_loop``); ``jump``: one
    jump (k_from, k_to) per network evaluation (``p_sample_loop_distill``)."""

    steps: int
    file: str  # the authors' file name, e.g. lolv1_dist2step.pth
    loop: Literal["rein", "jump"]
    jumps: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class FluxSpec:
    """A FLUX-IR task model: SR3 UNet, val schedule, start state of the distilled loops, padding
    multiple and one :class:`FluxStage` per step count. Weights are bring-your-own (``folder``).

    ``start``: ``noise`` = n_1 drawn and unused, x = z (LOLv1); ``noised-input`` = x =
    sqrt(abar_s) y + sqrt(1 - abar_s) n_1 with s = ``start_index`` (Raindrop 8, UnderwaterB 7)."""

    name: str
    task: FluxTask
    description: str
    net: SR3Config
    schedule: FluxSchedule
    start: Literal["noise", "noised-input"]
    start_index: int
    pad_multiple: int
    stages: Mapping[int, FluxStage]
    folder: str  # where users get the files (the authors' Google Drive folder)
    licence: str
    seed: int  # the authors' config seed (informational)
    numel: int | None = None  # parameters of the UNet's state dict

    @property
    def size_bytes(self) -> int | None:
        return None if self.numel is None else 4 * self.numel

    @property
    def scale(self) -> int:
        """Output size over input size (as ``ModelSpec.scale``): these models keep the size."""
        return 1

    def stage(self, steps: int) -> FluxStage:
        try:
            return self.stages[steps]
        except KeyError:
            known = ", ".join(str(s) for s in sorted(self.stages))
            raise ModelError(
                f"model '{self.name}' has no {steps}-step checkpoint",
                f"use steps {known}",
                option="steps",
            ) from None


_FLUX_KEYS = {
    "task", "description", "net", "schedule", "start", "start_index", "pad_multiple", "steps",
    "folder", "licence", "seed", "numel",
}  # fmt: skip


def _fluxir_entries(entries: dict[str, Any], taken: set[str]) -> Mapping[str, FluxSpec]:
    clash = sorted(set(entries) & taken)
    if clash:
        raise ModelError(f"registry: {clash} are both [models.*] and [fluxir.*] entries")
    return MappingProxyType({n: _fluxir(p, n, e) for n, (p, e) in entries.items()})


def _fluxir(path: Path, name: str, entry: dict[str, Any]) -> FluxSpec:
    where = f"{path} [fluxir.{name}]"
    unknown, missing = set(entry) - _FLUX_KEYS, _FLUX_KEYS - {"description", "numel"} - set(entry)
    if unknown or missing:
        raise ModelError(
            f"{where}: unknown key(s) {sorted(unknown)}, missing key(s) {sorted(missing)}",
            "see weights.toml for the format",
        )
    for key, allowed in (("task", FLUX_TASKS), ("start", FLUX_STARTS)):
        if entry[key] not in allowed:
            raise ModelError(f"{where}: {key} must be one of {allowed}, not {entry[key]!r}")
    net = SR3Config(**_fields(SR3Config, f"{where}.net", entry["net"]))
    schedule = FluxSchedule(**_fields(FluxSchedule, f"{where}.schedule", entry["schedule"]))
    t = schedule.n_timestep
    spec = FluxSpec(
        name=name,
        task=entry["task"],
        description=entry.get("description", ""),
        net=net,
        schedule=schedule,
        start=entry["start"],
        start_index=int(entry["start_index"]),
        pad_multiple=int(entry["pad_multiple"]),
        stages=MappingProxyType(_flux_stages(where, entry["steps"], t)),
        folder=entry["folder"],
        licence=entry["licence"],
        seed=int(entry["seed"]),
        numel=entry.get("numel"),
    )
    if not 1 <= spec.start_index <= t or (spec.start == "noise" and spec.start_index != t):
        raise ModelError(f"{where}: start_index must be in 1..{t} ({t} for a noise start)")
    if spec.pad_multiple % net.multiple:
        raise ModelError(f"{where}: pad_multiple must be a multiple of {net.multiple}")
    return spec


def _flux_stages(where: str, table: dict[str, Any], t: int) -> dict[int, FluxStage]:
    stages: dict[int, FluxStage] = {}
    for key, entry in table.items():
        at = f"{where}.steps.{key}"
        if not key.isdigit():
            raise ModelError(f"{at}: step counts are whole numbers")
        fields = _fields(FluxStage, at, {"steps": int(key), **entry})
        fields["jumps"] = tuple(tuple(j) for j in fields.get("jumps", ()))
        stage = FluxStage(**fields)
        if stage.loop not in FLUX_LOOPS:
            raise ModelError(f"{at}: loop must be one of {FLUX_LOOPS}, not {stage.loop!r}")
        if stage.loop == "rein" and (stage.steps != t or stage.jumps):
            raise ModelError(f"{at}: a rein loop takes all {t} steps and no jumps")
        if stage.loop == "jump" and not _jumps_ok(stage.jumps, stage.steps, t):
            raise ModelError(
                f"{at}: jumps must be {stage.steps} pairs [k_from, k_to], k_from in 1..{t}, "
                "descending, each starting where the last ended, the last ending at 0"
            )
        stages[stage.steps] = stage
    return stages


def _jumps_ok(jumps: tuple[tuple[int, int], ...], steps: int, t: int) -> bool:
    if len(jumps) != steps or any(len(j) != 2 for j in jumps):
        return False
    chained = all(a[1] == b[0] for a, b in zip(jumps, jumps[1:], strict=False))
    ordered = all(1 <= k_from <= t and 0 <= k_to < k_from for k_from, k_to in jumps)
    return chained and ordered and jumps[-1][1] == 0


_DETECTOR_KEYS = {"backbone", "url", "sha256", "licence", "description", "numel"}
_BACKBONES = ("resnet50", "mobile0.25")


def _detector(path: Path, name: str, entry: dict[str, Any]) -> DetectorSpec:
    where = f"{path} [detectors.{name}]"
    unknown = set(entry) - _DETECTOR_KEYS
    missing = {"backbone", "url"} - set(entry)
    if unknown or missing:
        parts = [f"unknown key(s) {sorted(unknown)}"] if unknown else []
        parts += [f"missing key(s) {sorted(missing)}"] if missing else []
        raise ModelError(f"{where}: {'; '.join(parts)}", "see weights.toml for the format")
    values.check_keys(where, entry, {**values.META, "backbone": (str, None)})
    if entry["backbone"] not in _BACKBONES:
        raise ModelError(
            f"{where}: backbone must be one of {_BACKBONES}, not {entry['backbone']!r}"
        )
    return DetectorSpec(
        name=name,
        backbone=entry["backbone"],
        source=_source(entry),
        licence=entry.get("licence", "unknown"),
        description=entry.get("description", ""),
        numel=entry.get("numel"),
    )
