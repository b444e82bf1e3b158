"""Weights on disk: a source -> a verified local ``.safetensors`` file, downloaded on first use.

A source is a registry :class:`~restore_cli.registry.Source` or a string: a local file,
``hf://OWNER/REPO[@REVISION]/PATH`` (a file on the Hugging Face Hub) or an ``https://`` URL (the
authors publish their ``.pth`` files as GitHub release assets). Everything is cached in the Hugging
Face hub cache (:func:`cache_root`: ``HF_HUB_CACHE``, or ``HF_HOME/hub``)::

    models--OWNER--REPO/                  hf:// files, kept by huggingface_hub itself
    restore/hub/models--OWNER--REPO/COMMIT/PATH.sha256        recorded sha256 of an hf:// file
    restore/hub/models--OWNER--REPO/COMMIT/PATH.safetensors   its conversion, when it is a .pth
    restore/urls/HOST/KEY/FILE            an https:// download (FILE.incomplete until complete);
                                          KEY hashes the normalised URL, FILE is its last part
    restore/urls/HOST/KEY/FILE.sha256, FILE.safetensors, FILE.safetensors.sha256
    restore/local/SHA256/FILE.safetensors a user's own .pth, converted (keyed by its content)
    restore/.locks/KEY.lock               one lock per resolved file, for concurrent processes

Every ``.sha256`` sidecar is in ``sha256sum`` format. A pinned hash (``Source.sha256``) is that of
the file as published; without one the hash is recorded at first download (trust on first use),
and only after the download has been read as a checkpoint (and, where the caller says what it
expects, found to fit): an HTML page, an empty or short body is deleted, never recorded. Either
hash is checked on every :func:`resolve` and by :func:`verify`, so a corrupt cache fails loudly.
``.pth`` files are converted once (``torch.load(weights_only=True)``: no pickled code runs);
afterwards only the ``.safetensors`` is read. Nothing outside the cache is written through a link
or deleted (:mod:`.cachefiles`), and no message shows credentials of a URL (:mod:`.urls`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from filelock import FileLock
from huggingface_hub import constants

from ..errors import OfflineError, WeightsError
from ..registry import Source
from . import cachefiles, hub, legacy
from .transfer import ProgressFn, discard_partial, download_url, partial_path
from .urls import cache_key, redact

if TYPE_CHECKING:
    from .firstuse import Expect

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOTHING = Path(os.devnull)  # the "sidecar" of a user's own file: reads as nothing recorded
_RETRY_HINT = (
    "check the connection and retry (an interrupted download resumes), use --offline with a "
    "cached copy, or pass --checkpoint FILE"
)


@dataclass(frozen=True)
class CacheStatus:
    """What the cache holds for one source (``restore models list`` / ``verify``)."""

    source: str
    path: Path | None  # the .safetensors resolve() returns; None: an hf:// file not cached yet
    cached: bool  # resolve() needs no network
    size: int  # bytes on disk: the download plus its conversion
    files: tuple[Path, ...]  # the files on disk (download, conversion)
    sha256: str | None  # of the download: pinned, else recorded at first download
    pinned: bool
    partial: Path | None = None  # an interrupted download that the next resolve() resumes
    verified: bool = False  # only from verify(): every file re-hashed against a known sha256


@dataclass(frozen=True)
class _Files:
    """Where one source lives on disk."""

    raw: Path  # the file as published (downloaded) or the user's own file
    final: Path  # the .safetensors that resolve() returns: raw itself, or its conversion
    raw_sum: Path  # sidecar with raw's sha256
    final_sum: Path  # sidecar with final's sha256 (raw_sum when final is raw)


@dataclass(frozen=True)
class _Request:
    name: str | None
    offline: bool
    force: bool
    progress: ProgressFn | None
    on_first_download: Callable[[str], None] | None
    expect: Expect | None = None


def cache_root() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(env[var])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def is_offline(offline: bool = False) -> bool:
    """``offline``, or ``HF_HUB_OFFLINE`` set (read at call time, like huggingface_hub reads it)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return offline or value.upper() in constants.ENV_VARS_TRUE_VALUES


