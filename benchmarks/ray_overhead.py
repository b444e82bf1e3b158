"""What ``--engine ray`` costs over the plain command line, on the same files and tiny model.

    python benchmarks/ray_overhead.py [--counts 8 24] [--size 32] [--actors 1]

Runs ``restore sr DIR -o OUT`` as a fresh process, with and without ``--engine ray`` (which
starts a local Ray cluster for the run), on ``counts`` images of ``size`` px, torch on one thread
in both (as Ray gives each actor). Prints wall seconds per run and, from the two counts, each
engine's fixed cost (intercept) and seconds per image (slope): the difference of the slopes is
Ray's overhead per image, the difference of the intercepts its start-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restore_cli.registry import load_registry  # noqa: E402
from tests.conftest import TINY_REGISTRY, write_weights  # noqa: E402


def images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        a = (np.random.default_rng(i).random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{i:04d}.png")


def timed(argv: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "restore_cli", *argv], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs=2, default=[8, 24])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--actors", type=int, default=1)
    args = ap.parse_args()
    spec = load_registry([TINY_REGISTRY]).get("tiny-sr")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unet, ae = write_weights(spec, root / "weights")
        model = ["--registry", str(TINY_REGISTRY), "-m", spec.name, "--checkpoint", str(unet),
                 "--autoencoder", str(ae), "--device", "cpu", "--quiet"]  # fmt: skip
        engines = {"local": [], "ray": ["--engine", "ray", "--actors", str(args.actors)]}
        seconds: dict[tuple[str, int], float] = {}
        for count in args.counts:
            images(root / f"in{count}", count, args.size)
            for name, extra in engines.items():
                out = root / f"out-{name}-{count}"
                argv = ["sr", str(root / f"in{count}"), "-o", str(out), *model, *extra]
                seconds[name, count] = timed(argv)
                print(f"{name:>5} {count:>4} images: {seconds[name, count]:7.2f} s", flush=True)
        lo, hi = args.counts
        fit = {}
        for name in engines:
            slope = (seconds[name, hi] - seconds[name, lo]) / (hi - lo)
            fit[name] = (seconds[name, lo] - slope * lo, slope)
            print(f"{name:>5}: fixed {fit[name][0]:6.2f} s, {slope:6.3f} s/image")
        print(f"ray overhead: {fit['ray'][0] - fit['local'][0]:+.2f} s start-up, "
              f"{fit['ray'][1] - fit['local'][1]:+.3f} s/image "
              f"({args.size}x{args.size} px -> x4, {args.actors} actor(s), "
              f"{os.cpu_count()} CPUs)")  # fmt: skip


if __name__ == "__main__":
    main()
