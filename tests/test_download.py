"""restore_cli.weights.download against a local fake server and Hub: caching, resuming, hashes, offline."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from restore_cli.errors import EXIT_MODEL, OfflineError, WeightsError
from restore_cli.registry import Source
from restore_cli.weights import download, hub, transfer

from .fakehub import FakeServer, isolate_hf

RELEASE = "/zsyOAOA/ResShift/releases/download/v2.0"


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(160, 1000, generator=g), "conv.bias": torch.zeros(7)}


def _pth(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": state}, buf)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_same(path: Path, state: dict[str, torch.Tensor]) -> None:
    loaded = load_file(str(path))
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value)


class _Payload:
    """Module-level payloads, made once: a .safetensors and a .pth of the same small state dict."""

    state = _state()
    st = save_safetensors(state)
    pth = _pth(state)


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> Path:
    return isolate_hf(monkeypatch, tmp_path / "hf", server.url)


# --- https:// -------------------------------------------------------------------------------


def test_first_download_then_cache_hit_without_requests(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    licences: list[str] = []
    path = download.resolve(url, on_first_download=licences.append)
    assert path.read_bytes() == _Payload.st
    assert path.is_relative_to(cache / "restore" / "urls")
    assert path.name == "model.safetensors"
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == _sha(_Payload.st)
    assert not list(path.parent.glob("*.incomplete"))
    assert licences == [url]
    before = len(server.requests)
    assert download.resolve(url, on_first_download=licences.append) == path
    assert len(server.requests) == before  # the cache hit made no request
    assert licences == [url]


def test_redirect_is_followed(server: FakeServer, cache: Path) -> None:
    server.add_file("/objects/abc123", _Payload.st)
    url = server.add_redirect(f"{RELEASE}/model.safetensors", "/objects/abc123")
    path = download.resolve(url)
    assert path.read_bytes() == _Payload.st
    assert [r.path for r in server.seen("GET")] == [
        f"{RELEASE}/model.safetensors",
        "/objects/abc123",
    ]


def test_cut_connection_is_resumed_with_range(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    server.cut_next(after=100_000)
    seen: list[tuple[str, int, int | None]] = []
    path = download.resolve(url, progress=lambda *a: seen.append(a))
    assert path.read_bytes() == _Payload.st
    gets = server.seen("GET")
    assert len(gets) == 2
    assert "Range" not in gets[0].headers
    assert gets[1].headers["Range"] == "bytes=100000-"
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and done[-1] == len(_Payload.st)


def test_interrupted_download_resumes_on_next_resolve(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    server.cut_next(after=50_000, times=transfer.ATTEMPTS)
    with pytest.raises(WeightsError) as info:
        download.resolve(url)
    assert url in info.value.message
    assert "--offline" in info.value.hint and "--checkpoint" in info.value.hint
    state = download.status(url)
    assert not state.cached and not state.path.exists()  # a truncated file is never final
    assert state.partial is not None and state.partial.stat().st_size == 150_000
    path = download.resolve(url)
    assert server.seen("GET")[-1].headers["Range"] == "bytes=150000-"
    assert path.read_bytes() == _Payload.st


def _etag(data: bytes) -> str:
    return f'"{_sha(data)[:32]}"'  # what FakeServer sends


def _leave_partial(url: str, data: bytes, validator: str | None) -> Path:
    """An interrupted download of ``url`` on disk: ``data`` so far, with its saved validator."""
    dest = download.status(url).path
    dest.parent.mkdir(parents=True, exist_ok=True)
    transfer.partial_path(dest).write_bytes(data)
    if validator is not None:
        transfer.validator_path(dest).write_text(validator + "\n")
    return transfer.partial_path(dest)


def test_server_ignoring_range_restarts(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    garbage = b"garbage that is not the start of the file"
    partial = _leave_partial(url, garbage, _etag(_Payload.st))
    server.ignore_range = True
    path = download.resolve(url)
    assert server.seen("GET")[0].headers["Range"] == f"bytes={len(garbage)}-"
    assert path.read_bytes() == _Payload.st  # the 200 restarted the file instead of appending
    assert not partial.exists()


def test_progress_reports_increasing_byte_counts(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    seen: list[tuple[str, int, int | None]] = []
    download.resolve(url, progress=lambda *a: seen.append(a))
    assert len(seen) > 1
    assert {label for label, _, _ in seen} == {"model.safetensors"}
    assert {total for _, _, total in seen} == {len(_Payload.st)}
    done = [d for _, d, _ in seen]
    assert all(a < b for a, b in zip(done, done[1:], strict=False)) and done[-1] == len(_Payload.st)


def test_network_failures_are_weights_errors(server: FakeServer, cache: Path) -> None:
    with pytest.raises(WeightsError, match="HTTP 404") as info:
        download.resolve(f"{server.url}/missing.pth")
    assert "retry" in info.value.hint
    with FakeServer() as gone:
        dead = f"{gone.url}/model.pth"
    with pytest.raises(WeightsError, match="download failed") as info:
        download.resolve(dead)
    assert dead in info.value.message


# --- sha256 ---------------------------------------------------------------------------------


def test_pinned_sha256_mismatch_leaves_nothing(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    with pytest.raises(WeightsError, match="pinned") as info:
        download.resolve(Source(url, "0" * 64))
    assert info.value.exit_code == EXIT_MODEL
    files = [p for p in (cache / "restore" / "urls").rglob("*") if p.is_file()]
    assert files == []


def test_pinned_sha256_match(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    path = download.resolve(Source(url, _sha(_Payload.pth).upper()))
    _assert_same(path, _Payload.state)
    state = download.verify(Source(url, _sha(_Payload.pth)))
    assert state.verified and state.pinned and state.sha256 == _sha(_Payload.pth)


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_recorded_sha256_catches_corruption(server: FakeServer, cache: Path, kind: str) -> None:
    data = _Payload.st if kind == "safetensors" else _Payload.pth
    url = server.add_file(f"{RELEASE}/model.{kind}", data)
    path = download.resolve(url)
    assert download.verify(url).verified
    corrupt = bytearray(path.read_bytes())
    corrupt[-1] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    for check in (download.resolve, download.verify):
        with pytest.raises(WeightsError, match="corrupt") as info:
            check(url, name="realsr-v3")
        assert str(path) in info.value.message and str(path) in info.value.hint
        assert "`restore models download realsr-v3 --force`" in info.value.hint
    assert download.resolve(url, force=True) == path
    _assert_same(path, _Payload.state)


def test_new_pin_is_not_satisfied_by_an_old_conversion(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    download.resolve(Source(url, _sha(_Payload.pth)))
    new = _pth(_state(1))
    server.files[f"{RELEASE}/model.pth"] = new  # re-uploaded, and the registry pin updated
    with pytest.raises(WeightsError, match="out of date") as info:
        download.resolve(Source(url, _sha(new)), name="realsr-v3")
    assert "--force" in info.value.hint
    _assert_same(download.resolve(Source(url, _sha(new)), force=True), _state(1))


def test_changed_upstream_file_is_caught_by_the_recorded_sha256(
    server: FakeServer, cache: Path
) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    path = download.resolve(url)
    path.unlink()  # deleted to re-download; the recorded hash stays
    server.files[f"{RELEASE}/model.safetensors"] = save_safetensors(_state(1))
    with pytest.raises(WeightsError, match="recorded at first download"):
        download.resolve(url, name="realsr-v3")
    assert not path.exists()


# --- offline --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_with_cache_makes_no_request(
    server: FakeServer, cache: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    path = download.resolve(url)
    before = len(server.requests)
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download.resolve(url, offline=how == "flag") == path
    assert len(server.requests) == before


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("where", ["https", "hf"])
def test_offline_without_cache_names_the_download_command(
    server: FakeServer, cache: Path, monkeypatch: pytest.MonkeyPatch, how: str, where: str
) -> None:
    url = f"{server.url}{RELEASE}/model.pth" if where == "https" else "hf://o/r/model.pth"
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download.is_offline(how == "flag")
    with pytest.raises(OfflineError) as info:
        download.resolve(url, name="realsr-v3", offline=how == "flag")
    assert info.value.hint == "run `restore models download realsr-v3` while online"
    assert url in info.value.message and info.value.exit_code == EXIT_MODEL
    assert server.requests == []


# --- hf:// ----------------------------------------------------------------------------------


def test_hf_download_pins_the_revision(server: FakeServer, cache: Path) -> None:
    old = server.add_repo_file("owner/repo", "weights/model.safetensors", _Payload.st, "v1")
    new_st = save_safetensors(_state(1))
    server.add_repo_file("owner/repo", "weights/model.safetensors", new_st)
    seen: list[tuple[str, int, int | None]] = []
    path = download.resolve(
        "hf://owner/repo@v1/weights/model.safetensors", progress=lambda *a: seen.append(a)
    )
    assert path.read_bytes() == _Payload.st
    assert path == cache / "models--owner--repo" / "snapshots" / old / "weights/model.safetensors"
    assert seen[-1] == ("model.safetensors", len(_Payload.st), len(_Payload.st))
    assert {r.method for r in server.requests} == {"HEAD", "GET"}
    assert all("/resolve/v1/" in r.path for r in server.requests)
    before = len(server.requests)
    assert download.resolve("hf://owner/repo@v1/weights/model.safetensors") == path
    assert download.resolve("hf://owner/repo@v1/weights/model.safetensors", offline=True) == path
    assert len(server.requests) == before
    assert download.resolve("hf://owner/repo/weights/model.safetensors").read_bytes() == new_st
    assert download.verify("hf://owner/repo@v1/weights/model.safetensors").verified


def test_hf_pth_is_converted_beside_the_hub_cache(server: FakeServer, cache: Path) -> None:
    commit = server.add_repo_file("owner/repo", "model.pth", _Payload.pth)
    path = download.resolve(Source("hf://owner/repo/model.pth", _sha(_Payload.pth)))
    assert (
        path == cache / "restore" / "hub" / "models--owner--repo" / commit / "model.pth.safetensors"
    )
    _assert_same(path, _Payload.state)
    state = download.status("hf://owner/repo/model.pth")
    assert state.cached and state.path == path and len(state.files) == 2


def test_hf_pinned_mismatch_deletes_the_download(server: FakeServer, cache: Path) -> None:
    commit = server.add_repo_file("owner/repo", "model.safetensors", _Payload.st)
    with pytest.raises(WeightsError, match="pinned"):
        download.resolve(Source("hf://owner/repo/model.safetensors", "1" * 64))
    repo = cache / "models--owner--repo"
    assert not (repo / "snapshots" / commit / "model.safetensors").exists()
    assert not any(p.is_file() for p in (repo / "blobs").iterdir())
    assert download.status("hf://owner/repo/model.safetensors").path is None


def test_hf_uri_grammar() -> None:
    ref = hub.parse("hf://datasets/o/r@refs/pr/3/a/b.pth")
    assert (ref.kind, ref.repo_id, ref.revision, ref.filename) == (
        "dataset",
        "o/r",
        "refs/pr/3",
        "a/b.pth",
    )
    ref = hub.parse("hf://o/r/b.safetensors")
    assert (ref.kind, ref.revision, ref.filename) == ("model", "main", "b.safetensors")
    with pytest.raises(WeightsError, match="hf://OWNER/REPO"):
        download.resolve("hf://only-a-repo")


# --- .pth conversion and local files --------------------------------------------------------


def test_pth_is_converted_once(
    server: FakeServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    from restore_cli.weights import checkpoints

    real = checkpoints.save_state_dict

    def counting(state, dst: Path, **kw) -> Path:
        calls.append(Path(dst))
        return real(state, dst, **kw)

    monkeypatch.setattr(checkpoints, "save_state_dict", counting)
    url = server.add_file(f"{RELEASE}/resshift_realsrx4_s4_v3.pth", _Payload.pth)
    path = download.resolve(url)
    assert path.name == "resshift_realsrx4_s4_v3.pth.safetensors"
    _assert_same(path, _Payload.state)
    mtime = path.stat().st_mtime_ns
    assert download.resolve(url) == path
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling would call Path.touch(marker)
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("where", ["local", "https"])
def test_malicious_pth_is_refused(
    server: FakeServer, cache: Path, tmp_path: Path, where: str
) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": _Evil(marker)}, buf)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(buf.getvalue())
    source = str(evil) if where == "local" else server.add_file("/evil.pth", buf.getvalue())
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        download.resolve(source)
    assert not marker.exists()
    assert not list(cache.rglob("*.safetensors"))


def test_local_sources(cache: Path, tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    st = user / "model.safetensors"
    st.write_bytes(_Payload.st)
    assert download.resolve(st) == st
    assert download.resolve(str(st), offline=True) == st
    pth = user / "model.pth"
    pth.write_bytes(_Payload.pth)
    converted = download.resolve(str(pth))
    assert converted == cache / "restore" / "local" / _sha(_Payload.pth) / "model.pth.safetensors"
    _assert_same(converted, _Payload.state)
    assert sorted(p.name for p in user.iterdir()) == ["model.pth", "model.safetensors"]
    assert download.resolve(pth) == converted
    pth.write_bytes(_pth(_state(1)))  # edited: converted again
    again = download.resolve(pth)
    assert again != converted
    _assert_same(again, _state(1))
    with pytest.raises(WeightsError, match="not found"):
        download.resolve(user / "missing.pth")
    with pytest.raises(WeightsError, match="does not match"):
        download.resolve(Source(str(st), "2" * 64))


# --- cache root, status, concurrency ---------------------------------------------------------


def test_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "b"))
    assert download.cache_root() == tmp_path / "a"
    monkeypatch.delenv("HF_HUB_CACHE")
    assert download.cache_root() == tmp_path / "b" / "hub"


def test_status_before_and_after(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    before = download.status(url)
    assert not before.cached and before.size == 0 and before.sha256 is None
    assert not download.verify(url).verified
    path = download.resolve(url)
    after = download.status(url)
    assert after.cached and after.path == path and not after.verified
    assert after.sha256 == _sha(_Payload.pth) and not after.pinned
    assert after.size == sum(p.stat().st_size for p in after.files) and len(after.files) == 2
    assert download.status("hf://owner/repo/model.pth").path is None


def test_concurrent_resolves_download_once(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(download.resolve(url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    assert len(server.seen("GET")) == 1
    _assert_same(results[0], _Payload.state)
    assert os.path.getsize(results[0]) > 0


_CHILD = """
import sys
from restore_cli.weights import download
print("ready", flush=True)
sys.stdin.readline()
print(download.resolve(sys.argv[1]), flush=True)
"""


def test_two_processes_share_one_download(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    server.delay = 0.3  # both processes are inside resolve() while the body is on its way
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:  # go, both at once
        proc.stdin.write("\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert len(server.seen("GET")) == 1
    path = Path(paths.pop())
    _assert_same(path, _Payload.state)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "model.pth", "model.pth.safetensors", "model.pth.safetensors.sha256", "model.pth.sha256",
    ]  # fmt: skip
    assert download.verify(url).verified  # one good file, no partial or temporary one beside it


def test_complete_partial_file_is_fetched_again(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.safetensors", _Payload.st)
    _leave_partial(url, _Payload.st, _etag(_Payload.st))  # complete, never renamed (killed)
    assert download.resolve(url).read_bytes() == _Payload.st
    assert [r.headers.get("Range") for r in server.seen("GET")] == [
        f"bytes={len(_Payload.st)}-",
        None,
    ]


def test_force_redownloads_and_needs_the_network(server: FakeServer, cache: Path) -> None:
    url = server.add_file(f"{RELEASE}/model.pth", _Payload.pth)
    path = download.resolve(url)
    assert download.resolve(url, force=True) == path
    assert len(server.seen("GET")) == 2
    with pytest.raises(OfflineError, match="re-download"):
        download.resolve(url, force=True, offline=True)
