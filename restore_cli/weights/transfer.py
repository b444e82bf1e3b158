"""Resumable HTTP(S) download of one file: ``FILE.incomplete`` grows until complete, then is renamed.

Plain ``urllib``: the authors' checkpoints are GitHub release assets, outside the Hub's client.

* A resume sends ``Range`` with ``If-Range``: the ``ETag`` (or ``Last-Modified``) of the first reply,
  kept in ``FILE.incomplete.validator``. A server whose file changed answers 200 and the download
  starts over, so two versions are never spliced; a partial without a validator is not resumed.
* Each read may wait ``RESTORE_DOWNLOAD_TIMEOUT`` seconds (default 30) and a whole download may take
  ``RESTORE_DOWNLOAD_DEADLINE`` seconds (default 3600, all tries together): a server that drips a
  byte now and then is cut off. What came is kept; the next run resumes it.
* Redirects go only to ``http(s)://`` addresses, and never from ``https`` down to ``http``.
* ``USER:PASSWORD@`` in a URL becomes an ``Authorization`` header that is not sent on to redirect
  targets; no message or label shows it (:func:`.urls.redact`).
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .._version import __version__
from ..errors import WeightsError
from . import cachefiles
from .urls import redact, scrub, without_credentials

ProgressFn = Callable[[str, int, int | None], None]  # (label, bytes_done, bytes_total)

TIMEOUT_ENV = "RESTORE_DOWNLOAD_TIMEOUT"  # seconds one read (or connecting) may wait
DEADLINE_ENV = "RESTORE_DOWNLOAD_DEADLINE"  # seconds a whole download may take
_TIMEOUT = 30.0
_DEADLINE = 3600.0
_CHUNK = 1 << 18
ATTEMPTS = 3  # tries per download, each resuming the last, while bytes keep arriving
_USER_AGENT = f"restore-cli/{__version__}"


def partial_path(dest: Path) -> Path:
    """Where ``dest`` grows while it downloads."""
    return dest.with_name(dest.name + ".incomplete")


def validator_path(dest: Path) -> Path:
    """Where the ``ETag``/``Last-Modified`` of the partial download of ``dest`` is kept."""
    return dest.with_name(dest.name + ".incomplete.validator")


def discard_partial(dest: Path) -> None:
    """Forget an interrupted download of ``dest`` (the names only: links are not followed)."""
    partial_path(dest).unlink(missing_ok=True)
    validator_path(dest).unlink(missing_ok=True)


class _Truncated(Exception):
    """The server sent fewer (or more) bytes than it announced."""


class _Refused(Exception):
    """A reply this client will not follow or use (a redirect to an unsafe address)."""


class _Late(Exception):
    """The download ran past its deadline."""


def download_url(
    url: str, dest: Path, label: str, progress: ProgressFn | None, retry_hint: str
) -> None:
    """Download ``url`` to ``dest`` through ``dest.incomplete``, resuming what is there.

    Tries up to ``ATTEMPTS`` times while bytes keep arriving, within the deadline; a failure is a
    ``WeightsError`` that ends with ``retry_hint``. ``dest`` appears only when complete.
    """
    part = partial_path(dest)
    part.parent.mkdir(parents=True, exist_ok=True)
    timeout, deadline = _seconds(TIMEOUT_ENV, _TIMEOUT), _seconds(DEADLINE_ENV, _DEADLINE)
    clock = _Clock(time.monotonic() + deadline, timeout)
    attempts = 0
    shown = redact(url)
    while True:
        before = _size(part)
        try:
            _fetch(url, dest, label, progress, clock)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and before:  # the partial file cannot be resumed: start over
                discard_partial(dest)
                continue
            reason = scrub(f"HTTP {exc.code} {exc.reason}", url)
            raise WeightsError(f"{shown}: download failed ({reason})", retry_hint) from None
        except _Refused as exc:
            raise WeightsError(
                f"{shown}: download refused ({exc})",
                "the server redirected to an insecure or unsupported address; check the URL",
            ) from None
        except _Late:
            raise WeightsError(
                f"{shown}: download took longer than {deadline:g} s and was stopped "
                f"({_size(part)} bytes kept to resume)",
                f"retry, or raise {DEADLINE_ENV} (seconds) on a slow connection",
            ) from None
        except (OSError, http.client.HTTPException, _Truncated) as exc:
            attempts += 1
            if _size(part) <= before or attempts >= ATTEMPTS:
                reason = scrub(str(exc) or type(exc).__name__, url)
                raise WeightsError(f"{shown}: download failed ({reason})", retry_hint) from None
    os.replace(part, dest)
    validator_path(dest).unlink(missing_ok=True)


class _Clock:
    def __init__(self, end: float, timeout: float) -> None:
        self.end, self.timeout = end, timeout

    def left(self) -> float:
        """Seconds until the deadline, for the next wait; raises :class:`_Late` past it."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise _Late
        return min(self.timeout, left)


