"""A cache and a network that are not on our side: links and FIFOs in the cache, files that change
between tries, URLs that look alike, pages instead of weights, drips, bad redirects, credentials."""

from __future__ import annotations

import email.message
import io
import os
import stat
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from restore_cli.errors import OfflineError, WeightsError
from restore_cli.registry import Source
from restore_cli.weights import cachefiles, download, transfer, urls
from restore_cli.weights.checkpoints import load_into

from .fakehub import FakeServer, isolate_hf
from .test_download import RELEASE, _assert_same, _etag, _leave_partial, _Payload, _sha, _state


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> Path:
    return isolate_hf(monkeypatch, tmp_path / "hf", server.url)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


# --- links, FIFOs and other people's files in the cache --------------------------------------


def test_link_at_the_partial_is_not_written_through(
    server: FakeServer, cache: Path, tmp_path: Path
) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    dest = download.status(url).path
    dest.parent.mkdir(parents=True)
    transfer.partial_path(dest).symlink_to(victim)
    transfer.validator_path(dest).write_text(_etag(_Payload.st))  # even with a validator
    path = download.resolve(url)
    assert path.read_bytes() == _Payload.st and not path.is_symlink()
    assert victim.read_bytes() == b"precious"
    assert "Range" not in server.seen("GET")[0].headers  # a link is never resumed


def test_fifo_at_the_partial_does_not_hang(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    dest = download.status(url).path
    dest.parent.mkdir(parents=True)
    os.mkfifo(transfer.partial_path(dest))
    assert download.resolve(url).read_bytes() == _Payload.st


def test_append_refuses_a_file_that_is_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"12345")
    link = tmp_path / "part"
    link.symlink_to(target)
    with pytest.raises(WeightsError, match="not a regular file of ours"):
        cachefiles.open_partial(link, 5)
    assert target.read_bytes() == b"12345"


def test_mismatch_never_deletes_outside_the_cache(
    server: FakeServer, cache: Path, tmp_path: Path
) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    dest = download.status(url).path
    dest.parent.mkdir(parents=True)
    dest.symlink_to(victim)  # placed where the download will be
    with pytest.raises(WeightsError, match="pinned"):
        download.resolve(Source(url, "0" * 64))
    assert victim.read_bytes() == b"precious"
    assert not dest.exists() and not dest.is_symlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    link = cache / "link"
    link.symlink_to(outside)
    cachefiles.remove(link, cache)
    assert outside.exists() and not link.is_symlink()


