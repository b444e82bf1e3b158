"""Files behind fsspec URLs (``s3://``, ``gs://``, ``az://``, ...): listing, existence, reading and
atomic writing, with the promises local files have.

A :class:`Url` stands in for a :class:`~pathlib.Path` where inputs, outputs and listings are
planned (``/``, ``parent``, ``stem``, ``exists()``, ...), so naming, clash and skip-existing rules
are the same code for both. Images themselves are decoded and encoded from local files: a URL is
downloaded to a temporary folder first (:func:`local_copy`) and a result is written locally, then
uploaded (:func:`local_target`). An upload goes to a hidden temporary key beside the target
(``.<name>.<random>.tmp``) and is then renamed (copied on the server and deleted, on object
stores), so a final name only ever holds a complete object; a run killed in between leaves at most
a hidden temporary key, which listings skip.

Local paths never come here. fsspec and the protocol's package (s3fs, gcsfs, adlfs) are imported
only when a URL is used; credentials and endpoints come from their usual settings (for S3:
``AWS_PROFILE`` / ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3`` for MinIO and other S3 APIs).
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

from .errors import InputError, RestoreError, UsageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# scheme://... with a scheme of two letters or more, so a Windows drive ("C:\\") is never one
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://(.*)$", re.DOTALL)
# Stores without folders, where a copy is atomic on the server: nothing to create before a write
# (a missing bucket stays an error rather than being created), and a rename is copy + delete.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
_PACKAGE = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}
_PACKAGE |= {"abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs"}


def is_url(value: object) -> bool:
    """True for ``s3://bucket/key`` and other ``scheme://`` strings (and :class:`Url`)."""
    return isinstance(value, Url) or (isinstance(value, str) and _URL.match(value) is not None)


def location(value: str | os.PathLike[str]) -> Path | Url:
    """``value`` as a :class:`Url` if it is one, else as a local :class:`~pathlib.Path`."""
    if isinstance(value, (Path, Url)):
        return value
    text = os.fspath(value)
    return Url(text) if is_url(text) else Path(text)


class Url:
    """An fsspec URL with the part of :class:`~pathlib.Path`'s interface that planning uses.

    ``str()`` is the URL as given (a trailing "/" kept, so it still marks a folder); equality
    and hashing ignore that slash. Reading and writing go through this module's functions, never
    through ``open()``.
    """

    __slots__ = ("_text", "path", "protocol")

    def __init__(self, text: str) -> None:
        match = _URL.match(text)
        if match is None:
            raise ValueError(f"not a URL: {text!r}")
        self._text = text
        self.protocol = match.group(1).lower()
        self.path = match.group(2).rstrip("/")  # "bucket/folder/name.png"

    # -- naming, as PurePath ------------------------------------------------------------------
    def __str__(self) -> str:
        return self._text

    def __fspath__(self) -> str:  # for messages (printable) and abspath-based clash keys
        return self._text

    def __repr__(self) -> str:
        return f"Url({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and (self.protocol, self.path) == (other.protocol, other.path)

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __truediv__(self, other: str | PurePath) -> Url:
        parts = [p for p in PurePosixPath(PurePath(other).as_posix()).parts if p not in ("", ".")]
        return Url(f"{self.protocol}://" + posixpath.join(self.path, *parts)) if parts else self

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> Url:
        head = posixpath.dirname(self.path)
        return Url(f"{self.protocol}://{head}") if head else self

    @property
    def parents(self) -> list[Url]:
        found, here = [], self
        while (up := here.parent) != here:
            found.append(up)
            here = up
        return found

    def with_name(self, name: str) -> Url:
        return self.parent / name

    def resolve(self) -> Url:
        return self

    def expanduser(self) -> Url:
        return self

    # -- the store ------------------------------------------------------------------------------
    def exists(self) -> bool:
        return exists(self)

    def is_dir(self) -> bool:
        return is_dir(self)

    def is_file(self) -> bool:
        return exists(self) and not is_dir(self)

    def stat(self) -> os.stat_result:
        raise OSError(f"{self}: an object in a store has no local file status")

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        makedirs(self)

    def read_text(self, encoding: str = "utf-8") -> str:
        return read_bytes(self).decode(encoding)


# --- the store ---------------------------------------------------------------------------------


def filesystem(url: Url) -> tuple[AbstractFileSystem, str]:
    """(fsspec file system, path inside it) for ``url``; UsageError if the protocol's package
    is missing."""
    try:
        import fsspec
    except ImportError as e:
        raise UsageError(
            f"{url}: reading URLs needs fsspec", 'pip install "restore-cli[s3]" (or fsspec)'
        ) from e
    try:
        fs = fsspec.filesystem(url.protocol)
    except (ImportError, ValueError) as e:
        package = _PACKAGE.get(url.protocol, f"the fsspec package for {url.protocol}://")
        raise UsageError(
            f"{url}: cannot use {url.protocol}:// URLs ({e})",
            'pip install "restore-cli[s3]"' if package == "s3fs" else f"pip install {package}",
        ) from e
    return fs, fs._strip_protocol(str(url)).rstrip("/")


