"""``restore sr | inpaint | face``: the restoring commands, sharing one batch driver.

Each command declares only its own options; :func:`options.restoring` adds the shared ones and
hands them over as one :class:`~.options.RunOptions`. :func:`run_batch` turns those into a
:class:`~restore_cli.request.Request`, plans the files and drives :func:`restore_cli.batch.run`.
The engine (torch, the networks) is imported only once there is work to do.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..request import Request
from . import options as o
from .console import Ui

if TYPE_CHECKING:
    from ..batch import FileOptions, Record
    from ..pipeline import Restorer

DEFAULT_MODEL = {
    "sr": "realsr-v3",
    "inpaint": "inpaint-imagenet",
    "face": "faceir",
    "lowlight": "lowlight-lolv1",
    "derain": "derain-raindrop",
    "underwater": "underwater-uieb",
}
FLUX_TASKS = ("lowlight", "derain", "underwater")  # FLUX-IR's models: --steps picks a checkpoint

SR_EXAMPLE = "Example: restore sr photos/ -o photos_x4/ --json > log.jsonl"
INPAINT_EXAMPLE = "Example: restore inpaint photo.jpg --mask photo_mask.png"
FACE_EXAMPLE = "Example: restore face family.jpg --upscale 2 --save-crops faces/"


@o.restoring
def sr(
    run: o.RunOptions,
    scale: Annotated[
        float | None,
        typer.Option(help="Output scale vs the input.", show_default="the model's, 4",
                     rich_help_panel=o.OUTPUT),
    ] = None,
    faces: Annotated[
        bool, typer.Option("--faces", help="Also restore every face (faceir), pasted at x4.",
                           rich_help_panel=o.FACES),
    ] = False,
    detector: o.FaceDetector = o.Detector.resnet50,
    face_threshold: o.FaceThreshold = 0.97,
    only_center_face: o.OnlyCenterFace = False,
    max_faces: o.MaxFaces = None,
    save_crops: o.SaveCrops = None,
    face_model: o.FaceModel = "faceir",
) -> None:  # fmt: skip
    """x4 super-resolution (default model realsr-v3)."""
    face_run = None
    if faces:
        face_run = o.FaceRun(detector, face_threshold, only_center_face, max_faces, save_crops,
                             face_model=face_model)  # fmt: skip
    run_batch("sr", run, run.request(scale=scale), faces=face_run)


@o.restoring
def inpaint(
    run: o.RunOptions,
    mask: Annotated[
        Path | None,
        typer.Option(help="Mask file, or folder of masks (by relative path, then stem). "
                     "White = fill."),
    ] = None,
) -> None:  # fmt: skip
    """Fill the white parts of a mask (default model inpaint-imagenet)."""
    if mask is None and run.files_from is None:
        raise UsageError("inpainting needs --mask FILE|DIR", "white pixels of the mask are filled")
    if mask is not None and not mask.exists():
        raise UsageError(f"{mask}: mask not found", "check the path")
    run_batch("inpaint", run, run.request(), mask=mask)


@o.restoring
def face(
    run: o.RunOptions,
    aligned: Annotated[
        bool,
        typer.Option("--aligned", help="Inputs are aligned 512x512 face crops (no detection).",
                     rich_help_panel=o.FACES),
    ] = False,
    upscale: Annotated[
        int, typer.Option(help="1, 2 or 4: the photo super-resolved by realsr-v3 behind the faces.",
                          rich_help_panel=o.FACES),
    ] = 1,
    detector: o.FaceDetector = o.Detector.resnet50,
    face_threshold: o.FaceThreshold = 0.97,
    only_center_face: o.OnlyCenterFace = False,
    max_faces: o.MaxFaces = None,
    save_crops: o.SaveCrops = None,
    background_model: Annotated[
        str, typer.Option(help="Registry sr model for the background with --upscale 2|4.",
                          rich_help_panel=o.FACES),
    ] = "realsr-v3",
) -> None:  # fmt: skip
    """Restore every face of a photo (detect, align, faceir, paste back), or aligned crops."""
    if upscale not in (1, 2, 4):
        raise UsageError(f"--upscale {upscale}: use 1, 2 or 4", "e.g. --upscale 2")
    face_run = None
    if not aligned:
        face_run = o.FaceRun(
            detector, face_threshold, only_center_face, max_faces, save_crops, upscale,
            background=background_model if upscale > 1 else None,
        )  # fmt: skip
    elif upscale != 1 or save_crops is not None:
        raise UsageError("--upscale and --save-crops are for whole photos", "drop --aligned")
    run_batch("face", run, run.request(), faces=face_run)


@o.restoring
def lowlight(run: o.RunOptions) -> None:
    """Brighten low-light photos (FLUX-IR, trained on LOLv1 indoor scenes); --steps 1|2|10."""
    run_batch("lowlight", run, run.request())


@o.restoring
def derain(run: o.RunOptions) -> None:
    """Remove raindrops on glass (FLUX-IR, RainDrop data; not rain streaks); --steps 1|2|10."""
    run_batch("derain", run, run.request())


@o.restoring
def underwater(run: o.RunOptions) -> None:
    """Correct underwater colour and haze (FLUX-IR, trained on UIEB); --steps 1|2|10."""
    run_batch("underwater", run, run.request())


def run_batch(
    task: str,
    run: o.RunOptions,
    request: Request,
    mask: Path | None = None,
    faces: o.FaceRun | None = None,
) -> None:
    """Plan the outputs of ``run.inputs`` and restore them with ``request``; exits 0 or 1."""
    from .. import batch, weights
    from ..registry import default_registry

    ui = Ui(quiet=run.quiet, json=run.json, verbose=run.verbose)
    reg = default_registry(run.registry)
    if notice := reg.replaced_notice():
        ui.warning(notice)
    name = run.model or DEFAULT_MODEL[task]
    if task in FLUX_TASKS or name in reg.fluxir:
        spec = reg.fluxir.get(name)
        if spec is None or task not in FLUX_TASKS:
            raise UsageError(
                f"model '{name}' is not for `restore {task}`", "see `restore models list`"
            )
        if run.steps is not None and run.steps not in (1, 2, 10):
            raise UsageError(
                f"--steps {run.steps}: FLUX-IR models have 1, 2 or 10", "e.g. --steps 2"
            )
        if run.timesteps is not None or run.eta != 1.0 or run.early_exit is not None:
            raise UsageError(
                "--timesteps, --eta and --early-exit are for the ResShift models", "use --steps"
            )
        request = dataclasses.replace(request, steps=None)
    else:
        spec = reg.get(name)
        spec.trajectory(steps=request.steps, timesteps=request.timesteps)  # usage errors now
    if spec.task != task:
        raise UsageError(
            f"model '{spec.name}' is for `restore {spec.task}`, not `restore {task}`",
            f"pick a {task} model from `restore models list`",
        )
    jobs, ignored = batch.plan(
        task,
        run.inputs or [],
        scale=request.scale or spec.scale,
        output=run.output,
        files_from=run.files_from,
        fmt=run.fmt.value,
        suffix=run.suffix,
        shard=run.shard,
    )  # planned for all inputs, so clashes across shards are refused too
    for path in ignored:
        ui.detail(f"ignored ({path.reason}): {path}")
    options = batch.FileOptions(
        mask=mask,
        quality=run.quality,
        overwrite=run.overwrite,
        fail_fast=run.fail_fast,
        max_pixels=run.max_pixels or None,
        save_crops=None if faces is None else faces.save_crops,
    )
    ui.detail(f"cache: {weights.cache_root()}")
    records = None
    if run.engine is o.Engine.ray and faces is not None:
        raise UsageError("whole-photo faces do not run on Ray yet", "use --engine local")
    if run.engine is o.Engine.ray:
        records = _ray_records(ui, task, spec, run, jobs, request, options)
    with _manifest(run) as manifest:
        _drive(ui, jobs, request, options, _lazy_restorer(ui, spec, run, reg, faces), spec.name,
               records=records, manifest=manifest)  # fmt: skip


def _ray_records(
    ui: Ui, task: str, spec, run: o.RunOptions, jobs, request: Request, options: FileOptions
) -> Iterator[Record]:
    """The records of ``jobs`` restored on a Ray cluster (:mod:`restore_cli.distributed`)."""
    import dataclasses

    from .. import batch, distributed

    rows = distributed.rows_from_jobs(jobs, mask=options.mask)
    worker = distributed.RestoreWorker(
        task,
        spec,
        checkpoint=run.checkpoint,
        autoencoder=run.autoencoder,
        device=run.device,
        dtype=run.dtype.value,
        quality=options.quality,
        overwrite=options.overwrite,
        max_pixels=options.max_pixels,
        offline=run.offline,
        **dataclasses.asdict(request),
    )
    with distributed.connect(run.ray_address, quiet=not run.verbose), _ray_logs(run.verbose):
        ui.detail(f"ray: {distributed.describe_cluster()}")
        for row in distributed.iter_restore_rows(
            rows,
            actors=run.actors,
            batch_size=max(distributed.ROWS_PER_CALL, request.batch_size),  # room for a batch
            show_progress=False,
            **worker.kwargs,
        ):
            yield batch.Record(**row)


@contextmanager
def _ray_logs(verbose: bool) -> Iterator[None]:
    """Ray Data's own log lines (plans, an actor's traceback) only with --verbose: errors reach
    the console as this command's one-line messages."""
    import logging

    logger = logging.getLogger("ray.data")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _manifest(run: o.RunOptions) -> Iterator[IO[str] | None]:
    """``--manifest`` opened for appending, ``{shard}`` expanded (K-of-N; 1-of-1 unsharded)."""
    if run.manifest is None:
        yield None
        return
    k, n = (run.shard or "1/1").split("/")
    path = Path(str(run.manifest).replace("{shard}", f"{k.strip()}-of-{n.strip()}"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a", encoding="utf-8")
    except OSError as e:
        raise UsageError(
            f"--manifest {path}: cannot open it for appending ({e.strerror or e})",
            "give a writable local file",
        ) from e
    with handle:
        yield handle


def _lazy_restorer(ui: Ui, spec, run: o.RunOptions, reg=None, faces: o.FaceRun | None = None):
    """A callable that loads the model(s) on first use (a batch of skipped files never loads
    them): ``spec``'s, and for whole-photo faces the face model, a detector and the background."""
    loaded: list[Restorer] = []

    def load_one(model_spec, checkpoint=None, autoencoder=None) -> Restorer:
        from ..loader import load

        with ui.download_bar() as bar:
            r = load(
                model_spec.name if model_spec.name in (reg.fluxir if reg else {}) else model_spec,
                checkpoint=checkpoint,
                registry=reg,
                steps=(run.steps or 2) if reg and model_spec.name in reg.fluxir else None,
                autoencoder=autoencoder,
                device=run.device,
                dtype=run.dtype.value,
                offline=run.offline,
                progress=bar,
                on_first_download=lambda url: ui.info(
                    f"downloading {url}\n  licence: {model_spec.licence}"
                ),
                on_warning=ui.warning,
            )
        ui.detail(f"model {model_spec.name} on {r.device} ({str(r.dtype).replace('torch.', '')})")
        return r

    def restorer() -> Restorer:
        if not loaded:
            main = load_one(spec, run.checkpoint, run.autoencoder)
            loaded.append(main if faces is None else _face_photo(main, faces))
        return loaded[0]

    def _face_photo(main: Restorer, faces: o.FaceRun):
        from .. import faces as facelib
        from ..facephoto import DETECTORS, FaceOptions, FacePhotoRestorer

        options = FaceOptions(
            threshold=faces.threshold,
            only_center_face=faces.only_center_face,
            max_faces=faces.max_faces,
        )
        with ui.download_bar() as bar:
            detector = facelib.load_detector(
                DETECTORS[faces.detector.value],
                device=main.device,
                registry=reg,
                offline=run.offline,
                progress=bar,
                on_first_download=lambda url: ui.info(f"downloading {url}"),
            )
        if main.spec.task == "face":  # restore face: the background model, if any, is extra
            bg = None if faces.background is None else load_one(reg.get(faces.background))
            return FacePhotoRestorer(main, detector, background=bg, upscale=faces.upscale,
                                     options=options)  # fmt: skip
        face_model = load_one(reg.get(faces.face_model))  # sr --faces: sr is the background
        return FacePhotoRestorer(face_model, detector, background=main, upscale=main.spec.scale,
                                 options=options, primary="background")  # fmt: skip

    return restorer


def _drive(
    ui: Ui,
    jobs,
    request: Request,
    options: FileOptions,
    restorer,
    model: str,
    *,
    records: Iterator | None = None,
    manifest: IO[str] | None = None,
) -> None:
    """Report ``records`` (default: ``jobs`` run here) as they come; each also appended to
    ``manifest`` in one write, flushed, so an interrupted run leaves whole lines."""
    from .. import batch
    from ..intake import printable

    counts = {"ok": 0, "skipped": 0, "error": 0}
    with ui.work_bar(len(jobs)) as (advance, stage):
        if records is None:
            records = batch.run(
                jobs, request, restorer, model=model, options=options, progress=stage
            )
        for record in records:
            counts[record.status] += 1
            advance()
            if manifest is not None:
                manifest.write(json.dumps(record.as_dict()) + "\n")
                manifest.flush()
            if ui.json:
                ui.emit(record.as_dict())
            if record.status == "error":
                ui.error(record.error or "failed")
            elif record.status == "skipped":
                ui.detail(f"skipped (exists, pass --overwrite): {printable(record.output)}")
            else:
                ui.detail(
                    f"{printable(record.input)} -> {printable(record.output)} "
                    f"({record.seconds:.1f} s)"
                )
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    ui.info(f"{summary or 'nothing to do'}")
    raise SystemExit(EXIT_FAILED if counts["error"] else EXIT_OK)