def _fetch(url: str, dest: Path, label: str, progress: ProgressFn | None, clock: _Clock) -> None:
    part, saved = partial_path(dest), validator_path(dest)
    start, validator = _resumable(part, saved)
    target, auth = without_credentials(url)
    request = urllib.request.Request(
        target, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    )
    if auth is not None:
        request.add_unredirected_header("Authorization", auth)  # not sent on to another host
    if start:
        request.add_header("Range", f"bytes={start}-")
        request.add_header("If-Range", validator)
    with _OPENER.open(request, timeout=clock.left()) as response:
        offset, total = _span(response, start, validator)
        done = offset
        with cachefiles.open_partial(part, offset) as fh:  # emptied first when offset is 0
            if offset == 0:  # a new file (or the server's file changed): remember which version
                saved.unlink(missing_ok=True)
                if (fresh := _validator_of(response)) is not None:
                    cachefiles.write_text(saved, fresh + "\n")
            while True:
                clock.left()
                chunk = response.read1(_CHUNK)  # what has arrived: a drip cannot hold a read open
                if not chunk:
                    break
                fh.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label, done, total)
    if total is not None and done != total:
        if done > total:
            discard_partial(dest)
        raise _Truncated(f"received {done} of {total} bytes")


def _resumable(part: Path, saved: Path) -> tuple[int, str | None]:
    """(bytes to resume from, the validator to send); (0, None) where resuming is not safe."""
    if not cachefiles.is_own_file(part) or not cachefiles.is_own_file(saved):
        return 0, None
    try:
        validator = saved.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return 0, None
    if not validator or "\n" in validator or "\r" in validator:
        return 0, None
    return _size(part), validator


def _validator_of(response: http.client.HTTPResponse) -> str | None:
    """A strong ``ETag``, else ``Last-Modified``: what ``If-Range`` may carry (RFC 9110 13.1.5)."""
    etag = (response.headers.get("ETag") or "").strip()
    if etag.startswith('"') and etag.endswith('"') and len(etag) > 2 and etag.isascii():
        return etag
    modified = (response.headers.get("Last-Modified") or "").strip()
    return modified if modified and modified.isascii() else None


def _span(
    response: http.client.HTTPResponse, start: int, validator: str | None
) -> tuple[int, int | None]:
    """(offset the body starts at, full size of the file or None)."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length and length.isdigit() else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    if match is None or int(match[1]) != start:
        raise _Truncated(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
    etag = response.headers.get("ETag")
    if validator and validator.startswith('"') and etag and etag.strip() != validator:
        raise _Truncated("the server resumed a different version of the file")
    return start, None if match[2] == "*" else int(match[2])


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to ``http(s)`` only, and never from ``https`` down to ``http``."""

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        location = headers.get("location") or headers.get("uri")
        if location:
            new = urlsplit(urljoin(req.full_url, location)).scheme.lower()
            old = urlsplit(req.full_url).scheme.lower()
            if new not in ("http", "https"):
                raise _Refused(f"a redirect to a {new or 'relative'}: address")
            if old == "https" and new != "https":
                raise _Refused("a redirect from https to http")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_SafeRedirects)


def _seconds(var: str, default: float) -> float:
    value = os.environ.get(var, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise WeightsError(f"{var}={value!r} is not a number of seconds", f"set {var} to e.g. 60")
    return seconds


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0