def resolve(
    source: Source | str | Path,
    *,
    name: str | None = None,
    offline: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    on_first_download: Callable[[str], None] | None = None,
    expect: Expect | None = None,
) -> Path:
    """Local path of a verified ``.safetensors`` file for ``source``, downloading it if needed.

    ``name`` (the model's) only words the hints of errors; ``force`` re-downloads a cached file;
    ``on_first_download(url)`` (credentials redacted) is called before a download starts;
    ``progress`` as bytes arrive. ``expect(state_dict)`` checks a new download before its hash is
    recorded (raise :class:`WeightsError` if it does not fit the model, e.g. with
    :func:`~restore_cli.weights.load_into` into the network built on ``meta``); a download that
    is no checkpoint, or does not fit, is deleted.
    """
    src = _as_source(source)
    req = _Request(name, is_offline(offline), force, progress, on_first_download, expect)
    remote = src.url.startswith("hf://") or _is_http(src.url)
    if remote and req.force and req.offline:
        raise OfflineError(
            f"{redact(src.url)}: cannot re-download while offline",
            "drop --offline or unset HF_HUB_OFFLINE",
        )
    if src.url.startswith("hf://"):
        return _resolve_hf(src, req)
    if _is_http(src.url):
        return _resolve_url(src, req)
    return _resolve_local(src, req)


def status(source: Source | str | Path) -> CacheStatus:
    """What is cached for ``source``; no network, no hashing (see :func:`verify`).

    A local file is not cached: its status describes the file itself.
    """
    src = _as_source(source)
    pin = _pin(src)
    files = _cached_files(src)
    if files is None:
        return CacheStatus(redact(src.url), None, False, 0, (), pin, pin is not None)
    on_disk = tuple(p for p in dict.fromkeys((files.raw, files.final)) if p.is_file())
    partial = partial_path(files.raw)
    return CacheStatus(
        source=redact(src.url),
        path=files.final,
        cached=bool(on_disk),
        size=sum(p.stat().st_size for p in on_disk),
        files=on_disk,
        sha256=pin or _read_sum(files.raw_sum),
        pinned=pin is not None,
        partial=partial if partial.is_file() else None,
    )


def verify(source: Source | str | Path, *, name: str | None = None) -> CacheStatus:
    """Re-hash the cached files of ``source``; a mismatch raises :class:`WeightsError`.

    ``verified`` is True when every file on disk had a pinned or recorded sha256 and matched it.
    """
    src = _as_source(source)
    state = status(src)
    files = _cached_files(src)
    if files is None or not state.cached:
        return state
    checks = {files.raw: _pin(src) or _read_sum(files.raw_sum)}
    if files.final != files.raw:
        checks[files.final] = _read_sum(files.final_sum)
    known = True
    for path, expected in checks.items():
        if not path.is_file():
            continue
        actual = _sha256(path)
        if expected is None:
            known = False
        elif actual != expected:
            raise _corrupt(path, expected, actual, name)
    return replace(state, verified=known)


# --- the three kinds of source -------------------------------------------------------------


def _resolve_url(src: Source, req: _Request) -> Path:
    files = _url_files(src.url)
    pin = _pin(src)
    if not req.force and (hit := _hit(files, pin, req.name)) is not None:
        return hit
    with _lock(files):
        _adopt_legacy(src.url, files)
        if req.force:
            _discard(files, files.raw)
            discard_partial(files.raw)
        elif (hit := _hit(files, pin, req.name)) is not None:
            return hit  # another process finished it while this one waited
        if files.raw.is_symlink():
            files.raw.unlink()  # a link where a download belongs: the name goes, not its target
        fresh = not files.raw.is_file()
        if fresh and req.offline:
            raise _offline_error(src.url, files.raw, req.name)
        if fresh:
            if req.on_first_download is not None:
                req.on_first_download(redact(src.url))
            download_url(src.url, files.raw, files.raw.name, req.progress, _RETRY_HINT)
        return _finish(src.url, files, pin, fresh, req)


def _resolve_hf(src: Source, req: _Request) -> Path:
    ref = hub.parse(src.url)
    pin = _pin(src)
    raw = None if req.force else hub.cached(ref, cache_root())
    fresh = raw is None
    if raw is None:
        if req.offline:
            raise _offline_error(src.url, None, req.name)
        if req.on_first_download is not None:
            req.on_first_download(src.url)
        raw = hub.fetch(src.url, ref, cache_root(), req.force, req.progress, _RETRY_HINT)
    files = _hf_files(ref, raw)
    if not fresh and (hit := _hit(files, pin, req.name)) is not None:
        return hit
    with _lock(files):
        if req.force:
            _discard(files)
        elif not fresh and (hit := _hit(files, pin, req.name)) is not None:
            return hit
        return _finish(src.url, files, pin, fresh, req)


