"""Helpers shared by the scale-out tests (distributed, storage, manifest): tiny images, the tiny
model's command-line arguments, running the CLI in-process or as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restore_cli.cli import main

from .conftest import TINY_REGISTRY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch on one thread in this process while these tests run: on a shared two-core machine
    two threads of tiny convolutions spin against each other and run ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rgb(path: Path, w: int = 12, h: int = 8, seed: int = 0) -> Path:
    a = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def photos(folder: Path, n: int, *, broken: bool = False, size: int = 8) -> list[Path]:
    """``n`` small images in ``folder`` (and ``sub/``), plus a truncated PNG if ``broken``."""
    made = [rgb(folder / ("sub" if i % 3 == 2 else "") / f"p{i}.png", size, size, seed=i)
            for i in range(n)]  # fmt: skip
    if broken:
        (folder / "broken.png").write_bytes(made[0].read_bytes()[:60])
    return made


def tiny_args(weights, model: str = "tiny-sr") -> list[str]:
    unet, ae = weights(model)
    return ["--registry", str(TINY_REGISTRY), "-m", model, "--checkpoint", str(unet),
            "--autoencoder", str(ae), "--device", "cpu"]  # fmt: skip


def cli(argv: list[str], capsys) -> tuple[int, list[dict], str]:
    """(exit code, --json records, stderr) of ``restore ARGV`` run in this process."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def spawn(argv: list[str], env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``python -m restore_cli ARGV`` as its own process (torch on one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "restore_cli", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # fmt: skip


def same_files(a: Path, b: Path) -> dict[str, bytes]:
    """The files below ``a`` (relative name -> bytes), asserting ``b`` holds exactly the same."""
    left = {p.relative_to(a).as_posix(): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    right = {p.relative_to(b).as_posix(): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert left.keys() == right.keys()
    assert all(left[k] == right[k] for k in left), [k for k in left if left[k] != right[k]]
    return left


def comparable(record: dict, root: Path | str) -> tuple:
    """A record without its timing, paths relative to ``root`` (so runs into different folders
    compare)."""
    rel = str(record["output"]).replace(str(root), "").lstrip("/")
    return (Path(record["input"]).name, rel, record["status"], record["seed"],
            record["input_size"], record["output_size"], record["model"])  # fmt: skip
