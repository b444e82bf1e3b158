"""Files in the weights cache, written without following links and with the umask's permissions.

A cache may be shared between users, and anyone who can write to its folders can leave a link or
a FIFO where we are about to write. So a partial download is opened with ``O_NOFOLLOW`` and must be
a regular file of ours (else the name is removed and a fresh file made; what it pointed to is never
touched), new files are created with ``O_EXCL`` and mode 0o666 narrowed by the umask, as any new
file is (no 0600 from ``mkstemp``), then renamed into place, and a link is deleted together with
its target only when that target lies inside the cache.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import WeightsError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO without a reader fails instead of blocking
_BINARY = getattr(os, "O_BINARY", 0)


def open_partial(path: Path, offset: int) -> BinaryIO:
    """``path`` open for writing at ``offset``: appended to if ``offset``, else made empty.

    Never writes through a link. At offset 0 anything that is not a regular file of ours is
    replaced by a new file; when appending it must be ours and exactly ``offset`` bytes long.
    """
    fd = _open_regular(path, os.O_APPEND if offset else 0)
    if fd is None and offset:
        raise WeightsError(
            f"{path}: the partial download is not a regular file of ours; not writing to it",
            f"delete {path} and retry",
        )
    if fd is None:
        path.unlink(missing_ok=True)  # the link or foreign file itself, never what it points to
        fd = _open_regular(path, os.O_EXCL)
        if fd is None:
            raise WeightsError(
                f"{path}: something keeps replacing the partial download; not writing to it",
                f"check who else writes to {path.parent}",
            )
    if offset and os.fstat(fd).st_size != offset:
        os.close(fd)
        raise OSError(errno.EAGAIN, "the partial download changed size while resuming")
    if not offset:
        os.ftruncate(fd, 0)
    return os.fdopen(fd, "ab" if offset else "wb")


def is_own_file(path: Path) -> bool:
    """``path`` is a regular file of ours (not a link, FIFO or another user's file)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and _ours(info)


@contextmanager
def new_file(path: Path) -> Iterator[Path]:
    """A hidden temporary file beside ``path`` to write; renamed to ``path`` if the block succeeds,
    removed if it fails. The rename replaces a link at ``path``, never writes through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666))
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (ASCII) atomically."""
    with new_file(path) as tmp:
        tmp.write_text(text, encoding="ascii")


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Replace ``path`` with what ``write(tmp)`` writes to a temporary file, atomically.

    ``write`` may recreate the file (safetensors does, with mode 0600): the mode the umask gave
    the temporary file is put back.
    """
    with new_file(path) as tmp:
        mode = stat.S_IMODE(tmp.stat().st_mode)
        write(tmp)
        if stat.S_IMODE(tmp.lstat().st_mode) != mode:
            os.chmod(tmp, mode)


def remove(path: Path, root: Path) -> None:
    """Delete ``path``; when it is a link, its target too if (and only if) that lies under ``root``
    (an hf:// snapshot entry and its blob). Nothing outside ``root`` is ever deleted."""
    target = path.resolve() if path.is_symlink() else None
    path.unlink(missing_ok=True)
    if target is not None and target.is_relative_to(root.resolve()) and target.is_file():
        target.unlink(missing_ok=True)


def _open_regular(path: Path, extra: int) -> int | None:
    """A write descriptor on ``path`` (created if missing) if it is a regular file of ours."""
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _BINARY | extra
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EMLINK, errno.EACCES):
            return None  # a link (ELOOP, EMLINK on BSD), a FIFO, a folder, another user's file
        raise
    info = os.fstat(fd)
    if not (stat.S_ISREG(info.st_mode) and _ours(info)):
        os.close(fd)
        return None
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def _ours(info: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or info.st_uid == os.getuid()
