"""Hostile conditions around a folder run, with the command line as a subprocess on tiny models:
SIGINT / SIGTERM at random moments, two processes on the same folders, a full disk, a folder that
cannot be written, an input deleted mid-run, and file names holding terminal control characters.

Whatever happens: one error line per failing file (never a traceback), the documented exit code,
never a partial or temporary file under the output folder, and finished outputs byte-identical to
those of an undisturbed run (same seed), so a re-run completes the batch exactly.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import TINY_REGISTRY

TIMEOUT = 600  # seconds per command: generous, for a loaded CI machine; nothing asserts on time
SIZES = [48, 32] * 4  # 8 inputs; x4 outputs of about 100 kB and 45 kB as PNG
READY = "cache:"  # the first --verbose line of a batch: the command line is in charge from here


def picture(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(a, "RGB").save(path)
    return path


def make_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(SIZES):
        picture(folder / f"{i:02d}.png", size, seed=i)
    return folder


@pytest.fixture(scope="module")
def command(weights):
    """command(inputs, output, *extra): ``restore sr`` on the tiny model, as a subprocess."""
    unet, ae = weights("tiny-sr")

    def make(src: Path, out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "restore_cli", "sr", str(src), "-o", str(out), "--json",
                "--registry", str(TINY_REGISTRY), "-m", "tiny-sr", "--checkpoint", str(unet),
                "--autoencoder", str(ae), "--device", "cpu", *extra]  # fmt: skip

    return make


def environment(tmp: Path) -> dict[str, str]:
    """The test's environment with a private TMPDIR, to see that nothing is left there either."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


@dataclass
class Reference:
    src: Path  # the 8 inputs
    outputs: dict[str, bytes]  # output name -> bytes, from one undisturbed run
    span: float  # seconds from READY to the end of that run


