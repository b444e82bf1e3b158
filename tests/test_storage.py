"""Object storage through fsspec: URLs planned like paths, and the command line from a folder in a
bucket to a folder in a bucket against a real S3 API (moto's server on 127.0.0.1, started and
stopped here): skip-existing on a rerun, atomic uploads, and a killed run leaves no partial
object."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from restore_cli import storage
from restore_cli.errors import UsageError
from restore_cli.storage import Url

from .scale import (
    cli,
    comparable,
    one_thread,  # noqa: F401  (autouse)
    photos,
    spawn,
    tiny_args,
)

BUCKET = "photos"


# --- URLs as paths, no store needed ---------------------------------------------------------


def test_urls_are_planned_like_paths() -> None:
    url = storage.location("s3://b/in/sub/a.photo.JPG")
    assert isinstance(url, Url) and url.name == "a.photo.JPG" and url.stem == "a.photo"
    assert url.suffix == ".JPG" and url.parent == Url("s3://b/in/sub/")
    assert str(url.with_name("x.png")) == "s3://b/in/sub/x.png"
    assert Url("s3://b/out/") / PurePosixPath("sub/a.png") == Url("s3://b/out/sub/a.png")
    assert Url("s3://b/in") in url.parents and url.resolve() is url
    assert str(Url("s3://b/out/")) == "s3://b/out/"  # as typed: a trailing "/" marks a folder
    for local in ("a.png", "C:\\photos\\a.png", "./s3:/x", "file.png"):
        assert isinstance(storage.location(local), Path)
    assert isinstance(storage.location("gs://bucket/a.png"), Url)


def test_an_unknown_protocol_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="nosuch://"):
        storage.exists(Url("nosuch://bucket/a.png"))


# --- a real S3 API on the loopback ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 (a free port), its endpoint and test credentials in the
    environment (also of processes started from here), a bucket; an s3fs file system on it."""
    moto_server = pytest.importorskip("moto.server", reason='needs pip install ".[test,s3]"')
    s3fs = pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        try:
            yield fs
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def keys(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(k.removeprefix(f"{BUCKET}/{prefix}/") for k in fs.find(f"{BUCKET}/{prefix}"))


def test_upload_is_atomic_and_leaves_nothing_when_interrupted(s3, monkeypatch) -> None:
    url = Url(f"s3://{BUCKET}/atomic/a.png")
    storage.write_bytes(url, b"whole")
    assert storage.read_bytes(url) == b"whole" and keys(s3, "atomic") == ["a.png"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if stopped between the upload and the rename

    monkeypatch.setattr(s3, "cp_file", killed)  # the instance storage uses (fsspec caches it)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(Url(f"s3://{BUCKET}/atomic/b.png"), b"half")
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(url, b"new")
    assert keys(s3, "atomic") == ["a.png"]  # no b.png, no temporary key, a.png as it was
    assert storage.read_bytes(url) == b"whole"


def put_folder(fs, local: Path, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(
                f"{BUCKET}/{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes()
            )


def test_a_folder_in_a_bucket_to_a_folder_in_a_bucket(
    s3, tmp_path, weights, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written locally under a mangled URL
    local = tmp_path / "in"
    photos(local, 3, broken=True)
    (local / "notes.txt").write_text("not an image")
    (local / ".hidden.png").write_bytes((local / "p0.png").read_bytes())
    put_folder(s3, local, "in")
    code, want, _ = cli(["sr", str(local), "-o", str(tmp_path / "ref"), "--json",
                         *tiny_args(weights)], capsys)  # fmt: skip
    assert code == 1

    argv = ["sr", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/out/", "--json", *tiny_args(weights)]
    code, got, err = cli(argv, capsys)
    assert code == 1 and f"s3://{BUCKET}/in/broken.png" in err  # the URL, not a local copy
    assert sorted(comparable(r, f"s3://{BUCKET}/out") for r in got) == sorted(
        comparable(r, tmp_path / "ref") for r in want
    )
    assert keys(s3, "out") == ["p0.png", "p1.png", "sub/p2.png"]  # and no temporary keys
    for name in keys(s3, "out"):  # byte-identical to the same run on local files
        assert s3.cat_file(f"{BUCKET}/out/{name}") == (tmp_path / "ref" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "ref"]

    code, again, _ = cli(argv, capsys)
    assert code == 1
    assert sorted(r["status"] for r in again) == ["error", "skipped", "skipped", "skipped"]

    listing = f"s3://{BUCKET}/list.jsonl"  # --files-from a URL, JSON lines naming outputs
    lines = [{"input": f"s3://{BUCKET}/in/p1.png", "output": f"s3://{BUCKET}/picked/one.webp"}]
    storage.write_bytes(Url(listing), "".join(json.dumps(x) + "\n" for x in lines).encode())
    code, picked, _ = cli(["sr", "--files-from", listing, "--json", *tiny_args(weights)], capsys)
    assert code == 0 and [r["output"] for r in picked] == [f"s3://{BUCKET}/picked/one.webp"]
    assert keys(s3, "picked") == ["one.webp"]


def test_a_killed_run_leaves_no_partial_object_and_a_rerun_resumes(s3, tmp_path, weights):
    local = tmp_path / "in"
    made = photos(local, 8, size=16)
    put_folder(s3, local, "many")
    manifest = tmp_path / "manifest.jsonl"
    argv = ["sr", f"s3://{BUCKET}/many/", "-o", f"s3://{BUCKET}/many-out/", "--json",
            "--manifest", str(manifest), *tiny_args(weights)]  # fmt: skip
    proc = spawn(argv)
    first = proc.stdout.readline()  # one image written: the run is under way
    assert json.loads(first)["status"] == "ok", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup
    proc.communicate(timeout=60)
    done = [k for k in keys(s3, "many-out") if not PurePosixPath(k).name.startswith(".")]
    assert 1 <= len(done) < len(made)
    for name in done:  # only complete objects under final names
        with s3.open(f"{BUCKET}/many-out/{name}", "rb") as f:
            im = Image.open(f)
            im.load()
            assert im.size == (64, 64)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows and all(r["status"] == "ok" for r in rows)  # a valid prefix of whole lines

    rerun = spawn([*argv, "--quiet"])
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sum(r["status"] == "skipped" for r in records) == len(done)
    finals = [k for k in keys(s3, "many-out") if not PurePosixPath(k).name.startswith(".")]
    assert len(finals) == len(made)
