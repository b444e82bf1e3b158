"""``restore models``: list, download, path, verify, convert, add."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import weights
from ..errors import EXIT_MODEL, UsageError, WeightsError
from ..registry import DetectorSpec, FluxSpec, ModelSpec, Source, default_registry
from . import options as o
from .console import Ui

app = typer.Typer(help="List, download and check model weights.", no_args_is_help=True)

Names = Annotated[list[str] | None, typer.Argument(help="Model names (default: all).")]


def _parts(spec: ModelSpec | DetectorSpec) -> list[tuple[str, Source | None]]:
    if isinstance(spec, DetectorSpec):
        return [("detector", spec.source)]
    return [("unet", spec.source), ("autoencoder", spec.autoencoder.source)]


def _select(
    names: list[str] | None, registry: list[Path] | None, all_: bool = True
) -> list[ModelSpec | DetectorSpec]:
    """The downloadable entries named (ResShift models and face detectors), or all of them."""
    reg = default_registry(registry)
    if notice := reg.replaced_notice():
        Ui().warning(notice)
    if names:
        picked: list[ModelSpec | DetectorSpec] = []
        for n in names:
            if n in reg.detectors:
                picked.append(reg.detectors[n])
            elif n in reg.fluxir:
                raise UsageError(
                    f"'{n}' is a bring-your-own model: its weights cannot be downloaded",
                    f"get them from {reg.fluxir[n].folder}, then `restore models add {n} FILE`",
                )
            else:
                picked.append(reg.get(n))
        return picked
    if not all_:
        raise UsageError("name a model or pass --all", "see `restore models list`")
    return [*reg.models.values(), *reg.detectors.values()]


def _cached(spec: ModelSpec | DetectorSpec) -> bool:
    return all(s is not None and weights.status(s).cached for _, s in _parts(spec))


def _size_mb(size: int | None) -> int | None:
    return None if size is None else round(size / 2**20)


def _flux_row(spec: FluxSpec) -> dict:
    from ..weights import local  # cheap: paths and sums, no network

    added = []
    for steps, stage in sorted(spec.stages.items()):
        try:
            ok = local.added_file(spec, stage) is not None
        except WeightsError:
            ok = False  # a changed file: `models verify`/a run says so; listed as not added
        if ok:
            added.append(steps)
    return {
        "name": spec.name,
        "kind": "fluxir",
        "task": spec.task,
        "steps": sorted(spec.stages),
        "scale": spec.scale,
        "size_mb": _size_mb(spec.size_bytes),
        "licence": spec.licence,
        "cached": bool(added),
        "added_steps": added,
        "where": spec.folder,
        "description": spec.description,
    }


@app.command("list")
def list_(json_: o.JsonRows = False, registry: o.Registry = None) -> None:
    """Models: name, task, steps, scale, download size, licence, cached or not. FLUX-IR models are
    bring-your-own (`restore models add`); face detectors serve `restore face` and `sr --faces`."""
    ui = Ui(json=json_)
    reg = default_registry(registry)
    if notice := reg.replaced_notice():
        ui.warning(notice)
    rows = []
    for spec in reg.models.values():
        rows.append(
            {
                "name": spec.name,
                "kind": "resshift",
                "task": spec.task,
                # network calls of a default run (a one-step model of a 15-step schedule: 1)
                "steps": len(spec.default_timesteps),
                "trained_steps": spec.schedule.steps,
                "scale": spec.scale,
                "size_mb": _size_mb(spec.size_bytes),
                "licence": spec.licence,
                "cached": _cached(spec),
                "description": spec.description,
            }
        )
    rows += [_flux_row(spec) for spec in reg.fluxir.values()]
    for det in reg.detectors.values():
        rows.append(
            {
                "name": det.name,
                "kind": "detector",
                "task": "face detection",
                "steps": None,
                "scale": None,
                "size_mb": _size_mb(det.size_bytes),
                "licence": det.licence,
                "cached": _cached(det),
                "description": det.description,
            }
        )
    if json_:
        for row in rows:
            ui.emit(row)
        return
    table = Table(box=None)
    for col in ("name", "task", "steps", "scale", "size", "cached", "licence"):
        table.add_column(col, overflow="fold")
    for r in rows:
        steps = r["steps"]
        shown_steps = (
            "-"
            if steps is None
            else "|".join(map(str, steps))
            if isinstance(steps, list)
            else str(steps)
        )
        if r["kind"] == "fluxir":
            cached = (
                f"added: {'|'.join(map(str, r['added_steps']))}"
                if r["added_steps"]
                else "bring your own"
            )
        else:
            cached = "yes" if r["cached"] else "no"
        table.add_row(
            r["name"], r["task"], shown_steps, "-" if r["scale"] is None else f"x{r['scale']}",
            "?" if r["size_mb"] is None else f"{r['size_mb']} MB", cached, r["licence"],
        )  # fmt: skip
    Console().print(table)
    if reg.fluxir:
        folders = sorted({s.folder for s in reg.fluxir.values()})
        Console(stderr=True).print(
            "FLUX-IR weights are not downloadable: get them from "
            + ", ".join(folders)
            + ", then `restore models add NAME FILE`.",
            soft_wrap=True,
        )


@app.command("download")
def download_(
    names: Names = None,
    all_: Annotated[bool, typer.Option("--all", help="Every model in the registry.")] = False,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
    quiet: o.Quiet = False,
    registry: o.Registry = None,
) -> None:
    """Download (and convert to safetensors) the weights of models and face detectors, for
    offline use later."""
    ui = Ui(quiet=quiet)
    specs = _select(names, registry, all_=all_)
    done: set[str] = set()
    from ..faces.detect import detector_fits  # torch: only when downloading
    from ..loader import fits

    for spec in specs:
        if isinstance(spec, DetectorSpec):
            checks = {"detector": detector_fits(spec)}
        else:
            checks = {
                "unet": fits(spec.unet, f"UNet of {spec.name}"),
                "autoencoder": fits(spec.autoencoder.config, f"autoencoder of {spec.name}"),
            }
        for part, source in _parts(spec):
            if source is None:
                raise WeightsError(
                    f"model '{spec.name}' names no {part} weights", "fix the registry"
                )
            if source.url in done:
                continue
            with ui.download_bar() as bar:
                path = weights.resolve(
                    source,
                    name=spec.name,
                    force=force,
                    progress=bar,
                    on_first_download=lambda url, s=spec: ui.info(
                        f"downloading {url}\n  licence: {s.licence}"
                    ),
                    expect=checks[part],
                )
            done.add(source.url)
            ui.info(f"{spec.name} {part}: {path}")


@app.command()
def path(name: str, registry: o.Registry = None) -> None:
    """Print where a model's weights are (or will be) cached, one path per line."""
    reg = default_registry(registry)
    if name in reg.fluxir:
        from ..weights import local

        spec = reg.fluxir[name]
        for _steps, stage in sorted(spec.stages.items()):
            found = local.added_file(spec, stage)
            typer.echo(str(found) if found else f"(not added) {stage.file} from {spec.folder}")
        return
    for _part, source in _parts(_select([name], registry)[0]):
        if source is not None:
            st = weights.status(source)
            typer.echo(str(st.path) if st.path else f"(not cached) {weights.redact(source.url)}")


