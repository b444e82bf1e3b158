"""``restore schedule search``: rank lists of K trained timesteps against the full chain."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import UsageError
from ..schedule import space_timesteps
from . import options as o
from .console import Ui

if TYPE_CHECKING:
    from ..registry import ModelSpec
    from ..trajectory import Candidate, SearchResult

app = typer.Typer(help="Choose the timesteps a model visits.", no_args_is_help=True)

Images = Annotated[
    list[Path],
    typer.Argument(help="Probe images (small crops: they run untiled).", show_default=False),
]
Steps = Annotated[int, typer.Option("--steps", "-k", min=1, help="Network calls (K) per image.")]
Budget = Annotated[
    int,
    typer.Option(
        min=1,
        help="Most subsets to try; with more, a dynamic programme over the chain picks them.",
    ),
]
Top = Annotated[int, typer.Option(min=1, help="Rows of the table (--json has all).")]
JsonOut = Annotated[bool, typer.Option("--json", help="The ranking as one JSON object on stdout.")]


@app.command("search")
def search(
    images: Images,
    steps: Steps,
    model: o.Model = None,
    budget: Budget = 100,
    seed: o.Seed = 12345,
    top: Top = 10,
    json_: JsonOut = False,
    checkpoint: o.Checkpoint = None,
    autoencoder: o.Autoencoder = None,
    device: o.Device = "auto",
    dtype: o.DtypeOpt = o.Dtype.auto,
    offline: o.Offline = False,
    registry: o.Registry = None,
    quiet: o.Quiet = False,
) -> None:
    """Rank subsets of K trained timesteps by how far their result (stochasticity 0, the same
    prior noise) lands from the full chain's on the probe images; prints the best as a
    --timesteps value. Example: restore schedule search -m realsr-v1 -k 4 crop1.png crop2.png"""
    from .. import trajectory  # here, so that --help stays fast (no torch)
    from ..imageio import read_image
    from ..loader import load
    from ..registry import default_registry

    ui = Ui(quiet=quiet, json=json_)
    if model is None:
        raise UsageError("name the model to search for", "e.g. --model realsr-v1")
    spec = default_registry(registry).get(model)
    _check_searchable(spec, steps)
    pixels = [read_image(path).pixels for path in images]  # read all before loading the model
    r = load(
        spec,
        checkpoint=checkpoint,
        autoencoder=autoencoder,
        device=device,
        dtype=getattr(dtype, "value", dtype),
        offline=offline,
        on_first_download=lambda url: ui.info(f"downloading {url}\n  licence: {spec.licence}"),
        on_warning=ui.warning,
    )
    probes = trajectory.probes(r, pixels, seed=seed, input_size=spec.input_size)
    with _bar(ui) as progress:
        result = trajectory.search(
            probes, spec.schedule.steps, steps, budget=budget, progress=progress
        )
    record = _record(result, spec.name, seed, images)
    if json_:
        ui.emit(record)
        return
    _table(result, top)
    best = ",".join(map(str, result.best.timesteps))
    sys.stdout.write(f"best: --timesteps {best}\n")


def _check_searchable(spec: ModelSpec, steps: int) -> None:
    trained = spec.schedule.steps
    if spec.fixed_timesteps:
        raise UsageError(
            f"model '{spec.name}' runs only timesteps {list(spec.default_timesteps)}",
            "nothing to search: it was distilled for those calls",
        )
    if spec.task == "inpaint":
        raise UsageError("schedule search takes sr and face models", "inpainting needs masks")
    if steps > trained:
        raise UsageError(
            f"model '{spec.name}' has {trained} trained steps", f"--steps 1..{trained}"
        )


@contextmanager
def _bar(ui: Ui) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar of chains on stderr (terminals only): a (done, total) callback, or None."""
    if not ui.bars:
        yield None
        return
    columns = (TextColumn("chains"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=ui.err, transient=True) as bar:
        task = bar.add_task("chains", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _row(c: Candidate, uniform: tuple[int, ...]) -> dict[str, Any]:
    return {
        "timesteps": list(c.timesteps),
        "latent_l2": c.latent_l2,
        "psnr": None if c.psnr is None or math.isinf(c.psnr) else c.psnr,
        "calls": c.calls,
        "seconds": c.seconds,
        "estimate": c.estimate,
        "uniform": c.timesteps == uniform,
    }


def _record(result: SearchResult, model: str, seed: int, images: list[Path]) -> dict[str, Any]:
    uniform = space_timesteps(result.trained, result.steps)
    return {
        "model": model,
        "trained": result.trained,
        "steps": result.steps,
        "method": result.method,
        "subsets": result.subsets,
        "evaluated": len(result.ranked),
        "seed": seed,
        "images": [str(p) for p in images],
        "full": _row(result.full, uniform),
        "ranked": [_row(c, uniform) for c in result.ranked],
        "best": ",".join(map(str, result.best.timesteps)),
    }


def _table(result: SearchResult, top: int) -> None:
    uniform = space_timesteps(result.trained, result.steps)
    title = (
        f"{result.steps} of {result.trained} timesteps: {len(result.ranked)} of "
        f"{result.subsets} subsets tried ({result.method})"
    )
    table = Table(title=title, box=None)
    for col in ("rank", "timesteps", "latent RMS", "PSNR dB", "calls", "s/image", "note"):
        right = col not in ("timesteps", "note")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)

    def add(rank: str, c: Candidate, note: str) -> None:
        db = "-" if c.psnr is None else ("inf" if math.isinf(c.psnr) else f"{c.psnr:.2f}")
        ts = ",".join(map(str, c.timesteps)) if note != "full chain" else f"{c.timesteps[0]}..0"
        table.add_row(rank, ts, f"{c.latent_l2:.5f}", db, str(c.calls), f"{c.seconds:.2f}", note)

    for i, c in enumerate(result.ranked):
        if i < top or c.timesteps == uniform:
            add(str(i + 1), c, "uniform" if c.timesteps == uniform else "")
    add("-", result.full, "full chain")
    Console(file=sys.stdout).print(table)