def _resolve_local(src: Source, req: _Request) -> Path:
    path = Path(src.url).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found", "check the path")
    pin = _pin(src)
    digest = _sha256(path) if pin or path.suffix != ".safetensors" else None
    if pin and digest != pin:
        raise WeightsError(
            f"{path}: sha256 {digest} does not match the expected {pin}",
            "check that this is the right file, or fix the sha256 in the registry",
        )
    if path.suffix == ".safetensors" or digest is None:
        return path
    files = _layout(path, cache_root() / "restore" / "local" / digest / path.name)
    if (hit := _hit(files, None, req.name)) is not None:
        return hit
    with _lock(files):
        if (hit := _hit(files, None, req.name)) is not None:
            return hit
        return _convert(files)


# --- cache layout ---------------------------------------------------------------------------


def _layout(raw: Path, side: Path) -> _Files:
    """Files of ``raw``; our own (sidecars, conversion) are named after ``side``."""
    raw_sum = side.with_name(side.name + ".sha256")
    if raw.suffix == ".safetensors":
        return _Files(raw, raw, raw_sum, raw_sum)
    final = side.with_name(side.name + ".safetensors")
    return _Files(raw, final, raw_sum, final.with_name(final.name + ".sha256"))


def _url_files(url: str) -> _Files:
    """``restore/urls/HOST/KEY/FILE``: KEY hashes the whole normalised URL, FILE keeps it readable."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "") + (f"_{parts.port}" if parts.port else "")
        segments = [s for s in unquote(parts.path).split("/") if s not in ("", ".", "..")]
    except ValueError:  # a bad port or bracket
        host, segments = "", []
    if not host or not segments:
        raise WeightsError(
            f"{redact(url)}: the URL names no file", "give the URL of a weights file"
        )
    folder = cache_root() / "restore" / "urls" / _safe(host) / cache_key(url)
    raw = folder / _safe(segments[-1])
    return _layout(raw, raw)


def _adopt_legacy(url: str, files: _Files) -> None:
    """Move a download cached by an earlier version to ``files``, where that is safe."""
    old = legacy.old_raw(cache_root(), url)
    if old is not None and not files.raw.exists():
        companions = (".sha256", ".safetensors", ".safetensors.sha256")
        legacy.move(old, files.raw, companions if files.final != files.raw else (".sha256",))


def _hf_files(ref: hub.HubRef, raw: Path) -> _Files:
    # raw is .../snapshots/COMMIT/PATH (a link into blobs/); our files go under that commit
    commit = raw.parents[len(PurePosixPath(ref.filename).parts) - 1].name
    repo = f"{ref.kind}s--" + ref.repo_id.replace("/", "--")
    side = cache_root() / "restore" / "hub" / repo / commit / ref.filename
    return _layout(raw, side)


def _cached_files(src: Source) -> _Files | None:
    """The layout of ``src`` without the network; None for an hf:// file not in the cache."""
    if src.url.startswith("hf://"):
        ref = hub.parse(src.url)
        raw = hub.cached(ref, cache_root())
        return None if raw is None else _hf_files(ref, raw)
    if _is_http(src.url):
        files = _url_files(src.url)
        if not files.raw.exists() and legacy.old_raw(cache_root(), src.url) is not None:
            with _lock(files):
                _adopt_legacy(src.url, files)
        return files
    path = Path(src.url).expanduser()  # a user's own file; nothing recorded for it
    return _Files(path, path, _NOTHING, _NOTHING)


