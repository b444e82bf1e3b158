"""Restoring on a Ray cluster with Ray Data: one model per actor, rows of paths in, records out.

The pattern is Ray Data's batch inference: ``ray.data.from_items(rows).map_batches(RestoreWorker,
fn_constructor_kwargs=..., batch_size=..., num_gpus=..., compute=ActorPoolStrategy(size=N))``.
A row names files, not pixels (``input``, ``output``, optional ``mask`` and ``rel``): each actor
reads, restores and writes them itself, exactly as :func:`restore_cli.restore_file` and the
command line do (skip existing, atomic writes, fidelity, the same seed for every image), and
returns the small ``--json`` record of each. Paths may be fsspec URLs (``s3://...``) that every
node can reach. Rows come from :func:`plan_rows` / :func:`rows_from_jobs`, the command line's
own planning, so both write the same names and refuse the same clashes.

:class:`RestoreWorker` needs no Ray (it pickles, and can be called on a dict of columns
anywhere); :func:`restore_rows` and :func:`connect` import Ray when called
(``pip install "restore-cli[ray]"``).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import itertools
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import batch, files, storage
from .errors import ModelError, RestoreError, UsageError
from .registry import ModelSpec, default_registry
from .request import DEFAULT_MAX_PIXELS, Request

Row = dict[str, Any]
# The record's fields: a batch returns every one (None where a record leaves it out).
COLUMNS = tuple(f.name for f in dataclasses.fields(batch.Record))
ROWS_PER_CALL = 4  # default rows per call of an actor (restore_rows' batch_size)


class RestoreWorker:
    """Restores rows of files with one model, loaded on first use (in the Ray actor).

    ``model`` is a registry name (from the default registry plus ``registry`` files) or a
    :class:`~restore_cli.registry.ModelSpec`. ``**request`` are the
    :class:`~restore_cli.request.Request` fields (``seed``, ``tile``, ``tile_overlap``,
    ``color_fix``, ``scale``); ``quality``, ``overwrite`` and ``max_pixels`` are the command
    line's. Settings are checked here, so a mistake fails before any work is sent out.

    The request's ``batch_size`` (images or tiles through the networks at once) may also be given
    as ``network_batch_size``, the name :attr:`kwargs` uses, so that it does not collide with
    :func:`restore_rows`'s own ``batch_size`` (rows per call of an actor).
    """

    def __init__(
        self,
        task: str,
        model: str | ModelSpec,
        checkpoint: str | None = None,
        autoencoder: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        *,
        quality: int | None = None,
        overwrite: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        offline: bool = False,
        registry: Sequence[str | Path] | None = None,
        network_batch_size: int | None = None,
        **request: Any,
    ) -> None:
        if network_batch_size is not None:
            if "batch_size" in request:
                raise UsageError("both batch_size and network_batch_size given", "give one of them")
            request["batch_size"] = network_batch_size
        spec = model if isinstance(model, ModelSpec) else default_registry(registry).get(model)
        if spec.task != task:
            raise UsageError(
                f"model '{spec.name}' is for `restore {spec.task}`, not `restore {task}`",
                f"pick a {task} model from `restore models list`",
            )
        try:
            self.request = Request(**request)
        except TypeError as e:
            known = ", ".join(f.name for f in dataclasses.fields(Request))
            raise UsageError(f"unknown restoration setting ({e})", f"use {known}") from e
        self.spec, self.task = spec, task
        self.load_args = {"checkpoint": checkpoint, "autoencoder": autoencoder}
        self.load_args |= {"device": device, "dtype": dtype, "offline": offline}
        self.options = batch.FileOptions(
            quality=quality, overwrite=overwrite, max_pixels=max_pixels
        )
        self._restorer: Any = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The constructor's arguments: ``RestoreWorker(**w.kwargs)`` is the same worker."""
        options = {k: getattr(self.options, k) for k in ("quality", "overwrite", "max_pixels")}
        request = dataclasses.asdict(self.request)
        request["network_batch_size"] = request.pop("batch_size")  # not restore_rows' batch_size
        return {"task": self.task, "model": self.spec, **self.load_args, **options, **request}

    def __getstate__(self) -> dict[str, Any]:
        # A copy loads its own model; the spec's read-only mappings travel as plain dicts.
        return {**self.__dict__, "_restorer": None, "spec": _dumps(self.spec)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, spec=pickle.loads(state["spec"]))

    def restorer(self) -> Any:
        """The loaded :class:`~restore_cli.pipeline.Restorer` (loaded on the first call)."""
        if self._restorer is None:
            from .loader import load

            self._restorer = load(self.spec, **self.load_args)
        return self._restorer

    def __call__(self, columns: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Restore a batch: a dict of columns (``input``, ``output``, optional ``mask``, ``rel``;
        numpy arrays or lists) -> a dict of the ``--json`` columns, one row per input row.

        A bad image, mask or output is that row's ``status: "error"``; only a model or weights
        problem (ModelError) raises, since no row can be restored without the model."""
        rows = _rows(columns)
        records: list[dict[str, Any]] = []
        by_mask = itertools.groupby(rows, key=lambda row: row.get("mask") or None)
        for mask, group in by_mask:  # rows sharing a mask run as one batch (reads overlap work)
            records += self._restore(list(group), mask)
        return {key: [record.get(key) for record in records] for key in COLUMNS}

    def _restore(self, rows: list[Row], mask: str | None) -> list[dict[str, Any]]:
        """Records of ``rows``, run as one batch; after an unexpected exception (a bug, not a
        bad file: those are records already), the rest one by one, so it is pinned on its row."""
        options = dataclasses.replace(
            self.options, mask=None if mask is None else storage.location(mask)
        )
        done: list[dict[str, Any]] = []
        try:
            self._run(rows, options, done)
        except ModelError:
            raise
        except Exception:  # noqa: BLE001
            for row in rows[len(done) :]:
                try:
                    self._run([row], options, done)
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a worker goes on, whatever one file does
                    done.append(self._failed(row, exc))
        return done

    def _run(self, rows: list[Row], options: batch.FileOptions, done: list[dict]) -> None:
        jobs = [_job(row) for row in rows]
        records = batch.run(
            jobs, self.request, self.restorer, model=self.spec.name, options=options
        )
        done.extend(record.as_dict() for record in records)

    def _failed(self, row: Row, exc: BaseException) -> dict[str, Any]:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        record = batch.Record(str(row["input"]), str(row["output"]), "error", self.spec.name, 0)
        record.seed, record.error = self.request.seed, f"{row['input']}: {first}"
        return record.as_dict()


class _Pickler(pickle.Pickler):
    """Pickles read-only mappings (the registry's MappingProxyType), which pickle cannot."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, MappingProxyType):
            return _read_only, (dict(obj),)
        return NotImplemented


def _read_only(mapping: dict) -> MappingProxyType:
    return MappingProxyType(mapping)


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _rows(columns: Mapping[str, Any]) -> list[Row]:
    """A dict of equally long columns (as Ray passes a batch) -> a list of plain rows."""
    if "input" not in columns or "output" not in columns:
        raise UsageError(
            "rows need `input` and `output` columns", "plan them with restore_cli.distributed"
        )
    plain = {key: [_plain(v) for v in _values(column)] for key, column in columns.items()}
    return [dict(zip(plain, values, strict=True)) for values in zip(*plain.values(), strict=True)]


def _values(column: Any) -> list[Any]:
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (as Ray hands them over) as Python values; NaN as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def _job(row: Row) -> files.Job:
    source = storage.location(str(row["input"]))
    rel = Path(row.get("rel") or source.name)
    return files.Job(files.InputItem(source, rel), storage.location(str(row["output"])))


# --- planning -----------------------------------------------------------------------------------


def rows_from_jobs(jobs: Iterable[files.Job], *, mask: str | Path | None = None) -> list[Row]:
    """Rows for :func:`restore_rows` from planned jobs; ``mask`` is the batch's mask file or
    folder (``--mask``), looked up per image by the worker as the command line does."""
    rows = []
    for job in jobs:
        source = job.input.mask or mask
        rows.append(
            {
                "input": str(job.input.path),
                "output": str(job.output),
                "mask": None if source is None else str(source),
                "rel": job.input.rel.as_posix(),
            }
        )
    return rows


def plan_rows(
    task: str,
    inputs: Sequence[str | Path],
    *,
    model: str | ModelSpec,
    registry: Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    files_from: str | Path | None = None,
    fmt: str = "png",
    suffix: str | None = None,
    scale: float | None = None,
    shard: str | None = None,
    mask: str | Path | None = None,
) -> list[Row]:
    """The rows ``restore TASK INPUTS -o OUTPUT ...`` would run, planned by the same function
    (:func:`restore_cli.batch.plan`): same names, same refused clashes, same shards."""
    spec = model if isinstance(model, ModelSpec) else default_registry(registry).get(model)
    jobs, _ = batch.plan(
        task,
        inputs,
        scale=scale or spec.scale,
        output=output,
        files_from=files_from,
        fmt=fmt,
        suffix=suffix,
        shard=shard,
    )
    return rows_from_jobs(jobs, mask=mask)


# --- Ray ------------------------------------------------------------------------------------------


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise UsageError(
            "the Ray engine needs Ray Data", 'pip install "restore-cli[ray]"', option="engine"
        ) from e
    return ray


@contextmanager
def connect(address: str | None = None, *, quiet: bool = True, **init_args: Any) -> Iterator[Any]:
    """Ray, connected for the block: to ``address`` ("auto", "ray://host:10001", ...), else to
    ``$RAY_ADDRESS``, else a local cluster started for the block. A connection made here is
    closed at the end; one already open is used as it is. ``init_args`` go to ``ray.init``."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    init_args.setdefault("include_dashboard", False)
    if quiet:
        init_args.setdefault("logging_level", "warning")
        init_args.setdefault("log_to_driver", False)
    try:
        ray.init(address=address, **init_args)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"cannot connect to the Ray cluster {address or '(local)'}: {e}",
            "check --ray-address (host:port of the head node, or auto)",
            option="ray_address",
        ) from e
    try:
        yield ray
    finally:
        ray.shutdown()


def describe_cluster() -> str:
    """One line on the connected cluster's nodes, CPUs and GPUs."""
    ray = _ray()
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return f"{nodes} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"


def default_gpus_per_actor() -> float:
    """1 where the connected cluster has GPUs, else 0 (actors on CPUs)."""
    return 1.0 if _ray().cluster_resources().get("GPU", 0) >= 1 else 0.0


def default_actors(gpus_per_actor: float) -> int:
    """One actor per ``gpus_per_actor`` GPUs; on CPUs, one per node (torch uses all its cores)."""
    ray = _ray()
    if gpus_per_actor > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_actor))
    alive = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0)]
    return max(1, len(alive))


