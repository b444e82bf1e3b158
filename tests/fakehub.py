"""A file server and a fake Hugging Face Hub on 127.0.0.1, for offline download tests.

:class:`FakeServer` serves

* plain files (``add_file``) with ``Content-Length``, a strong ``ETag`` (the sha256 of the
  content) and ``Last-Modified``, ``Range`` and ``If-Range`` support, redirects (``add_redirect``,
  to a path here or any absolute URL), a switch to ignore ``Range`` (``ignore_range``), one to
  send no validators (``validators``) and one to cut the connection after some bytes of the next
  responses (``cut_next``), a ``delay`` before each body and a ``drip``: one byte every so many
  seconds;
* Hub repository files (``add_repo_file``) at ``/{repo_id}/resolve/{revision}/{filename}``, answering
  ``hf_hub_download``'s ``HEAD`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``) and ``GET``.

Every request is recorded in ``requests``. :func:`isolate_hf` points huggingface_hub at the server
and at a temporary cache, through the environment and through ``huggingface_hub.constants`` (read
once, at import).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub
import pytest
from huggingface_hub import constants

_MODIFIED = "Mon, 04 Mar 2024 10:00:00 GMT"
_RESOLVE = re.compile(
    r"/(?P<repo>(?:(?:datasets|spaces)/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)"
)


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]


class FakeServer:
    """Threaded HTTP server on a random port of 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.repos: dict[tuple[str, str], tuple[str, dict[str, bytes]]] = {}
        self.requests: list[Seen] = []
        self.ignore_range = False
        self.validators = True  # send ETag and Last-Modified with plain files
        self.delay = 0.0  # seconds to wait before sending a file's body
        self.drip = 0.0  # > 0: send bodies one byte at a time, this many seconds apart
        self._cut_after = 0
        self._cuts_left = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def add_file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.files[path] = data
        return self.url + path

    def add_redirect(self, path: str, target: str) -> str:
        """Answer ``path`` with a 302 to ``target`` (a path on this server, or an absolute URL);
        returns the URL."""
        self.redirects[path] = target
        return self.url + path

    def add_repo_file(
        self, repo_id: str, filename: str, data: bytes, revision: str = "main", commit: str = ""
    ) -> str:
        """Put ``filename`` in ``repo_id`` at ``revision`` (a branch or tag); returns the commit."""
        commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        files = self.repos.setdefault((repo_id, commit), (commit, {}))[1]
        files[filename] = data
        self.repos[(repo_id, revision)] = (commit, files)
        return commit

    def cut_next(self, after: int, times: int = 1) -> None:
        """Close the connection after ``after`` body bytes, for the next ``times`` file responses."""
        with self._lock:
            self._cut_after, self._cuts_left = after, times

    def seen(self, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def _take_cut(self) -> int | None:
        with self._lock:
            if self._cuts_left <= 0:
                return None
            self._cuts_left -= 1
            return self._cut_after

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        fake = self.fake
        fake._record(Seen(self.command, self.path, dict(self.headers.items())))
        path = urlsplit(self.path).path
        if path in fake.redirects:
            target = fake.redirects[path]
            location = target if "://" in target else fake.url + target
            self._reply(302, b"", {"Location": location}, head)
        elif (match := _RESOLVE.fullmatch(path)) is not None:
            self._serve_repo_file(match, head)
        elif path in fake.files:
            data = fake.files[path]
            validators = {"ETag": f'"{hashlib.sha256(data).hexdigest()[:32]}"'}
            validators["Last-Modified"] = _MODIFIED
            self._send_file(data, validators if fake.validators else {}, head)
        else:
            self._reply(404, b"not found", {}, head)

    def _serve_repo_file(self, match: re.Match[str], head: bool) -> None:
        repo, rev, name = match["repo"], unquote(match["rev"]), unquote(match["file"])
        if (repo, rev) not in self.fake.repos:
            self._reply(404, b"no such revision", {"X-Error-Code": "RevisionNotFound"}, head)
            return
        commit, files = self.fake.repos[(repo, rev)]
        if name not in files:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            self._reply(404, b"no such file", headers, head)
            return
        data = files[name]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        self._send_file(data, {"X-Repo-Commit": commit, "ETag": etag}, head)

    def _send_file(self, data: bytes, headers: dict[str, str], head: bool) -> None:
        headers = {**headers, "Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        stale = if_range is not None and if_range not in (headers.get("ETag"), _MODIFIED)
        if match is None or self.fake.ignore_range or stale:
            self._reply(200, data, headers, head)
            return
        start = int(match[1])
        end = min(int(match[2]), len(data) - 1) if match[2] else len(data) - 1
        if start >= len(data):
            self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            return
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._reply(206, data[start : end + 1], headers, head)

    def _reply(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if status in (200, 206):
            time.sleep(self.fake.delay)
        cut = self.fake._take_cut() if status in (200, 206) else None
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # the client sees the stream end early
            return
        if self.fake.drip > 0 and status in (200, 206):
            for i in range(len(body)):
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    self.close_connection = True
                    return
                time.sleep(self.fake.drip)
            return
        self.wfile.write(body)


def isolate_hf(monkeypatch: pytest.MonkeyPatch, home: Path, endpoint: str) -> Path:
    """Point huggingface_hub (and ``restore_cli.weights.download``) at ``endpoint`` and a cache in ``home``.

    Returns the hub cache directory.
    """
    cache = home / "hub"
    for var in (
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    patched = {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / "agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,  # else the first request of a process fetches an agent list
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    huggingface_hub.close_session()  # a fresh client: no pooled connections to an earlier server
    return cache