def is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(p in OBJECT_STORES for p in protocols)


def exists(url: Url) -> bool:
    fs, path = filesystem(url)
    return bool(fs.exists(path))


def is_dir(url: Url) -> bool:
    fs, path = filesystem(url)
    return bool(fs.isdir(path))


def makedirs(url: Url) -> None:
    """Create the folder ``url`` where the store has folders; nothing on object stores."""
    fs, path = filesystem(url)
    if not is_object_store(fs):
        fs.makedirs(path, exist_ok=True)


def walk(folder: Url, skip: object = None) -> list[tuple[Url, PurePosixPath]]:
    """(file, path relative to ``folder``) for every object below ``folder``, sorted by relative
    path, leaving out hidden names (any part starting with ".", temporary keys included) and the
    folder ``skip`` (the output folder, when it is a URL inside ``folder``)."""
    fs, path = filesystem(folder)
    skipped = location(skip) if isinstance(skip, (str, os.PathLike, Url)) else None
    found = []
    for key in fs.find(path, withdirs=False):
        rel = PurePosixPath(posixpath.relpath(key, path))
        if any(part.startswith(".") for part in rel.parts):
            continue
        url = folder / rel
        if isinstance(skipped, Url) and (url == skipped or skipped in url.parents):
            continue
        found.append((url, rel))
    return sorted(found, key=lambda pair: pair[1].parts)


def read_bytes(url: Url) -> bytes:
    fs, path = filesystem(url)
    return bytes(fs.cat_file(path))


def write_bytes(url: Url, data: bytes) -> None:
    """Write ``data`` to ``url`` atomically (see the module's notes)."""
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        local = Path(tmp) / "data"
        local.write_bytes(data)
        upload(local, url)


def upload(local: Path, url: Url) -> None:
    """Copy the local file ``local`` to ``url``: to a hidden temporary key beside it, then renamed
    into place. On any exception (KeyboardInterrupt included) the temporary key is removed and
    ``url`` is left as it was."""
    fs, path = filesystem(url)
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".{name}.{secrets.token_hex(4)}.tmp")
    if not is_object_store(fs):
        fs.makedirs(parent, exist_ok=True)
    try:
        fs.put_file(str(local), tmp)
        if is_object_store(fs):
            fs.cp_file(tmp, path)  # a server-side copy: the object appears whole or not at all
            fs.rm_file(tmp)
        else:
            fs.mv(tmp, path)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise


def _remove_quietly(fs: AbstractFileSystem, key: str) -> None:
    try:
        fs.rm_file(key)
    except Exception:  # noqa: BLE001 - already failing; a leftover hidden key is harmless
        pass


def download(url: Url, local: Path) -> None:
    """Copy ``url`` to the local file ``local``; InputError if it cannot be read."""
    fs, path = filesystem(url)
    try:
        fs.get_file(path, str(local))
    except FileNotFoundError as e:
        raise InputError(f"{url}: file not found", "check the URL") from e
    except (OSError, ValueError) as e:
        raise InputError(
            f"{url}: cannot read ({_reason(e)})", "check the URL and your access to the store"
        ) from e


def _reason(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# --- local stand-ins for pixels ------------------------------------------------------------------


@contextmanager
def local_copy(where: Path | Url) -> Iterator[Path]:
    """A local file holding ``where``: the path itself, or a downloaded copy of a URL, removed
    afterwards. Errors raised inside name the URL, not the copy."""
    if not isinstance(where, Url):
        yield where
        return
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        local = Path(tmp) / (where.name or "file")
        download(where, local)
        with _named_as(local, where):
            yield local


@contextmanager
def local_target(where: Path | Url) -> Iterator[Path]:
    """A local path to write ``where`` to: the path itself, or a temporary file (same name)
    uploaded atomically to the URL once the block ends without an exception."""
    if not isinstance(where, Url):
        yield where
        return
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        local = Path(tmp) / (where.name or "file")
        with _named_as(local, where):
            yield local
        upload(local, where)


@contextmanager
def _named_as(local: Path, url: Url) -> Iterator[None]:
    """Re-raise a RestoreError about ``local`` as one about ``url``."""
    try:
        yield
    except RestoreError as e:
        old, new = str(local), str(url)
        hint = e.hint.replace(old, new) if e.hint else e.hint
        raise type(e)(e.message.replace(old, new), hint, option=e.option) from e