def iter_restore_rows(
    rows: Sequence[Row],
    *,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    batch_size: int = ROWS_PER_CALL,
    show_progress: bool = True,
    **worker_kwargs: Any,
) -> Iterator[Row]:
    """:func:`restore_rows`, yielding each record as it arrives (in no set order)."""
    ray = _ray()
    RestoreWorker(**worker_kwargs)  # settings checked here, before any actor starts
    if not rows:
        return
    if not ray.is_initialized():
        raise UsageError("Ray is not connected", "use `with distributed.connect(...):` first")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = show_progress
    if hasattr(context, "raise_original_map_exception"):  # Ray 2.5x: keep an actor's ModelError
        context.raise_original_map_exception = True
    gpus = default_gpus_per_actor() if gpus_per_actor is None else gpus_per_actor
    size = actors or default_actors(gpus)
    options: dict[str, Any] = {}
    if "udf_modifying_row_count" in inspect.signature(ray.data.Dataset.map_batches).parameters:
        options["udf_modifying_row_count"] = False  # one record per row (Ray 2.5x and later)
    data = ray.data.from_items(list(rows), override_num_blocks=max(1, len(rows) // batch_size))
    results = data.map_batches(
        RestoreWorker,
        fn_constructor_kwargs=worker_kwargs,
        batch_size=batch_size,
        num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=min(size, len(rows))),
        **options,
    )
    try:
        for record in results.iter_rows():
            fields = {key: _plain(record.get(key)) for key in COLUMNS}
            yield batch.Record(**fields).as_dict()  # the keys the command line prints
    except Exception as exc:
        cause = _restore_error(exc)
        if cause is None:
            raise
        raise cause from exc


def restore_rows(
    rows: Sequence[Row],
    *,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    batch_size: int = ROWS_PER_CALL,
    **worker_kwargs: Any,
) -> list[Row]:
    """Restore ``rows`` (from :func:`plan_rows`) on the connected Ray cluster (a local one is
    started if none is) and return their ``--json`` records, in the order of ``rows``.

    ``worker_kwargs`` are :class:`RestoreWorker`'s. ``actors``: model copies at once (default:
    one per GPU, else one per node); ``gpus_per_actor`` (default: 1 where the cluster has GPUs,
    else 0); ``batch_size``: rows per call of an actor. A ModelError in an actor is raised here.
    """
    with connect():
        records = list(
            iter_restore_rows(
                rows,
                actors=actors,
                gpus_per_actor=gpus_per_actor,
                batch_size=batch_size,
                **worker_kwargs,
            )
        )
    order = {str(row["input"]): i for i, row in enumerate(rows)}
    return sorted(records, key=lambda record: order.get(record["input"], len(order)))


def _restore_error(exc: BaseException) -> RestoreError | None:
    """The RestoreError an actor raised, found inside Ray's wrapping of it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, RestoreError):
            return _plain_error(e)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _plain_error(e: RestoreError) -> RestoreError:
    """A RestoreError of the first class in its hierarchy that is ours (Ray makes subclasses
    that mix in its own error types)."""
    ours = next(c for c in type(e).__mro__ if c.__module__ == RestoreError.__module__)
    return ours(e.message, e.hint, option=e.option)
