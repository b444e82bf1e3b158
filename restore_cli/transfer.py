"""Resumable HTTP(S) download of one file: ``FILE.incomplete`` grows until complete, then is renamed.

Plain ``urllib``: the authors' checkpoints are GitHub release assets, outside the Hub's client.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ._version import __version__
from .errors import WeightsError

ProgressFn = Callable[[str, int, int | None], None]  # (label, bytes_done, bytes_total)

_TIMEOUT = 30.0  # seconds, for connecting and for each read
_CHUNK = 1 << 18
ATTEMPTS = 3  # tries per download, each resuming the last, while bytes keep arriving
_USER_AGENT = f"restore-cli/{__version__}"


def partial_path(dest: Path) -> Path:
    """Where ``dest`` grows while it downloads."""
    return dest.with_name(dest.name + ".incomplete")


class _Truncated(Exception):
    """The server sent fewer (or more) bytes than it announced."""


def download_url(
    url: str, dest: Path, label: str, progress: ProgressFn | None, retry_hint: str
) -> None:
    """Download ``url`` to ``dest`` through ``dest.incomplete``, resuming what is there.

    Tries up to ``ATTEMPTS`` times while bytes keep arriving; a failure is a ``WeightsError`` that
    ends with ``retry_hint``. ``dest`` appears only when complete.
    """
    part = partial_path(dest)
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    while True:
        before = _size(part)
        try:
            _fetch(url, part, label, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and before:  # the partial file cannot be resumed: start over
                part.unlink()
                continue
            reason = f"HTTP {exc.code} {exc.reason}"
            raise WeightsError(f"{url}: download failed ({reason})", retry_hint) from None
        except (OSError, http.client.HTTPException, _Truncated) as exc:
            attempts += 1
            if _size(part) <= before or attempts >= ATTEMPTS:
                reason = str(exc) or type(exc).__name__
                raise WeightsError(f"{url}: download failed ({reason})", retry_hint) from None
    os.replace(part, dest)


def _fetch(url: str, part: Path, label: str, progress: ProgressFn | None) -> None:
    start = _size(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # follows redirects
        offset, total = _span(response, start)
        done = offset
        with part.open("ab" if offset else "wb") as fh:  # a 200 to a Range request: start over
            while chunk := response.read(_CHUNK):
                fh.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label, done, total)
    if total is not None and done != total:
        if done > total:
            part.unlink()
        raise _Truncated(f"received {done} of {total} bytes")


def _span(response: http.client.HTTPResponse, start: int) -> tuple[int, int | None]:
    """(offset the body starts at, full size of the file or None)."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length and length.isdigit() else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    if match is None or int(match[1]) != start:
        raise _Truncated(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
    return start, None if match[2] == "*" else int(match[2])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
