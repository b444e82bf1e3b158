"""Running a model over planned jobs: read, restore, post-process, write atomically, report.

One bad input never stops the batch (unless ``fail_fast``); a model or weights problem does, since
nothing can be restored without the model. The caller (the CLI) owns the console: this module only
hands out :class:`Record` objects and progress calls.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import files, imageio
from .device import is_out_of_memory
from .errors import InputError, ModelError, OutputError, RestoreError
from .pipeline import Progress, Restorer


@dataclass(frozen=True)
class Settings:
    """What the restoring commands pass on for every image."""

    model: str
    seed: int = 12345
    mask: Path | None = None  # inpainting: a file, or a folder matched by relative path / stem
    scale: float | None = None  # resize the model's output to scale x the input
    tile: int | None = None
    tile_overlap: int | None = None
    color_fix: str = "none"
    quality: int | None = None
    overwrite: bool = False
    fail_fast: bool = False
    max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS


@dataclass
class Record:
    """One line of ``--json`` output."""

    input: str
    output: str
    status: str  # ok | skipped | error
    model: str
    seed: int
    error: str | None = None
    seconds: float = 0.0
    input_size: list[int] | None = None  # [W, H]
    output_size: list[int] | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d


def suffix_for_scale(scale: float) -> str:
    """``_x4``, ``_x2.5``: the default name suffix of super-resolution outputs."""
    return f"_x{scale:g}"


def run(
    jobs: list[files.Job],
    settings: Settings,
    restorer: Callable[[], Restorer],
    progress: Progress | None = None,
) -> Iterator[Record]:
    """Process ``jobs`` in order, yielding one record each. ``restorer()`` is called lazily, so a
    batch whose outputs all exist never loads the model. ModelError propagates (exit code 3)."""
    for job in jobs:
        record = Record(str(job.input.path), str(job.output), "ok", settings.model, settings.seed)
        start = time.perf_counter()
        if job.output.exists() and not settings.overwrite:
            record.status = "skipped"
            yield record
            continue
        try:
            process(job, settings, restorer, progress, record)
        except ModelError:
            raise
        except RestoreError as exc:
            record.status, record.error = "error", str(exc)
        except MemoryError:
            record.status = "error"
            record.error = f"{job.input.path}: out of memory (pass a smaller --tile)"
        except RuntimeError as exc:  # e.g. CUDA out of memory, a backend without some operation
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            hint = " (pass a smaller --tile)" if is_out_of_memory(exc) else ""
            record.status, record.error = "error", f"{job.input.path}: {first}{hint}"
        record.seconds = round(time.perf_counter() - start, 3)
        yield record
        if record.status == "error" and settings.fail_fast:
            return


def restore_file(
    restorer: Restorer,
    source: str | Path,
    output: str | Path,
    *,
    mask: str | Path | None = None,
    seed: int = 12345,
    scale: float | None = None,
    tile: int | None = None,
    tile_overlap: int | None = None,
    color_fix: str = "none",
    quality: int | None = None,
    overwrite: bool = False,
    max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS,
) -> dict:
    """Restore one image file into ``output`` as the command line does (orientation, alpha, 16 bits,
    ICC and EXIF kept; atomic write; an existing output skipped unless ``overwrite``) and return its
    ``--json`` record. A bad input gives ``status: "error"`` rather than an exception, so a script or
    a distributed worker can go on. ``output`` is named as ``-o`` is on the command line (a file, or
    an existing folder); writing over ``source`` or to an unknown extension is a UsageError."""
    src = Path(source)
    item = files.InputItem(src, Path(src.name))
    (job,) = files.plan_outputs([item], output=str(output), default_suffix="", several=False)
    settings = Settings(
        model=restorer.spec.name,
        seed=seed,
        mask=None if mask is None else Path(mask),
        scale=scale,
        tile=tile,
        tile_overlap=tile_overlap,
        color_fix=color_fix,
        quality=quality,
        overwrite=overwrite,
        max_pixels=max_pixels,
    )
    return next(run([job], settings, lambda: restorer)).as_dict()


def process(
    job: files.Job,
    settings: Settings,
    restorer: Callable[[], Restorer],
    progress: Progress | None,
    record: Record,
) -> None:
    picture = imageio.read_image(job.input.path, max_pixels=settings.max_pixels)
    width, height = picture.size
    record.input_size = [width, height]
    r = restorer()
    mask = None
    if r.spec.task == "inpaint":
        if settings.mask is None:
            raise InputError(f"{job.input.path}: no mask given", "pass --mask FILE|DIR")
        mask_path = files.find_mask(settings.mask, job.input)
        mask = imageio.read_mask(
            mask_path, (width, height), image=job.input.path, max_pixels=settings.max_pixels
        )
    out = r.restore(
        picture.pixels,
        mask,
        seed=settings.seed,
        tile=settings.tile,
        tile_overlap=settings.tile_overlap,
        color_fix=settings.color_fix,
        progress=progress,
    )
    if settings.scale is not None and not math.isclose(settings.scale, r.spec.scale):
        target = (max(1, round(width * settings.scale)), max(1, round(height * settings.scale)))
        out = imageio.resize(out, target)
    out_h, out_w = out.shape[:2]
    alpha = picture.alpha
    if alpha is not None and alpha.shape != (out_h, out_w):
        alpha = imageio.resize(alpha, (out_w, out_h))
    result = dataclasses.replace(picture, pixels=out, alpha=alpha)
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        imageio.write_image(job.output, result, quality=settings.quality)
    except OSError as e:
        in_the_way = isinstance(e, (FileExistsError, NotADirectoryError))
        reason = "a file stands where a folder is needed" if in_the_way else e.strerror or str(e)
        raise OutputError(
            f"{job.output}: cannot write ({reason})",
            "check that the output folder is writable and has free space",
        ) from e
    record.output_size = [out_w, out_h]
