"""``restore models``: list, download, path, verify, convert."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from .. import download
from ..checkpoints import convert_to_safetensors
from ..errors import EXIT_MODEL, UsageError, WeightsError
from ..loader import default_registry
from ..nets.unet import UNetModelSwin
from ..nets.vqgan import VQModel
from ..registry import ModelSpec, Source
from . import options as o
from .console import Ui

app = typer.Typer(help="List, download and check model weights.", no_args_is_help=True)

Names = Annotated[list[str] | None, typer.Argument(help="Model names (default: all).")]


def _parts(spec: ModelSpec) -> list[tuple[str, Source | None]]:
    return [("unet", spec.source), ("autoencoder", spec.autoencoder.source)]


def _weights_bytes(spec: ModelSpec) -> int:
    """fp32 size of the model's tensors, from the architecture (built on meta, no memory)."""
    with torch.device("meta"):
        modules = (UNetModelSwin(spec.unet), VQModel(spec.autoencoder.config))
    return sum(t.numel() * 4 for m in modules for t in m.state_dict().values())


def _select(
    names: list[str] | None, registry: list[Path] | None, all_: bool = True
) -> list[ModelSpec]:
    reg = default_registry(registry)
    if names:
        return [reg.get(n) for n in names]
    if not all_:
        raise UsageError("name a model or pass --all", "see `restore models list`")
    return list(reg.models.values())


@app.command("list")
def list_(json_: o.JsonRows = False, registry: o.Registry = None) -> None:
    """Models: name, task, steps, scale, download size, licence, cached or not."""
    ui = Ui(json=json_)
    rows = []
    for spec in _select(None, registry):
        cached = all(s is not None and download.status(s).cached for _, s in _parts(spec))
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "steps": spec.schedule.steps,
                "scale": spec.scale,
                "size_mb": round(_weights_bytes(spec) / 2**20),
                "licence": spec.licence,
                "cached": cached,
                "description": spec.description,
            }
        )
    if json_:
        for row in rows:
            ui.emit(row)
        return
    table = Table(box=None)
    for col in ("name", "task", "steps", "scale", "size", "cached", "licence"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"], r["task"], str(r["steps"]), f"x{r['scale']}", f"{r['size_mb']} MB",
            "yes" if r["cached"] else "no", r["licence"],
        )  # fmt: skip
    Console().print(table)


@app.command("download")
def download_(
    names: Names = None,
    all_: Annotated[bool, typer.Option("--all", help="Every model in the registry.")] = False,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
    quiet: o.Quiet = False,
    registry: o.Registry = None,
) -> None:
    """Download (and convert to safetensors) the weights of models, for offline use later."""
    ui = Ui(quiet=quiet)
    specs = _select(names, registry, all_=all_)
    done: set[str] = set()
    for spec in specs:
        for part, source in _parts(spec):
            if source is None:
                raise WeightsError(
                    f"model '{spec.name}' names no {part} weights", "fix the registry"
                )
            if source.url in done:
                continue
            with ui.download_bar() as bar:
                path = download.resolve(
                    source,
                    name=spec.name,
                    force=force,
                    progress=bar,
                    on_first_download=lambda url, s=spec: ui.info(
                        f"downloading {url}\n  licence: {s.licence}"
                    ),
                )
            done.add(source.url)
            ui.info(f"{spec.name} {part}: {path}")


@app.command()
def path(name: str, registry: o.Registry = None) -> None:
    """Print where a model's weights are (or will be) cached, one path per line."""
    spec = _select([name], registry)[0]
    for _part, source in _parts(spec):
        if source is not None:
            st = download.status(source)
            typer.echo(str(st.path) if st.path else f"(not cached) {source.url}")


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
                st = download.verify(source, name=spec.name)
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
    convert_to_safetensors(src, dst)
    Ui().info(f"wrote {dst}")
