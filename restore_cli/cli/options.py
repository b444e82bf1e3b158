"""Options of the command line, declared once, and the decorator that shares them.

Every restoring command (``sr``, ``inpaint``, ``face``, ...) takes its own few options plus the
:class:`RunOptions` below; :func:`restoring` adds those to the command's signature for Typer and
hands them to the command as one frozen dataclass. This module imports no torch, so ``--help`` and
shell completion stay fast.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UsageError
from ..request import DEFAULT_MAX_PIXELS, DEFAULT_SEED, ColorFix, Request
from ..storage import location

MODEL, OUTPUT, TILING, BATCH, RESTORATION, SCALE = (
    "Model",
    "Output",
    "Tiling and speed",
    "Batch and scripts",
    "Restoration",
    "Clusters",
)


class Format(str, Enum):
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tif = "tif"
    same = "same"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Dtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_CHOICES = "[auto|cpu|cuda|cuda:N|mps]"


def _device(value: str) -> str:
    value = value.strip().lower()
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps")
    return value


# Paths and fsspec URLs: `location` keeps "s3://bucket/key" whole (a storage.Url), where a Path
# would fold its "//"; local values stay Paths.
Inputs = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Image files and/or folders (searched recursively); s3://, gs://... URLs too.",
        show_default=False,
        parser=location,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Output file (one input) or folder; a URL too.",
        rich_help_panel=OUTPUT,
        parser=location,
    ),
]
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="Registry model name.", rich_help_panel=MODEL)
]
Checkpoint = Annotated[
    str | None,
    typer.Option(help="UNet weights: a local file or hf://OWNER/REPO/FILE.", rich_help_panel=MODEL),
]
Autoencoder = Annotated[
    str | None,
    typer.Option(help="Autoencoder weights: a local file or hf://...", rich_help_panel=MODEL),
]
Seed = Annotated[
    int,
    typer.Option(help="Noise seed (each image its own generator).", rich_help_panel=RESTORATION),
]
Device = Annotated[
    str,
    typer.Option(
        help="auto picks CUDA, then MPS, then the CPU.",
        parser=_device,
        metavar=DEVICE_CHOICES,
        rich_help_panel=MODEL,
    ),
]
DtypeOpt = Annotated[
    Dtype,
    typer.Option("--dtype", help="auto: fp16 on CUDA, else fp32.", rich_help_panel=MODEL),
]
Tile = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Tile side in input pixels; 0 = never tile.",
        rich_help_panel=TILING,
        show_default="from free memory",
    ),
]
TileOverlap = Annotated[
    int | None,
    typer.Option(
        min=0, help="Tile overlap in input pixels.", show_default="tile/8", rich_help_panel=TILING
    ),
]
VaeTile = Annotated[
    int | None,
    typer.Option(
        "--vae-tile",
        min=0,
        help="Autoencoder tile in latent pixels (grown by up to 1/8 where that saves a row of "
        "tiles); 0 = never.",
        show_default="128",
        rich_help_panel=TILING,
    ),
]
BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        metavar="N",
        help="Run up to N tiles, or same-size images of a folder, through the networks at once. "
        "Each image keeps its own noise: results are identical to batch 1 (on a GPU, equal up "
        "to float rounding).",
        rich_help_panel=TILING,
    ),
]


def _timesteps(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in value.replace(" ", "").split(",") if t)
    except ValueError:
        raise UsageError(
            f"--timesteps {value!r}: not a list of trained indices", "e.g. --timesteps 11,7,3,0"
        ) from None


Steps = Annotated[
    int | None,
    typer.Option(min=1, help="Run K of the model's trained steps.", show_default="all",
                 rich_help_panel=RESTORATION),
]  # fmt: skip
Timesteps = Annotated[
    str | None,
    typer.Option(metavar="T1,T2,...", help="Exactly these trained steps.",
                 rich_help_panel=RESTORATION),
]  # fmt: skip
Eta = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Stochasticity: 1 reference, 0 deterministic.",
                 rich_help_panel=RESTORATION),
]  # fmt: skip
EarlyExit = Annotated[
    float | None,
    typer.Option(min=0.0, metavar="TOL", help="Stop once x0 predictions change under TOL.",
                 rich_help_panel=RESTORATION),
]  # fmt: skip
ColorFixOpt = Annotated[
    ColorFix,
    typer.Option("--color-fix", help="Pull colours toward the input.", rich_help_panel=RESTORATION),
]
FormatOpt = Annotated[
    Format,
    typer.Option("--format", help="Output format; same = as the input.", rich_help_panel=OUTPUT),
]
Quality = Annotated[
    int | None,
    typer.Option(
        min=1, max=100, help="JPEG/WebP quality.", show_default="95", rich_help_panel=OUTPUT
    ),
]
Suffix = Annotated[
    str | None, typer.Option(help="Name suffix of outputs, e.g. _restored.", rich_help_panel=OUTPUT)
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace existing outputs (default: skip).", rich_help_panel=OUTPUT
    ),
]
Json = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per input on stdout.", rich_help_panel=BATCH),
]
JsonFacts = Annotated[bool, typer.Option("--json", help="The same facts as JSON on stdout.")]
JsonRows = Annotated[bool, typer.Option("--json", help="One JSON object per model on stdout.")]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Only errors and warnings.", rich_help_panel=BATCH),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "--debug", "-v", help="More detail; tracebacks.", rich_help_panel=BATCH
    ),
]
Offline = Annotated[
    bool,
    typer.Option(
        "--offline", help="Never use the network (HF_HUB_OFFLINE=1).", rich_help_panel=MODEL
    ),
]
FailFast = Annotated[
    bool,
    typer.Option("--fail-fast", help="Stop at the first image that fails.", rich_help_panel=BATCH),
]
Shard = Annotated[
    str | None,
    typer.Option(help="K/N: a stable 1/N of the inputs (job arrays).", rich_help_panel=BATCH),
]
MaxPixels = Annotated[
    int,
    typer.Option(
        help="Refuse inputs over N pixels, results over 4N; 0 = no limit.", rich_help_panel=BATCH
    ),
]
FilesFrom = Annotated[
    Path | None,
    typer.Option(
        help='Read inputs from a file (- = stdin; a URL too): a path, or {"input": ..., '
        '"output": ..., "mask": ...}, per line.',
        rich_help_panel=BATCH,
        parser=location,
    ),
]
Manifest = Annotated[
    Path | None,
    typer.Option(
        help="Append each --json record to this file, flushed per image ({shard} -> K-of-N).",
        rich_help_panel=BATCH,
    ),
]
EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help='local: this process; ray: a Ray cluster (pip install "restore-cli\\[ray]").',
        rich_help_panel=SCALE,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster to run on; auto = the one `ray start` made here.",
        show_default="$RAY_ADDRESS, else a local one for this run",
        rich_help_panel=SCALE,
    ),
]
Actors = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Ray: model copies working at once.",
        show_default="one per GPU, else one per node",
        rich_help_panel=SCALE,
    ),
]
Registry = Annotated[
    list[Path] | None,
    typer.Option("--registry", help="Extra model registry TOML file(s).", rich_help_panel=MODEL),
]


FACES = "Faces"


class Detector(str, Enum):
    resnet50 = "resnet50"
    mobilenet = "mobilenet"


FaceDetector = Annotated[
    Detector,
    typer.Option(
        "--detector", help="RetinaFace backbone (mobilenet: lighter).", rich_help_panel=FACES
    ),
]
FaceThreshold = Annotated[
    float,
    typer.Option(
        "--face-threshold", min=0.0, max=1.0, help="Detection score to keep a face.",
        rich_help_panel=FACES,
    ),
]  # fmt: skip
OnlyCenterFace = Annotated[
    bool,
    typer.Option(
        "--only-center-face", help="Only the face nearest the centre.", rich_help_panel=FACES
    ),
]
MaxFaces = Annotated[
    int | None,
    typer.Option(
        "--max-faces", min=1, help="Only the N highest-scoring faces.", rich_help_panel=FACES
    ),
]
SaveCrops = Annotated[
    Path | None,
    typer.Option(
        "--save-crops", help="Also write each aligned and restored face crop here.",
        rich_help_panel=FACES,
    ),
]  # fmt: skip


FaceModel = Annotated[
    str, typer.Option("--face-model", help="Registry model for the faces.", rich_help_panel=FACES)
]


@dataclass(frozen=True)
class FaceRun:
    """Whole-photo face restoration as the command line asks for it."""

    detector: Detector = Detector.resnet50
    threshold: float = 0.97
    only_center_face: bool = False
    max_faces: int | None = None
    save_crops: Path | None = None
    upscale: int = 1  # restore face: 1, 2 or 4 (the background by realsr-v3)
    background: str | None = None  # restore face --upscale: the background model
    face_model: str = "faceir"  # restore sr --faces: the face model


@dataclass(frozen=True)
class RunOptions:
    """The options every restoring command shares, as parsed (one field per option, in --help
    order within its panel)."""

    inputs: Inputs = None
    output: Output = None
    model: Model = None
    checkpoint: Checkpoint = None
    autoencoder: Autoencoder = None
    device: Device = "auto"
    dtype: DtypeOpt = Dtype.auto
    offline: Offline = False
    registry: Registry = None
    seed: Seed = DEFAULT_SEED
    color_fix: ColorFixOpt = ColorFix.NONE
    tile: Tile = None
    tile_overlap: TileOverlap = None
    vae_tile: VaeTile = None
    batch_size: BatchSize = 1
    steps: Steps = None
    timesteps: Timesteps = None
    eta: Eta = 1.0
    early_exit: EarlyExit = None
    fmt: FormatOpt = Format.png
    quality: Quality = None
    suffix: Suffix = None
    overwrite: Overwrite = False
    json: Json = False
    quiet: Quiet = False
    verbose: Verbose = False
    fail_fast: FailFast = False
    shard: Shard = None
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS
    files_from: FilesFrom = None
    manifest: Manifest = None
    engine: EngineOpt = Engine.local
    ray_address: RayAddress = None
    actors: Actors = None

    def request(self, **task_fields: Any) -> Request:
        """The :class:`~restore_cli.request.Request` these options (and a command's own, such as
        ``scale``) ask for; validated there, once."""
        return Request(
            seed=self.seed,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
            vae_tile=self.vae_tile,
            batch_size=self.batch_size,
            steps=self.steps,
            timesteps=None if self.timesteps is None else _timesteps(self.timesteps),
            eta=self.eta,
            early_exit=self.early_exit,
            color_fix=self.color_fix,
            **task_fields,
        )


def _shared_parameters() -> list[inspect.Parameter]:
    hints = {f.name: f for f in dataclasses.fields(RunOptions)}
    annotations = inspect.get_annotations(RunOptions, eval_str=True)
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=annotations[name],
            default=field.default,
        )
        for name, field in hints.items()
    ]


def restoring(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command(run: RunOptions, **own)`` the shared options: Typer sees the inputs first,
    then the command's own options, then :class:`RunOptions`' fields; the command receives those
    packed as ``run``."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, p in inspect.signature(command, eval_str=True).parameters.items()
        if name != "run"
    ]
    shared = _shared_parameters()
    names = {p.name for p in shared}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        run = RunOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        return command(run, **kwargs)

    params = [shared[0], *own, *shared[1:]]  # the positional inputs first
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # Typer must read the new signature, not the command's
    return wrapper
