"""``restore sr | inpaint | face``: the restoring commands, sharing one batch driver."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import batch, colorfix, download, files, imageio
from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..loader import default_registry, load
from ..pipeline import Restorer
from . import options as o
from .console import Ui

DEFAULT_MODEL = {"sr": "realsr-v3", "inpaint": "inpaint-imagenet", "face": "faceir"}
DEFAULT_SUFFIX = {"inpaint": "_inpainted", "face": "_restored"}


def sr(
    inputs: o.Inputs = None,
    output: o.Output = None,
    scale: Annotated[
        float | None,
        typer.Option(help="Output scale vs the input (any S > 0); the model's x4 is resized."),
    ] = None,
    model: o.Model = None,
    checkpoint: o.Checkpoint = None,
    autoencoder: o.Autoencoder = None,
    seed: o.Seed = 12345,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    tile: o.Tile = None,
    tile_overlap: o.TileOverlap = None,
    color_fix: o.ColorFix = "none",
    fmt: o.Format = "png",
    quality: o.Quality = None,
    suffix: o.Suffix = None,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    verbose: o.Verbose = False,
    offline: o.Offline = False,
    fail_fast: o.FailFast = False,
    shard: o.Shard = None,
    max_pixels: o.MaxPixels = imageio.DEFAULT_MAX_PIXELS,
    files_from: o.FilesFrom = None,
    registry: o.Registry = None,
) -> None:
    """x4 super-resolution (default model realsr-v3). Example: restore sr photo.jpg"""
    if scale is not None and scale <= 0:
        raise UsageError(f"--scale must be > 0, not {scale:g}", "e.g. --scale 2")
    _run("sr", **locals())


def inpaint(
    inputs: o.Inputs = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            help="Mask file, or folder of masks matched by relative path then stem. White = fill."
        ),
    ] = None,
    output: o.Output = None,
    model: o.Model = None,
    checkpoint: o.Checkpoint = None,
    autoencoder: o.Autoencoder = None,
    seed: o.Seed = 12345,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    tile: o.Tile = None,
    tile_overlap: o.TileOverlap = None,
    color_fix: o.ColorFix = "none",
    fmt: o.Format = "png",
    quality: o.Quality = None,
    suffix: o.Suffix = None,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    verbose: o.Verbose = False,
    offline: o.Offline = False,
    fail_fast: o.FailFast = False,
    shard: o.Shard = None,
    max_pixels: o.MaxPixels = imageio.DEFAULT_MAX_PIXELS,
    files_from: o.FilesFrom = None,
    registry: o.Registry = None,
) -> None:
    """Fill the white parts of a mask (default model inpaint-imagenet)."""
    if mask is None:
        raise UsageError("inpainting needs --mask FILE|DIR", "white pixels of the mask are filled")
    if not mask.exists():
        raise UsageError(f"{mask}: mask not found", "check the path")
    _run("inpaint", **locals())


def face(
    inputs: o.Inputs = None,
    aligned: Annotated[
        bool, typer.Option(help="Inputs are aligned face crops (FFHQ-style, ideally 512x512).")
    ] = False,
    output: o.Output = None,
    model: o.Model = None,
    checkpoint: o.Checkpoint = None,
    autoencoder: o.Autoencoder = None,
    seed: o.Seed = 12345,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    tile: o.Tile = None,
    tile_overlap: o.TileOverlap = None,
    color_fix: o.ColorFix = "none",
    fmt: o.Format = "png",
    quality: o.Quality = None,
    suffix: o.Suffix = None,
    overwrite: o.Overwrite = False,
    json_: o.Json = False,
    quiet: o.Quiet = False,
    verbose: o.Verbose = False,
    offline: o.Offline = False,
    fail_fast: o.FailFast = False,
    shard: o.Shard = None,
    max_pixels: o.MaxPixels = imageio.DEFAULT_MAX_PIXELS,
    files_from: o.FilesFrom = None,
    registry: o.Registry = None,
) -> None:
    """Blind face restoration of aligned face crops (default model faceir)."""
    if not aligned:
        raise UsageError(
            "whole-photo face restoration (detection and alignment) is not available yet",
            "pass --aligned with aligned face crops",
        )
    _run("face", **locals())


def _run(task: str, **a) -> None:
    ui = Ui(quiet=a["quiet"], json=a["json_"], verbose=a["verbose"])
    if a["color_fix"] not in colorfix.COLOR_FIXES:
        raise UsageError(f"unknown --color-fix {a['color_fix']!r}", "use none, wavelet or adain")
    if a["tile"] and a["tile_overlap"] is not None and a["tile_overlap"] >= a["tile"]:
        raise UsageError(
            "--tile-overlap must be smaller than --tile", "e.g. --tile 256 --tile-overlap 32"
        )
    reg = default_registry(a["registry"])
    spec = reg.get(a["model"] or DEFAULT_MODEL[task])
    if spec.task != task:
        raise UsageError(
            f"model '{spec.name}' is for `restore {spec.task}`, not `restore {task}`",
            f"pick a {task} model from `restore models list`",
        )
    if not a["inputs"] and a["files_from"] is None:
        raise UsageError("no input given", f"e.g. restore {task} photo.jpg (see --help)")
    items, ignored = files.find_inputs(
        a["inputs"] or [], files_from=a["files_from"], skip=a["output"]
    )
    for path in ignored:
        ui.detail(f"ignored (not an image): {path}")
    if not items:
        raise UsageError(
            "no images found in the inputs", "supported: png, jpg, webp, tif, bmp, gif, ppm"
        )
    several = len(items) > 1 or any(p.is_dir() for p in a["inputs"] or [])
    scale = a.get("scale")
    default_suffix = (
        batch.suffix_for_scale(scale or spec.scale) if task == "sr" else DEFAULT_SUFFIX[task]
    )
    jobs = files.plan_outputs(
        items,
        output=a["output"],
        default_suffix=default_suffix,
        fmt=a["fmt"],
        suffix=a["suffix"],
        several=several,
    )  # planned for all inputs, so clashes across shards are refused too
    if a["shard"]:
        mine = set(files.shard(items, a["shard"]))
        jobs = [job for job in jobs if job.input in mine]
    settings = batch.Settings(
        model=spec.name,
        seed=a["seed"],
        mask=a.get("mask"),
        scale=scale,
        tile=a["tile"],
        tile_overlap=a["tile_overlap"],
        color_fix=a["color_fix"],
        quality=a["quality"],
        overwrite=a["overwrite"],
        fail_fast=a["fail_fast"],
        max_pixels=a["max_pixels"] or None,
    )
    loaded: list[Restorer] = []

    def restorer() -> Restorer:
        if not loaded:
            with ui.download_bar() as bar:
                loaded.append(
                    load(
                        spec,
                        checkpoint=a["checkpoint"],
                        autoencoder=a["autoencoder"],
                        device=a["device"],
                        dtype=a["dtype"],
                        offline=a["offline"],
                        progress=bar,
                        on_first_download=lambda url: ui.info(
                            f"downloading {url}\n  licence: {spec.licence}"
                        ),
                        on_warning=ui.warning,
                    )
                )
            r = loaded[0]
            ui.detail(f"model {spec.name} on {r.device} ({str(r.dtype).replace('torch.', '')})")
        return loaded[0]

    ui.detail(f"cache: {download.cache_root()}")
    counts = {"ok": 0, "skipped": 0, "error": 0}
    with ui.work_bar(len(jobs)) as (advance, stage):
        for record in batch.run(jobs, settings, restorer, stage):
            counts[record.status] += 1
            advance()
            if ui.json:
                ui.emit(record.as_dict())
            if record.status == "error":
                ui.error(record.error or "failed")
            elif record.status == "skipped":
                ui.detail(f"skipped (exists, pass --overwrite): {record.output}")
            else:
                ui.detail(f"{record.input} -> {record.output} ({record.seconds:.1f} s)")
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    ui.info(f"{summary or 'nothing to do'}")
    raise SystemExit(EXIT_FAILED if counts["error"] else EXIT_OK)
