"""Running a model over planned jobs: read, restore, post-process, write atomically, report.

One bad input never stops the batch (unless ``fail_fast``); a model or weights problem does, since
nothing can be restored without the model. The caller (the CLI) owns the console: this module only
hands out :class:`Record` objects and progress calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import files, imageio, storage
from .device import is_out_of_memory
from .errors import InputError, ModelError, OutputError, RestoreError, UsageError
from .facephoto import FaceNotes, FacePhotoRestorer
from .intake import printable
from .pipeline import Progress, Restorer
from .request import DEFAULT_MAX_PIXELS, DEFAULT_SEED, ColorFix, Request


@dataclass(frozen=True)
class FileOptions:
    """The file side of a batch: where masks come from, how outputs are written, when to stop."""

    mask: Path | None = None  # inpainting: a file, or a folder matched by relative path / stem
    quality: int | None = None  # JPEG / WebP quality (default imageio.DEFAULT_QUALITY)
    overwrite: bool = False
    fail_fast: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    save_crops: Path | None = None  # whole-photo faces: write aligned and restored crops here


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
    faces: int | None = None  # whole-photo face restoration: faces restored ...
    face_list: list[dict] | None = None  # ... and per face its box, score and landmarks
    timesteps: list[int] | None = None  # the trained indices visited, in sampling order ...
    eta: float | None = None  # ... and the stochasticity (ResShift models; None when not run)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.faces is None:  # only face runs report faces
            del d["faces"], d["face_list"]
        return d


def suffix_for_scale(scale: float) -> str:
    """``_x4``, ``_x2.5``: the default name suffix of super-resolution outputs."""
    return f"_x{scale:g}"


def run(
    jobs: list[files.Job],
    request: Request,
    restorer: Callable[[], Restorer],
    *,
    model: str,
    options: FileOptions = FileOptions(),
    progress: Progress | None = None,
) -> Iterator[Record]:
    """Process ``jobs`` in order, yielding one record each. ``restorer()`` is called lazily, so a
    batch whose outputs all exist never loads the model. ModelError propagates (exit code 3).

    Decoding the next input and encoding/writing the previous output run in two helper threads
    beside the model (image codecs release the GIL), so a folder costs about the model's time.
    Records still come in job order, each once its output is written. ``request.batch_size``
    above 1 restores same-size neighbours together (:func:`_run_grouped`).
    """
    if request.batch_size > 1:
        yield from _run_grouped(
            jobs, request, restorer, model=model, options=options, progress=progress
        )
        return
    with (
        ThreadPoolExecutor(1, thread_name_prefix="restore-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="restore-write") as writer,
    ):
        pending: list[tuple[Record, Future[None] | None, float]] = []  # at most one write in flight
        ahead: dict[int, Future[Inputs]] = {}  # the next job's inputs, decoded while the model runs
        for i, job in enumerate(jobs):
            record = Record(str(job.input.path), str(job.output), "ok", model, request.seed)
            start = time.perf_counter()
            if job.output.exists() and not options.overwrite:
                record.status = "skipped"
                pending.append((record, None, start))
            else:
                inputs = ahead.pop(i, None) or reader.submit(_read, job, options)
                written: Future[None] | None = None
                try:
                    picture, mask = inputs.result()
                    record.input_size = list(picture.size)
                    following = _next_to_read(jobs, i, options)
                    if following is not None:
                        ahead[following] = reader.submit(_read, jobs[following], options)
                    r = restorer()
                    _note_trajectory(record, r, request)
                    _check_output_budget(r, job, picture, request, options)
                    result = _restore(r, job, picture, mask, request, progress, record, options)
                    record.output_size = list(result.size)
                    written = writer.submit(_write, job, result, options)
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every other failure is this input's
                    _fail(record, job, exc)
                pending.append((record, written, start))
            # Yield all but the newest write (which overlaps the next image), or all of them when
            # --fail-fast must know at once whether this one failed.
            keep = 1 if pending[-1][1] is not None and not options.fail_fast else 0
            while len(pending) > keep:
                done = _finish(*pending.pop(0))
                yield done
                if done.status == "error" and options.fail_fast:
                    return
        for item in pending:
            yield _finish(*item)


Inputs = tuple[imageio.Picture, "np.ndarray | None"]


@dataclass
class _Slot:
    """One job of a group: its record, when it started and, to be restored, its inputs."""

    job: files.Job
    record: Record
    start: float
    picture: imageio.Picture | None = None
    mask: np.ndarray | None = None
    written: Future[None] | None = None


def _run_grouped(
    jobs: list[files.Job],
    request: Request,
    restorer: Callable[[], Restorer],
    *,
    model: str,
    options: FileOptions,
    progress: Progress | None,
) -> Iterator[Record]:
    """:func:`run` at ``request.batch_size`` N > 1: up to N consecutive jobs whose inputs the
    model sees at one size are restored as one group (:meth:`Restorer.restore_pictures`, each
    image with its own generator, so with batch 1's result), while the next group is decoded.
    Records and writes stay in job order; the newest group's records wait for the next group
    (its writes overlap it). A job that cannot be read or checked is recorded alone and its
    neighbours go on; a group that fails as a whole (out of memory, a backend error) is run again
    one image at a time, so each failure lands on its own record. Whole-photo faces (their face
    crops are batched within each photo) and FLUX-IR models run one image at a time."""
    with (
        ThreadPoolExecutor(1, thread_name_prefix="restore-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="restore-write") as writer,
    ):
        groups = _Groups(jobs, request, restorer, model, options, reader)
        pending: list[_Slot] = []
        i = 0
        while i < len(jobs):
            slots, i = groups.collect(i)
            groups.read_ahead(i)  # the next group decodes while this one runs
            members = [slot for slot in slots if slot.picture is not None]
            if members:
                _restore_group(restorer(), members, request, progress, options, writer)
            pending += slots
            keep = 0 if options.fail_fast else len(slots)
            while len(pending) > keep:
                slot = pending.pop(0)
                done = _finish(slot.record, slot.written, slot.start)
                yield done
                if done.status == "error" and options.fail_fast:
                    return
        for slot in pending:
            yield _finish(slot.record, slot.written, slot.start)


@dataclass
class _Groups:
    """Reads jobs ahead and cuts them into groups for :func:`_run_grouped`."""

    jobs: list[files.Job]
    request: Request
    restorer: Callable[[], Restorer]
    model: str
    options: FileOptions
    reader: ThreadPoolExecutor
    reads: dict[int, Future[Inputs]] = dataclasses.field(default_factory=dict)

    def read_ahead(self, first: int) -> None:
        """Start decoding the jobs of the group that starts at ``first`` (those still to make)."""
        for k in range(first, min(len(self.jobs), first + self.request.batch_size)):
            if k not in self.reads and _to_make(self.jobs[k], self.options):
                self.reads[k] = self.reader.submit(_read, self.jobs[k], self.options)

    def collect(self, i: int) -> tuple[list[_Slot], int]:
        """The slots of the group starting at job ``i`` (skipped and failed jobs among them, with
        their records made) and the index of the next group's first job."""
        self.read_ahead(i)
        slots: list[_Slot] = []
        key: tuple[int, int] | None = None
        count, j = 0, i
        while j < len(self.jobs) and count < self.request.batch_size:
            job = self.jobs[j]
            record = Record(
                str(job.input.path), str(job.output), "ok", self.model, self.request.seed
            )
            slot = _Slot(job, record, time.perf_counter())
            if not _to_make(job, self.options):
                record.status = "skipped"
            else:
                inputs = self.reads.pop(j, None) or self.reader.submit(_read, job, self.options)
                try:
                    picture, mask = inputs.result()
                    record.input_size = list(picture.size)
                    r = self.restorer()
                    _note_trajectory(record, r, self.request)
                    _check_output_budget(r, job, picture, self.request, self.options)
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every other failure is this input's
                    _fail(record, job, exc)
                else:
                    k = _batch_key(r, picture, mask)
                    if count and (k is None or k != key):
                        self.reads[j] = inputs  # decoded already: the next group starts here
                        break
                    key, count = k, count + 1
                    slot.picture, slot.mask = picture, mask
            slots.append(slot)
            j += 1
            if record.status == "error" and self.options.fail_fast:
                break
        return slots, j


def _to_make(job: files.Job, options: FileOptions) -> bool:
    return options.overwrite or not job.output.exists()


def _batch_key(
    r: Restorer, picture: imageio.Picture, mask: np.ndarray | None
) -> tuple[int, int] | None:
    """Inputs of one key are restored together: the size the model sees them at. None: alone
    (whole-photo faces, FLUX-IR models, an inpainting input without a mask: see ``_restore``)."""
    if not isinstance(r, Restorer) or (r.spec.task == "inpaint" and mask is None):
        return None
    side = r.spec.input_size
    return (side, side) if side else picture.size


def _restore_group(
    r: Restorer,
    slots: list[_Slot],
    request: Request,
    progress: Progress | None,
    options: FileOptions,
    writer: ThreadPoolExecutor,
) -> None:
    """Restore the slots' pictures (together when there are several) and start their writes."""
    results: list[imageio.Picture] | None = None
    if len(slots) > 1:
        pictures = [slot.picture for slot in slots if slot.picture is not None]
        masks = [slot.mask if r.spec.task == "inpaint" else None for slot in slots]
        try:
            results = r.restore_pictures(pictures, masks, request, progress)
        except ModelError:
            raise
        except (RestoreError, MemoryError, RuntimeError):
            results = None  # one by one below, so each failure is pinned on its own image
    for k, slot in enumerate(slots):
        assert slot.picture is not None
        try:
            if results is not None:
                result = results[k]
            else:
                result = _restore(
                    r, slot.job, slot.picture, slot.mask, request, progress, slot.record, options
                )
            slot.record.output_size = list(result.size)
            slot.written = writer.submit(_write, slot.job, result, options)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - every other failure is this input's
            _fail(slot.record, slot.job, exc)
        slot.picture = slot.mask = None  # the write holds the result; let the inputs go


def _next_to_read(jobs: list[files.Job], i: int, options: FileOptions) -> int | None:
    """The index of the next job, if its output is still to be made (read while the model works)."""
    if i + 1 < len(jobs) and (options.overwrite or not jobs[i + 1].output.exists()):
        return i + 1
    return None


def _finish(record: Record, written: Future[None] | None, start: float) -> Record:
    """The record of a job once its write (if any) is done."""
    if written is not None:
        try:
            written.result()
        except Exception as exc:  # noqa: BLE001
            _fail(record, Path(record.input), exc)
            record.output_size = None
    if record.status != "skipped":
        record.seconds = round(time.perf_counter() - start, 3)
    return record


def _note_trajectory(record: Record, r: Restorer, request: Request) -> None:
    """Put the timesteps and eta a ResShift-family model runs for ``request`` on ``record``, so a
    script can tell which trajectory made each output (FLUX-IR models have their own loops)."""
    trajectory = getattr(r.spec, "trajectory", None)
    if trajectory is None:
        return
    record.timesteps = list(trajectory(steps=request.steps, timesteps=request.timesteps))
    record.eta = request.eta


def _fail(record: Record, job: files.Job | Path, exc: BaseException) -> None:
    """Record ``exc`` as this input's one-line error (RestoreErrors as they are)."""
    path = job.input.path if isinstance(job, files.Job) else job
    record.status = "error"
    if isinstance(exc, RestoreError):
        record.error = str(exc)
    elif isinstance(exc, MemoryError):
        record.error = f"{printable(path)}: out of memory (use a smaller tile)"
    elif isinstance(exc, RuntimeError):  # e.g. CUDA out of memory, a backend without some operation
        first = printable((str(exc).strip().splitlines() or [type(exc).__name__])[0][:300])
        hint = " (use a smaller tile)" if is_out_of_memory(exc) else ""
        record.error = f"{printable(path)}: {first}{hint}"
    else:
        raise exc


def restore_file(
    restorer: Restorer,
    source: str | Path,
    output: str | Path,
    *,
    mask: str | Path | None = None,
    request: Request | None = None,
    seed: int = DEFAULT_SEED,
    scale: float | None = None,
    tile: int | None = None,
    tile_overlap: int | None = None,
    color_fix: ColorFix | str = ColorFix.NONE,
    quality: int | None = None,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict:
    """Restore one image file into ``output`` as the command line does (orientation, alpha, 16 bits,
    ICC and EXIF kept; atomic write; an existing output skipped unless ``overwrite``) and return its
    ``--json`` record. A bad input gives ``status: "error"`` rather than an exception, so a script or
    a distributed worker can go on. ``output`` is named as ``-o`` is on the command line (a file, or
    an existing folder); writing over ``source`` or to an unknown extension is a UsageError.
    ``request`` (a :class:`~restore_cli.request.Request`) replaces ``seed`` ... ``color_fix``."""
    src = Path(source)
    item = files.InputItem(src, Path(src.name))
    (job,) = files.plan_outputs([item], output=str(output), default_suffix="", several=False)
    if request is None:
        request = Request(
            seed=seed, tile=tile, tile_overlap=tile_overlap, color_fix=color_fix, scale=scale
        )
    options = FileOptions(
        mask=None if mask is None else Path(mask),
        quality=quality,
        overwrite=overwrite,
        max_pixels=max_pixels,
    )
    records = run([job], request, lambda: restorer, model=restorer.spec.name, options=options)
    return next(records).as_dict()


def _read(job: files.Job, options: FileOptions) -> Inputs:
    """Decode one job's image (and its mask, when a mask source is given). URLs are read
    from local copies (:func:`storage.local_copy`)."""
    with storage.local_copy(job.input.path) as source:
        picture = imageio.read_image(source, max_pixels=options.max_pixels)
    mask = None
    if job.input.mask is not None or options.mask is not None:
        mask_path = job.input.mask or files.find_mask(options.mask, job.input)
        with storage.local_copy(mask_path) as local:
            mask = imageio.read_mask(
                local, picture.size, image=job.input.path, max_pixels=options.max_pixels
            )
    return picture, mask


def _check_output_budget(
    r: Restorer, job: files.Job, picture: imageio.Picture, request: Request, options: FileOptions
) -> None:
    """The result (at the model's scale, then the one asked for) must fit the pixel limit too."""
    scale = max(r.spec.scale, request.scale or 0)
    imageio.check_budget(
        job.input.path, picture.size, out_scale=scale, max_pixels=options.max_pixels
    )


def _restore(
    r: Restorer,
    job: files.Job,
    picture: imageio.Picture,
    mask: np.ndarray | None,
    request: Request,
    progress: Progress | None,
    record: Record | None = None,
    options: FileOptions | None = None,
) -> imageio.Picture:
    if isinstance(r, FacePhotoRestorer):
        notes = FaceNotes()
        result = r.restore_picture(picture, None, request, progress, notes)
        if record is not None:
            record.faces, record.face_list = len(notes.faces), notes.faces
        if options is not None and options.save_crops is not None:
            _save_crops(options.save_crops, job, notes)
        return result
    if r.spec.task == "inpaint" and mask is None:
        raise InputError(
            f"{printable(job.input.path)}: no mask given",
            "give a mask file or folder",
            option="mask",
        )
    if r.spec.task != "inpaint":
        mask = None
    return r.restore_picture(picture, mask, request, progress)


def _save_crops(folder: Path, job: files.Job, notes: FaceNotes) -> None:
    """``<stem>_face<K>.png`` (the aligned input crop) and ``<stem>_face<K>_restored.png``."""
    stem = job.input.rel.with_suffix("")
    for k, (crop, restored) in enumerate(notes.crops):
        for image, tail in ((crop, ""), (restored, "_restored")):
            target = folder / stem.parent / f"{stem.name}_face{k}{tail}.png"
            try:
                imageio.atomic_write(target, lambda tmp, im=image: im.save(tmp, format="PNG"))
            except OSError as e:
                raise OutputError(
                    f"{printable(target)}: cannot write ({printable(e.strerror or str(e))})",
                    "check that the crops folder is writable",
                    option="save_crops",
                ) from e


def _write(job: files.Job, result: imageio.Picture, options: FileOptions) -> None:
    try:
        files.ensure_output_folder(job)  # never through a link out of the output folder
        with storage.local_target(job.output) as target:  # a URL: written here, then uploaded
            imageio.write_image(target, result, quality=options.quality)
    except OSError as e:
        in_the_way = isinstance(e, (FileExistsError, NotADirectoryError))
        reason = "a file stands where a folder is needed" if in_the_way else e.strerror or str(e)
        raise OutputError(
            f"{printable(job.output)}: cannot write ({printable(reason)})",
            "check that the output folder is writable and has free space",
        ) from e


# --- planning, as the command line does it ---------------------------------------------------

DEFAULT_SUFFIX = {  # sr: suffix_for_scale
    "inpaint": "_inpainted", "face": "_restored",
    "lowlight": "_bright", "derain": "_derained", "underwater": "_restored",
}  # fmt: skip


def default_suffix(task: str, scale: float) -> str:
    """The name suffix of outputs written next to their input: ``_x4``, ``_inpainted``, ..."""
    return suffix_for_scale(scale) if task == "sr" else DEFAULT_SUFFIX[task]


def plan(
    task: str,
    inputs: Sequence[str | Path],
    *,
    scale: float,
    output: str | Path | None = None,
    files_from: str | Path | None = None,
    fmt: str = "png",
    suffix: str | None = None,
    shard: str | None = None,
) -> tuple[list[files.Job], list[files.Ignored]]:
    """(jobs, ignored files) of ``restore TASK INPUTS -o OUTPUT ...``: inputs found (local paths
    or fsspec URLs), outputs planned for all of them (so clashes across shards are refused too),
    then the jobs of ``shard`` ("K/N") only. ``scale`` is the output's scale (the one asked for,
    else the model's), for the default ``_x4`` suffix. UsageError if there is nothing to do."""
    if not inputs and files_from is None:
        raise UsageError("no input given", f"e.g. restore {task} photo.jpg (see --help)")
    located = [storage.location(arg) for arg in inputs]
    items, ignored = files.find_inputs(located, files_from=files_from, skip=output)
    if not items:
        raise UsageError(
            "no images found in the inputs", "supported: png, jpg, webp, tif, bmp, gif, ppm"
        )
    several = len(items) > 1 or any(p.is_dir() for p in located)
    jobs = files.plan_outputs(
        items,
        output=output,
        default_suffix=default_suffix(task, scale),
        fmt=fmt,
        suffix=suffix,
        several=several,
    )
    if shard:
        mine = set(files.shard(items, shard))
        jobs = [job for job in jobs if job.input in mine]
    return jobs, ignored