@pytest.fixture(scope="module")
def reference(tmp_path_factory, command) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    src, out = make_inputs(root / "in"), root / "out"
    proc = subprocess.Popen(
        command(src, out, "--verbose"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(root / "tmp"),
    )
    wait_ready(proc)
    start = time.monotonic()
    stdout, err = proc.communicate(timeout=TIMEOUT)
    span = time.monotonic() - start
    assert proc.returncode == 0, err
    assert [r["status"] for r in records(stdout)] == ["ok"] * len(SIZES)
    outputs = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(outputs) == [f"{i:02d}.png" for i in range(len(SIZES))]
    return Reference(src, outputs, span)


def wait_ready(proc: subprocess.Popen) -> str:
    """Read stderr up to the READY line (the CLI's own code runs from there on); what was read."""
    seen = ""
    while True:
        line = proc.stderr.readline()
        seen += line
        if not line or line.startswith(READY):
            assert line, f"no {READY!r} line on stderr:\n{seen}"
            return seen


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def error_lines(err: str) -> list[str]:
    """stderr's error lines, after checking that nothing in it is a traceback."""
    assert "Traceback" not in err and "unexpected" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def assert_clean(out: Path, ref: Reference, tmp: Path | None = None) -> set[str]:
    """Everything under ``out`` is a finished output, byte for byte the reference's: no partial
    file under a final name, no hidden temporary file, nothing else. The names found."""
    found = set()
    for p in sorted(out.rglob("*")) if out.exists() else []:
        assert p.is_file() and p.parent == out and p.name in ref.outputs, f"stray {p}"
        assert p.read_bytes() == ref.outputs[p.name], f"{p} differs from an undisturbed run"
        found.add(p.name)
    if tmp is not None:
        assert list(tmp.iterdir()) == [], "files left in TMPDIR"
    return found


# --- interrupts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_at_a_random_moment_leaves_whole_files_and_a_rerun_completes_the_batch(
    tmp_path, command, reference, sig, code
) -> None:
    """Three seeded moments drawn from the span of an undisturbed run (model loading, restoring,
    encoding, writing, or already done): exit 130 / 143 (or 0 if the run had finished), one
    line on stderr, only whole outputs, and a re-run finishes the batch byte-identically."""
    rng = random.Random(1000 + int(sig))
    for k in range(3):
        delay = rng.uniform(0.0, reference.span)
        out, tmp = tmp_path / f"out{k}", tmp_path / f"tmp{k}"
        proc = subprocess.Popen(
            command(reference.src, out, "--verbose"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(tmp),
        )
        before = wait_ready(proc)
        time.sleep(delay)
        proc.send_signal(sig)
        stdout, err = proc.communicate(timeout=TIMEOUT)
        err = before + err
        # 0: the run was over; -sig: killed by the signal (the shell's 128 + N) while exiting,
        # once the batch was done and reported. Any other moment: 130 / 143 and one line.
        assert proc.returncode in (code, 0, -sig), f"delay {delay:.2f} s: {err}"
        errors = error_lines(err)
        done = assert_clean(out, reference, tmp)
        if proc.returncode == code:
            stopped = (
                "error: terminated (SIGTERM)" if sig == signal.SIGTERM else "error: interrupted"
            )
            assert errors == [stopped], err
        else:
            assert errors == [] and done == set(reference.outputs), f"delay {delay:.2f} s: {err}"
        reported = {Path(r["output"]).name for r in records(stdout) if r["status"] == "ok"}
        assert reported <= done  # a record is only written once its file is whole
        res = subprocess.run(
            command(reference.src, out),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=environment(tmp),
        )
        assert res.returncode == 0, res.stderr
        assert error_lines(res.stderr) == []
        status = {Path(r["output"]).name: r["status"] for r in records(res.stdout)}
        assert status == {n: "skipped" if n in done else "ok" for n in reference.outputs}
        assert assert_clean(out, reference, tmp) == set(reference.outputs)


def guard_installed(proc: subprocess.Popen) -> bool:
    """Whether the console script's start-up guard (``restore_cli._entry.main``: its SIGTERM
    handler, set first) is in place, read from the kernel's list of caught signals; waits for it
    where the kernel says (Linux), else waits 0.15 s, Python's own start-up on an idle machine."""
    status = Path(f"/proc/{proc.pid}/status")
    if not status.exists():
        time.sleep(0.15)
        return True
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        caught = next(
            (
                line.split()[1]
                for line in status.read_text().splitlines()
                if line.startswith("SigCgt:")
            ),
            "0",
        )
        if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_program_starts_gives_one_line_not_a_traceback(
    tmp_path, command, reference, sig, code
) -> None:
    """Ctrl-C / SIGTERM while the command line's modules are still loading (0-0.45 s after its
    start-up guard is in place, however slow the machine is to get there): exit 130 / 143 with one
    error line (a SIGTERM never comes out as a Ctrl-C's -2), never a traceback from the middle of
    an import. (Python's own start-up before the guard, its site-packages set-up and the package's
    first few milliseconds, is out of any program's reach and not sampled.)"""
    for k, delay in enumerate((0.0, 0.05, 0.15, 0.3, 0.45)):
        out, tmp = tmp_path / f"out{k}", tmp_path / f"tmp{k}"
        proc = subprocess.Popen(
            command(reference.src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environment(tmp),
        )  # fmt: skip
        assert guard_installed(proc), proc.communicate(timeout=TIMEOUT)[1]
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode in (code, 0), f"delay {delay} s: {err}"
        errors = error_lines(err)  # (no traceback)
        if proc.returncode == code:
            assert len(errors) == 1 and ("interrupted" in errors[0] or "SIGTERM" in errors[0])
        assert_clean(out, reference, tmp)


# --- concurrency -----------------------------------------------------------------------------


def test_two_processes_on_the_same_folders_leave_whole_identical_outputs(
    tmp_path, command, reference
) -> None:
    """Two runs started together over the same inputs and output folder: both exit 0, and every
    output is one whole image equal to a single run's (whichever process renamed it last)."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    procs = [
        subprocess.Popen(
            command(reference.src, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(tmp),
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=TIMEOUT) for p in procs]
    for proc, (stdout, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert error_lines(err) == []
        status = {Path(r["output"]).name: r["status"] for r in records(stdout)}
        assert set(status) == set(reference.outputs)
        assert set(status.values()) <= {"ok", "skipped"}
    assert assert_clean(out, reference, tmp) == set(reference.outputs)


# --- disk and permissions --------------------------------------------------------------------


def test_a_full_disk_fails_the_files_that_do_not_fit_and_keeps_the_others(
    tmp_path, command, reference
) -> None:
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG, as on a full
    disk): each output over it is one error line naming it, nothing is left under its name, the
    outputs that fit are written whole; exit 1."""
    size = {name: len(data) for name, data in reference.outputs.items()}
    ranked = sorted(size.values())
    half = len(ranked) // 2
    assert ranked[half - 1] < ranked[half]  # x4 outputs of 32 px and of 48 px inputs
    limit = (ranked[half - 1] + ranked[half]) // 2
    big = sorted(name for name, n in size.items() if n > limit)
    small = set(size) - set(big)

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out, tmp = tmp_path / "out", tmp_path / "tmp"
    res = subprocess.run(
        command(reference.src, out),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(tmp),
        preexec_fn=limited,
    )
    assert res.returncode == 1, res.stderr
    errors = error_lines(res.stderr)
    assert len(errors) == len(big), res.stderr
    for name, line in zip(big, errors, strict=True):
        assert str(out / name) in line and "cannot write" in line and "too large" in line, line
    status = {Path(r["output"]).name: r["status"] for r in records(res.stdout)}
    assert status == {n: "error" if n in big else "ok" for n in reference.outputs}
    assert assert_clean(out, reference, tmp) == set(small)


def _make_immutable(folder: Path) -> bool:
    """As root, chmod does not stop writes; the immutable attribute does (where allowed)."""
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    res = subprocess.run([chattr, "+i", str(folder)], capture_output=True)
    if res.returncode != 0:
        return False
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    subprocess.run([chattr, "-i", str(folder)], check=True)
    return False


@pytest.mark.parametrize("how", ["read-only folder", "a file where the folder goes"])
def test_an_output_folder_that_cannot_be_written_fails_its_files_alone(
    tmp_path, command, reference, how
) -> None:
    """Outputs due in ``out/sub``, which cannot be written (a read-only folder: mode 0o555, or as
    root the immutable attribute; or a regular file standing at its place): one error line each,
    naming the output; the other outputs are written; exit 1."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(4):
        shutil.copy(reference.src / f"{i:02d}.png", src / ("sub" if i % 2 else "") / f"{i:02d}.png")
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    locked = out / "sub"
    immutable = False
    if how == "read-only folder":
        locked.mkdir()
        if os.geteuid() == 0:
            immutable = _make_immutable(locked)
            if not immutable:
                pytest.skip("root ignores 0o555 and chattr +i is not allowed here")
        else:
            locked.chmod(0o555)
    else:
        locked.write_text("a file where the folder should go")
    try:
        res = subprocess.run(
            command(src, out),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=environment(tmp),
        )
        left = sorted(p.name for p in locked.iterdir()) if locked.is_dir() else []
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(locked)], check=True)
        if locked.is_dir():
            locked.chmod(0o755)
    assert res.returncode == 1, res.stderr
    assert left == []  # nothing, not even a temporary file, in the locked folder
    errors = error_lines(res.stderr)
    assert len(errors) == 2, res.stderr
    for name, line in zip(["01.png", "03.png"], errors, strict=True):
        assert str(locked / name) in line and "cannot write" in line, line
    status = {r["output"]: r["status"] for r in records(res.stdout)}
    assert status == {
        str(out / "00.png"): "ok",
        str(out / "02.png"): "ok",
        str(locked / "01.png"): "error",
        str(locked / "03.png"): "error",
    }
    for name in ("00.png", "02.png"):
        assert (out / name).read_bytes() == reference.outputs[name]
    assert sorted(p.name for p in out.iterdir()) == ["00.png", "02.png", "sub"]
    assert list(tmp.iterdir()) == []


def test_an_input_deleted_during_the_run_fails_alone(tmp_path, command, reference) -> None:
    """Input #5 of 8 is deleted once the first record is out (the process paused meanwhile, so
    the deletion lands well before it reaches that file): one error line for it, the other seven
    restored as in an undisturbed run, exit 1."""
    src = tmp_path / "in"
    shutil.copytree(reference.src, src)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    proc = subprocess.Popen(
        command(src, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp),
    )
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGSTOP)
    try:
        assert json.loads(first)["status"] == "ok"
        (src / "04.png").unlink()
    finally:
        proc.send_signal(signal.SIGCONT)
    rest, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1, err
    errors = error_lines(err)
    assert len(errors) == 1 and str(src / "04.png") in errors[0], err
    assert "not found" in errors[0]
    status = {Path(r["output"]).name: r["status"] for r in records(first + rest)}
    assert status == {n: "error" if n == "04.png" else "ok" for n in reference.outputs}
    assert assert_clean(out, reference, tmp) == set(reference.outputs) - {"04.png"}


# --- names on the terminal -------------------------------------------------------------------


def test_names_with_control_characters_are_escaped_in_error_lines(
    tmp_path, command, reference
) -> None:
    """A file named with an ESC sequence and a newline that fails to decode, and an output that
    cannot be written under a folder so named: each error is one line, the name escaped, no raw
    control character reaches the terminal."""
    hostile = "bad\x1b[31m\nname"
    src = tmp_path / "in"
    (src / hostile).mkdir(parents=True)
    shutil.copy(reference.src / "01.png", src / "ok.png")
    shutil.copy(reference.src / "03.png", src / hostile / "x.png")  # its output folder is a file
    (src / f"{hostile}.png").write_bytes((reference.src / "01.png").read_bytes()[:80])  # truncated
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    (out / hostile).write_text("a file where the folder should go")
    res = subprocess.run(
        command(src, out), capture_output=True, text=True, timeout=TIMEOUT, env=environment(tmp)
    )
    assert res.returncode == 1, res.stderr
    assert "\x1b" not in res.stderr, res.stderr
    escaped = "bad\\x1b[31m\\x0aname"
    errors = error_lines(res.stderr)
    assert len(errors) == 2, res.stderr
    assert all(escaped in line for line in errors), res.stderr
    assert any("cannot read image" in line for line in errors), res.stderr
    assert any("cannot write" in line for line in errors), res.stderr
    assert len(res.stderr.splitlines()) == 3  # two errors and the summary: nothing else
    status = {r["input"]: r["status"] for r in records(res.stdout)}
    assert status == {
        str(src / "ok.png"): "ok",
        str(src / f"{hostile}.png"): "error",
        str(src / hostile / "x.png"): "error",
    }
