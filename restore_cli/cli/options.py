"""Options shared by the restoring commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Inputs = Annotated[
    list[Path] | None,
    typer.Argument(help="Image files and/or folders (searched recursively).", show_default=False),
]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Output file (one input) or folder (several inputs)."),
]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Registry model name.")]
Checkpoint = Annotated[
    str | None,
    typer.Option(
        help="UNet weights instead of the registry's: a local .safetensors/.pth, or hf://OWNER/REPO[@REV]/FILE."
    ),
]
Autoencoder = Annotated[
    str | None,
    typer.Option(help="Autoencoder weights instead of the registry's (local file or hf://...)."),
]
Seed = Annotated[int, typer.Option(help="Noise seed; every image gets its own generator.")]
Device = Annotated[
    str, typer.Option(help="auto | cpu | cuda | cuda:N | mps (auto: CUDA, MPS, CPU).")
]
Dtype = Annotated[
    str, typer.Option(help="auto | fp32 | fp16 | bf16 (auto: fp16 on CUDA, else fp32).")
]
Tile = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Tile side in input pixels (rounded up to the model's padding multiple, 64 for "
        "x4 SR); 0 = never tile; default from free memory "
        "(up to 2048 output pixels; on the CPU images up to 1024 output pixels stay whole and "
        "larger ones go in 512-pixel tiles, which is faster). "
        "Images no larger than a tile match the reference exactly.",
    ),
]
TileOverlap = Annotated[
    int | None,
    typer.Option(min=0, help="Tile overlap in input pixels (default tile/8, at least 8)."),
]
ColorFix = Annotated[
    str, typer.Option(help="none | wavelet | adain: pull colours toward the input.")
]
Format = Annotated[str, typer.Option("--format", help="png | jpg | webp | same (as the input).")]
Quality = Annotated[
    int | None, typer.Option(min=1, max=100, help="JPEG/WebP quality (default 95).")
]
Suffix = Annotated[str | None, typer.Option(help="Name suffix for outputs (e.g. _restored).")]
Overwrite = Annotated[bool, typer.Option(help="Replace existing outputs (default: skip them).")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.")]
JsonFacts = Annotated[bool, typer.Option("--json", help="The same facts as JSON on stdout.")]
JsonRows = Annotated[bool, typer.Option("--json", help="One JSON object per model on stdout.")]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No messages except errors and warnings.")
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "--debug", "-v", help="More detail; tracebacks on errors.")
]
Offline = Annotated[bool, typer.Option(help="Never use the network (also HF_HUB_OFFLINE=1).")]
FailFast = Annotated[bool, typer.Option(help="Stop at the first image that fails.")]
Shard = Annotated[
    str | None, typer.Option(help="K/N: process a stable 1/N of the inputs (job arrays, GPUs).")
]
MaxPixels = Annotated[
    int, typer.Option(help="Refuse larger images (decompression-bomb guard); 0 = no limit.")
]
FilesFrom = Annotated[
    Path | None, typer.Option(help="Read input paths from this file (one per line; - = stdin).")
]
Registry = Annotated[
    list[Path] | None,
    typer.Option("--registry", help="Extra model registry TOML file(s) (also $RESTORE_REGISTRY)."),
]
