"""Downloads cached by earlier versions, moved to today's layout where that is safe.

Earlier versions kept ``https://HOST/A/B/FILE`` at ``restore/urls/HOST/A/B/FILE``, a name that
several URLs could share (other schemes, characters replaced by ``_``, long names cut, queries
hashed short). Today's names hash the whole normalised URL (:func:`.urls.cache_key`). A file under
the old name is moved over only when no other URL could have made that name: ``https``, no query,
and every part of the host and path already plain (``A-Z a-z 0-9 . _ -``, not starting with a dot,
at most 100 characters). Anything else is downloaded again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_HOST = re.compile(r"[a-z0-9.-]+")


def old_raw(root: Path, url: str) -> Path | None:
    """Where an earlier version kept the download of ``url``, if that name can only mean ``url``."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or parts.query or parts.username or parts.password:
        return None
    host = parts.hostname or ""
    segments = parts.path.split("/")[1:]
    plain = unquote(parts.path) == parts.path and all(
        _PLAIN.fullmatch(s) and s not in (".", "..") for s in segments
    )
    if not (_HOST.fullmatch(host) and segments and plain):
        return None
    port = f"_{parts.port}" if parts.port else ""
    return root.joinpath("restore", "urls", host + port, *segments)


def move(old: Path, raw: Path, companions: tuple[str, ...]) -> None:
    """Move ``old`` (a regular file) and its ``old + suffix`` companions to ``raw`` (+ suffix).

    Does nothing if ``raw`` is already there. An old partial download is dropped: it has no
    validator to resume it safely with.
    """
    old.with_name(old.name + ".incomplete").unlink(missing_ok=True)
    if raw.exists() or old.is_symlink() or not old.is_file():
        return
    raw.parent.mkdir(parents=True, exist_ok=True)
    for suffix in companions:  # sidecars and conversion first: a raw file alone is re-checked
        side = old.with_name(old.name + suffix)
        if side.is_file() and not side.is_symlink():
            os.replace(side, raw.with_name(raw.name + suffix))
    os.replace(old, raw)