def _safe(segment: str) -> str:
    """``segment`` as a plain file name of at most 100 characters, keeping its extension."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", segment)
    if len(cleaned) > 100:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = stem[: 99 - len(ext)] + dot + ext if dot and len(ext) <= 20 else cleaned[:100]
    return "_" + cleaned if cleaned.startswith(".") else cleaned


def _lock(files: _Files) -> FileLock:
    key = hashlib.sha256(str(files.final).encode()).hexdigest()[:24]
    path = cache_root() / "restore" / ".locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _discard(files: _Files, *extra: Path) -> None:
    """Forget what was recorded or converted for ``files`` (plus ``extra``), for a re-download."""
    derived = [files.raw_sum, files.final_sum] + ([files.final] if files.final != files.raw else [])
    for path in (*derived, *extra):
        path.unlink(missing_ok=True)


# --- checking and converting ----------------------------------------------------------------


def _hit(files: _Files, pin: str | None, name: str | None) -> Path | None:
    """``files.final`` if it is there and matches its sha256; None if it must be (re)made."""
    if not files.final.is_file() or (files.final.is_symlink() and not _in_hub(files.final)):
        return None  # missing, or a link placed in our part of the cache: not followed
    if pin and files.final != files.raw and _read_sum(files.raw_sum) != pin:
        return None  # converted from another file than the pinned one: check that one
    expected = pin if pin and files.final == files.raw else _read_sum(files.final_sum)
    if expected is None:
        return None
    actual = _sha256(files.final)
    if actual != expected:
        raise _corrupt(files.final, expected, actual, name)
    return files.final


def _finish(url: str, files: _Files, pin: str | None, fresh: bool, req: _Request) -> Path:
    """Check the sha256 of the downloaded file (or, with none known yet, that it is a checkpoint
    that fits, then record it), then convert it once if needed."""
    from . import firstuse  # torch: only once there is a file to check

    actual = _sha256(files.raw)
    recorded = _read_sum(files.raw_sum)
    expected = pin or recorded
    if expected is not None and actual != expected:
        if not fresh:
            raise _corrupt(files.raw, expected, actual, req.name)
        came = firstuse.what_came(files.raw)
        _remove(files.raw)
        kind = "pinned" if pin else "recorded at first download"
        fix = (
            "retry; if it persists the file on the server changed: check the registry's sha256"
            if pin
            else "if it was replaced on purpose, run "
            f"`restore models download {req.name or 'NAME'} --force`"
        )
        raise WeightsError(
            f"{redact(url)}: the downloaded file does not match the sha256 {kind} "
            f"(expected {expected}, got {actual}{'' if came is None else '; ' + came}); "
            "it was deleted",
            fix,
        )
    state = None
    if fresh or expected is None:  # not vouched for by a hash: it must be weights that fit
        keep = pin is not None or (not fresh and url.startswith("hf://"))  # not ours to delete
        state = firstuse.check(url, files.raw, req.expect, keep, _remove)
    if recorded != actual:
        _write_sum(files.raw_sum, actual, files.raw.name)
    return files.final if files.final == files.raw else _convert(files, state)


def _remove(path: Path) -> None:
    """Delete a download; an hf:// snapshot entry with its blob, never anything outside the cache."""
    cachefiles.remove(path, cache_root())


def _in_hub(path: Path) -> bool:
    """``path`` is a link of huggingface_hub's snapshots into its blobs, inside the cache."""
    return path.resolve().is_relative_to(cache_root().resolve()) and "blobs" in path.resolve().parts


def _convert(files: _Files, state: dict | None = None) -> Path:
    from .checkpoints import read_state_dict, save_state_dict  # torch, only for a .pth

    tensors = read_state_dict(files.raw) if state is None else state  # weights_only; WeightsError
    save_state_dict(tensors, files.final, converted_from=files.raw.name)
    _write_sum(files.final_sum, _sha256(files.final), files.final.name)
    return files.final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _read_sum(path: Path) -> str | None:
    if not path.is_file():  # a FIFO would block the read
        return None
    try:
        with path.open("rb") as fh:
            token = fh.read(256).decode("ascii").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return token if _SHA256.fullmatch(token) else None


def _write_sum(path: Path, digest: str, filename: str) -> None:
    cachefiles.write_text(path, f"{digest}  {filename}\n")


def _pin(src: Source) -> str | None:
    if not src.sha256:
        return None
    pin = src.sha256.strip().lower()
    if not _SHA256.fullmatch(pin):
        raise WeightsError(
            f"{redact(src.url)}: sha256 {src.sha256!r} is not 64 hex digits",
            "fix the sha256 in the registry",
        )
    return pin


def _corrupt(path: Path, expected: str, actual: str, name: str | None) -> WeightsError:
    return WeightsError(
        f"{path}: cached file is corrupt or out of date "
        f"(sha256 {actual[:16]}..., expected {expected[:16]}...)",
        f"re-download it with `restore models download {name or 'NAME'} --force`, or delete {path}",
    )


def _offline_error(url: str, where: Path | None, name: str | None) -> OfflineError:
    missing = f"{redact(url)} is not in the cache" + (f" ({where})" if where else "")
    return OfflineError(
        f"{missing} and offline mode is on",
        f"run `restore models download {name or 'NAME'}` while online",
    )


def _as_source(source: Source | str | Path) -> Source:
    return source if isinstance(source, Source) else Source(os.fspath(source))


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("https://", "http://"))
