"""Weights the user brings: FLUX-IR's task models (a Google Drive folder, no licence, no hashes).

The authors' files are ``torch.save`` of the ``GaussianDiffusion`` state dict (FLUX-IR
``Task_specitic_restoration/model/model.py: DDPM.save_network``): 12 schedule buffers (``betas``, ...,
never used: ``test.py`` re-registers them from the config) and the UNet under ``denoise_fn.``,
possibly all under ``module.`` (``nn.DataParallel``). :func:`fluxir_state_dict` turns that into the
UNet's own keys; the strict load then checks every key and shape.

``restore models add NAME FILE`` (:func:`add`) checks a file once and keeps the UNet's tensors in the
cache, where ``load(NAME, steps=K)`` finds them offline::

    restore/added/NAME/STEM.safetensors          STEM = the authors' name for that step count
    restore/added/NAME/STEM.safetensors.sha256   its sha256, checked on every load
    restore/added/NAME/STEM.source.sha256        the sha256 and name of the file that was added
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from ..errors import UsageError, WeightsError
from ..registry import FluxSpec, FluxStage
from .download import _read_sum, _sha256, _write_sum, cache_root

if TYPE_CHECKING:  # torch and the networks load only when a file is read or checked, so that
    import torch  # `restore models list` (which asks only for paths and sums) starts fast

# ``GaussianDiffusion.set_new_noise_schedule`` buffers: accepted, never trusted (recomputed).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)  # fmt: skip
UNET_PREFIX = "denoise_fn."


@dataclass(frozen=True)
class Added:
    """What :func:`add` kept: the converted file, its sha256 and that of the user's file."""

    name: str
    steps: int
    path: Path
    sha256: str
    source_sha256: str


def fluxir_state_dict(state: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The authors' layout -> the UNet's keys: schedule buffers dropped, ``denoise_fn.`` stripped
    (``module.`` is already gone: :func:`read_state_dict`). A bare UNet state dict passes as is."""
    state = {k: v for k, v in state.items() if k not in SCHEDULE_BUFFERS}
    prefixed = [k for k in state if k.startswith(UNET_PREFIX)]
    if not prefixed:
        return state
    stray = sorted(k for k in state if not k.startswith(UNET_PREFIX))
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise WeightsError(
            f"{what}: {len(stray)} key(s) outside denoise_fn.* ({shown})",
            "pass one of the authors' task-model checkpoints (a GaussianDiffusion state dict)",
        )
    return {k[len(UNET_PREFIX) :]: v for k, v in state.items()}


def load_unet(spec: FluxSpec, state: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """The SR3 UNet of ``spec`` with ``state`` (the authors' layout or the UNet's own) assigned
    strictly: a :class:`WeightsError` names missing, unexpected and mis-shaped keys and the likely
    cause. The module holds the state's tensors (cast to float32), on their device."""
    from .. import nets
    from .checkpoints import load_into

    unet_state = fluxir_state_dict(state, what)
    try:
        return load_into(nets.build(spec.net), unet_state, what)
    except WeightsError as exc:
        raise WeightsError(f"{exc.message}{_likely_cause(spec, unet_state)}", exc.hint) from None


def _likely_cause(spec: FluxSpec, state: Mapping[str, torch.Tensor]) -> str:
    from .. import nets

    expected = len(nets.build(spec.net).state_dict())
    has_var_conv = any(k.startswith("var_conv.") for k in state)
    if has_var_conv and not spec.net.var_conv:
        return f"; this file has var_conv.* keys: it is a LOLv1 checkpoint, not {spec.name}"
    if spec.net.var_conv and not has_var_conv and state:
        return f"; no var_conv.* keys: a Raindrop/UnderwaterB checkpoint, not {spec.name}?"
    if len(state) != expected:
        return f"; {len(state)} parameter keys but {spec.name} expects {expected}"
    return ""


def stage_for_file(spec: FluxSpec, file: Path | str, steps: int | None) -> FluxStage:
    """The stage a file is for: ``steps`` if given, else the one whose authors' name it carries."""
    stem = PurePath(file).name.split(".")[0]
    named = [s for s in spec.stages.values() if s.file.split(".")[0] == stem]
    if steps is None:
        if not named:
            files = ", ".join(f"{s.file} for {s.steps}" for s in spec.stages.values())
            raise UsageError(
                f"{file}: cannot tell which {spec.name} checkpoint this is from its name",
                f"give the step count, 10, 2 or 1 (the authors' files: {files})",
                option="steps",
            )
        return named[0]
    stage = spec.stage(steps)
    if named and named[0].steps != steps:
        raise UsageError(
            f"{file}: the authors' {named[0].steps}-step file, not the {steps}-step one "
            f"({stage.file})",
            f"give steps {named[0].steps}, or the {steps}-step file",
            option="steps",
        )
    return stage


def added_dir(name: str) -> Path:
    return cache_root() / "restore" / "added" / name


def _added_path(spec: FluxSpec, stage: FluxStage) -> Path:
    return added_dir(spec.name) / (stage.file.split(".")[0] + ".safetensors")


def added_file(spec: FluxSpec, stage: FluxStage) -> Path | None:
    """The converted file ``add`` kept for this stage (sha256 checked), or None if none was added."""
    path = _added_path(spec, stage)
    if not path.is_file():
        return None
    expected = _read_sum(path.with_name(path.name + ".sha256"))
    actual = _sha256(path)
    if expected != actual:
        raise WeightsError(
            f"{path}: added checkpoint is corrupt or was changed (sha256 {actual[:16]}...)",
            f"run `restore models add {spec.name} {stage.file}` again",
        )
    return path


def add(spec: FluxSpec, file: Path | str, *, steps: int | None = None) -> Added:
    """Check ``file`` strictly against ``spec`` and keep its UNet tensors as ``.safetensors`` in the
    cache (no pickled code runs: ``torch.load(weights_only=True)``)."""
    from .checkpoints import read_state_dict, save_state_dict

    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src}: checkpoint not found", "check the path")
    stage = stage_for_file(spec, src, steps)
    unet = load_unet(spec, read_state_dict(src), f"{src} ({spec.name}, {stage.steps} steps)")
    dst = save_state_dict(unet.state_dict(), _added_path(spec, stage), converted_from=src.name)
    source_sum, digest = _sha256(src), _sha256(dst)
    _write_sum(dst.with_name(dst.name + ".sha256"), digest, dst.name)
    _write_sum(dst.with_name(dst.stem + ".source.sha256"), source_sum, src.name)
    return Added(spec.name, stage.steps, dst, digest, source_sum)