def test_files_keep_the_umask_permissions(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    old = os.umask(0o022)
    try:
        path = download.resolve(url)
    finally:
        os.umask(old)
    made = [p for p in _files_under(path.parent) if not p.name.endswith(".lock")]
    assert len(made) == 4  # the download, its conversion and their sha256 sidecars
    for p in made:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


# --- resuming only the same version ---------------------------------------------------------


def test_resume_of_a_changed_file_starts_over(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    server.cut_next(after=50_000, times=transfer.ATTEMPTS)
    with pytest.raises(WeightsError):
        download.resolve(url)
    new = save_safetensors(_state(1))
    server.files[f"{RELEASE}/model.safetensors"] = new  # replaced upstream meanwhile
    path = download.resolve(url)
    last = server.seen("GET")[-1].headers
    assert last["Range"] == "bytes=150000-" and last["If-Range"] == _etag(_Payload.st)
    assert path.read_bytes() == new  # the 200 restarted it: no splice of two versions
    assert not transfer.validator_path(path).exists()


def test_partial_without_a_validator_is_not_resumed(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    server.validators = False
    server.cut_next(after=50_000)
    path = download.resolve(url)
    assert [r.headers.get("Range") for r in server.seen("GET")] == [None, None]
    assert path.read_bytes() == _Payload.st
    _leave_partial(url, b"from some older version", None)  # e.g. left by an earlier restore
    path.unlink()
    path.with_name(path.name + ".sha256").unlink()
    assert download.resolve(url).read_bytes() == _Payload.st
    assert server.seen("GET")[-1].headers.get("Range") is None


# --- one URL, one file ----------------------------------------------------------------------


def test_different_urls_never_share_a_cached_file(server: FakeServer, cache: Path) -> None:
    base = f"{server.url}{RELEASE}"
    urls_ = [
        f"{base}/a b.pth", f"{base}/a_b.pth", f"{base}/a%2Fb.pth", f"{base}/a/b.pth",
        f"{base}/m.pth?v=1", f"{base}/m.pth?v=2", f"{base}/m.pth", f"{base}/./m.pth?v=1#x",
        "https://example.org/m.pth", "http://example.org/m.pth", f"{base}/" + "x" * 150 + "1.pth",
        f"{base}/" + "x" * 150 + "2.pth",
    ]  # fmt: skip
    paths = [download.status(u).path for u in urls_]
    assert len(set(paths)) == len(paths)
    assert all(p.name.endswith(".pth.safetensors") for p in paths)
    assert paths[0].name == "a_b.pth.safetensors"  # readable
    loud = "HTTP://" + base.split("://", 1)[1]  # the scheme (and host) are case-insensitive
    variants = (f"{base}/m.pth", f"{loud}/m.pth", f"{base}/%6D.pth", f"{base}/m.pth#frag")
    same = [download.status(u).path for u in variants]
    assert len(set(same)) == 1


def test_old_cache_layout_is_adopted_only_where_unambiguous(
    server: FakeServer, cache: Path
) -> None:
    url = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/autoencoder_vq_f4.pth"
    old = cache / "restore/urls/github.com/zsyOAOA/ResShift/releases/download/v2.0"
    old.mkdir(parents=True)
    (old / "autoencoder_vq_f4.pth").write_bytes(_Payload.pth)
    (old / "autoencoder_vq_f4.pth.sha256").write_text(f"{_sha(_Payload.pth)}  x.pth\n")
    assert download.status(url).cached
    path = download.resolve(url, offline=True)  # no network: the old download, moved over
    assert path.parent.name == urls.cache_key(url)
    _assert_same(path, _Payload.state)
    assert not (old / "autoencoder_vq_f4.pth").exists()
    ambiguous = "https://github.com/o/r/releases/download/v1/a.pth?x=1"
    legacy_dir = cache / "restore/urls/github.com/o/r/releases/download/v1"
    legacy_dir.mkdir(parents=True)
    (legacy_dir / "a.pth").write_bytes(_Payload.pth)
    with pytest.raises(OfflineError):
        download.resolve(ambiguous, offline=True)
    assert (legacy_dir / "a.pth").exists()


# --- a first download that is not the weights -----------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "got an HTML page (login or error page?)"),
        (b"", "got an empty file"),
        (b"Not Found", "got 9 bytes of text ('Not Found')"),
        (b'{"error": "rate limited"}', "got a JSON document"),
        (_Payload.pth[:-5000], "bytes that are not a readable checkpoint"),
    ],
    ids=["html", "empty", "text", "json", "short"],
)  # fmt: skip
def test_bad_first_download_is_deleted_not_recorded(
    server: FakeServer, cache: Path, body: bytes, said: str
) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", body)
    with pytest.raises(WeightsError) as info:
        download.resolve(url, name="realsr-v3")
    assert said in info.value.message and "it was deleted" in info.value.message
    assert "nothing was kept" in info.value.hint and "check the URL" in info.value.hint
    assert _files_under(cache / "restore" / "urls") == []
    server.files[f"{RELEASE}/model.pth"] = _Payload.pth  # fixed upstream: works without --force
    _assert_same(download.resolve(url), _Payload.state)


def test_bad_first_hub_download_is_deleted_with_its_blob(server: FakeServer, cache: Path) -> None:
    server.add_repo_file(
        "owner/repo", "model.safetensors", b"<html><body>Access denied</body></html>"
    )
    with pytest.raises(WeightsError, match="got an HTML page") as info:
        download.resolve("hf://owner/repo/model.safetensors")
    assert "HF_TOKEN" in info.value.hint
    repo = cache / "models--owner--repo"
    assert not [p for p in (repo / "blobs").iterdir() if p.is_file()]
    assert download.status("hf://owner/repo/model.safetensors").path is None


def test_download_must_fit_what_the_caller_expects(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    module = torch.nn.Linear(3, 2, device="meta")  # not the network these weights belong to
    calls = []

    def expect(state: dict[str, torch.Tensor]) -> None:
        calls.append(1)
        load_into(torch.nn.Linear(3, 2, device="meta"), state, "the model")

    with pytest.raises(WeightsError, match="does not fit the model") as info:
        download.resolve(url, expect=expect)
    assert "missing" in info.value.message and "conv.weight" in info.value.message
    assert _files_under(cache / "restore" / "urls") == []
    fits = {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}
    server.files[f"{RELEASE}/model.safetensors"] = save_safetensors(fits)
    path = download.resolve(url, expect=expect)
    assert download.resolve(url, expect=expect) == path
    assert len(calls) == 2  # checked before recording, not on every cache hit
    assert module.weight.is_meta


# --- network edges --------------------------------------------------------------------------


def test_a_dripping_server_is_cut_off_at_the_deadline(
    server: FakeServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(transfer.DEADLINE_ENV, "2")
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    server.drip = 0.2  # a byte every 0.2 s: no read ever times out
    began = time.monotonic()
    with pytest.raises(WeightsError, match="longer than 2 s") as info:
        download.resolve(url)
    assert (
        time.monotonic() - began < 30
    )  # the whole file would drip for minutes; slack for a loaded CI
    assert transfer.DEADLINE_ENV in info.value.hint
    state = download.status(url)
    assert state.partial is not None and not state.cached  # kept, to resume


def test_deadline_must_be_seconds(monkeypatch: pytest.MonkeyPatch, server, cache) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    monkeypatch.setenv(transfer.DEADLINE_ENV, "soon")
    with pytest.raises(WeightsError, match="not a number of seconds"):
        download.resolve(url)


def test_redirect_to_another_scheme_is_refused(server: FakeServer, cache: Path) -> None:
    url = server.add_redirect(f"{RELEASE}/model.pth", "ftp://127.0.0.1/model.pth")
    with pytest.raises(WeightsError, match="refused.*ftp"):
        download.resolve(url)


def _redirect(source: str, location: str) -> None:
    handler = transfer._SafeRedirects()
    handler.parent = urllib.request.build_opener()
    headers = email.message.Message()
    headers["Location"] = location
    handler.http_error_302(urllib.request.Request(source), io.BytesIO(), 302, "Found", headers)


def test_https_never_redirects_down_to_http() -> None:
    with pytest.raises(transfer._Refused, match="https to http"):
        _redirect("https://example.org/a.pth", "http://example.org/a.pth")
    for bad in ("file:///etc/passwd", "data:,x", "ftp://example.org/a"):
        with pytest.raises(transfer._Refused):
            _redirect("https://example.org/a.pth", bad)


def test_credentials_are_used_but_never_shown(server: FakeServer, cache: Path) -> None:
    server.add_file("/private/model.safetensors", _Payload.st)
    host = server.url.split("//", 1)[1]
    url = f"http://alice:s3cr3tpw@{host}/private/model.safetensors?token=t0k3nvalue&v=2"
    told: list[str] = []
    labels: list[str] = []
    path = download.resolve(
        url, on_first_download=told.append, progress=lambda *a: labels.append(a[0])
    )
    assert path.read_bytes() == _Payload.st
    assert server.seen("GET")[0].headers["Authorization"] == "Basic YWxpY2U6czNjcjN0cHc="
    missing = url.replace("model.", "missing.")
    with pytest.raises(WeightsError) as info:
        download.resolve(missing)
    status = download.status(url)
    shown = " ".join([*told, *labels, str(info.value), status.source, str(status.path)])
    assert "s3cr3tpw" not in shown and "t0k3nvalue" not in shown and "alice" not in shown
    assert "***@" in told[0] and "token=***" in told[0] and "v=2" in told[0]


def test_authorization_is_not_sent_on_to_a_redirect(server: FakeServer, cache: Path) -> None:
    server.add_file("/objects/abc", _Payload.st)
    server.add_redirect("/private/model.safetensors", "/objects/abc")
    host = server.url.split("//", 1)[1]
    download.resolve(f"http://bob:pw1234@{host}/private/model.safetensors")
    first, second = server.seen("GET")
    assert "Authorization" in first.headers and "Authorization" not in second.headers


def test_redact_and_scrub() -> None:
    url = "https://u:p%40ss@h.org/a.pth?X-Amz-Signature=abcdef&X-Amz-Credential=me%2F1&n=3"
    assert (
        urls.redact(url) == "https://***@h.org/a.pth?X-Amz-Signature=***&X-Amz-Credential=***&n=3"
    )
    text = "failed for u:p%40ss and abcdef and me%2F1 (p@ss)"
    assert urls.scrub(text, url) == "failed for *** and *** and *** (***)"
    assert urls.redact("https://h.org/a.pth") == "https://h.org/a.pth"