@app.command()
def verify(names: Names = None, registry: o.Registry = None, quiet: o.Quiet = False) -> None:
    """Re-hash cached files against their pinned or recorded SHA-256."""
    ui = Ui(quiet=quiet)
    bad = 0
    for spec in _select(names, registry):
        for part, source in _parts(spec):
            if source is None:
                continue
            try:
                st = weights.verify(source, name=spec.name)
            except WeightsError as exc:
                ui.error(exc)
                bad += 1
                continue
            if not st.cached:
                ui.info(f"{spec.name} {part}: not cached")
            else:
                ui.info(f"{spec.name} {part}: {'ok' if st.verified else 'no checksum known'}")
    if bad:
        raise SystemExit(EXIT_MODEL)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A .pth (or .safetensors) checkpoint.")],
    dst: Annotated[Path, typer.Argument(help="The .safetensors file to write.")],
    overwrite: o.Overwrite = False,
) -> None:
    """Convert a checkpoint to .safetensors (loaded with weights_only: no pickled code runs)."""
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst}: exists", "pass --overwrite or choose another name")
    if dst.resolve() == src.resolve():
        raise UsageError(f"{dst}: is the input", "choose another output name")
    weights.convert_to_safetensors(src, dst)
    Ui().info(f"wrote {dst}")


@app.command()
def add(
    name: Annotated[
        str, typer.Argument(help="lowlight-lolv1, derain-raindrop or underwater-uieb.")
    ],
    file: Annotated[Path, typer.Argument(help="The authors' checkpoint (.pth or .safetensors).")],
    steps: Annotated[
        int | None,
        typer.Option(help="Which checkpoint it is: 10, 2 or 1 (default: from the authors' name)."),
    ] = None,
    json_: o.JsonFacts = False,
    registry: o.Registry = None,
) -> None:
    """Check a FLUX-IR checkpoint you downloaded (strictly: every key and shape) and keep it in the
    cache as .safetensors, so the model then works by name, offline."""
    reg = default_registry(registry)
    spec = reg.fluxir.get(name)
    if spec is None:
        raise UsageError(
            f"'{name}' is not a bring-your-own model",
            f"models add takes {', '.join(sorted(reg.fluxir))}; "
            "`restore models download` fetches the others",
        )
    from ..weights import local  # imports torch

    added = local.add(spec, file, steps=steps)
    ui = Ui(json=json_)
    if json_:
        ui.emit({"name": added.name, "steps": added.steps, "path": str(added.path),
                 "sha256": added.sha256, "source_sha256": added.source_sha256})  # fmt: skip
        return
    ui.info(f"{added.name} ({added.steps} steps): {added.path}\n  sha256 of {file.name}: "
            f"{added.source_sha256}\n  licence: {spec.licence}")  # fmt: skip
