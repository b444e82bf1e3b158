"""Peak memory of the ``restore sr`` command itself, by input size (no download).

    python benchmarks/memory.py [--sizes 64 256] [--model realsr-v3] [--repeat 2]

Writes the model's deterministically filled weights as ``.safetensors`` once (under a temporary
folder), then runs ``restore sr`` on a random RGB PNG of each size in a fresh process per run,
on the CPU, and prints seconds and peak RSS (``ru_maxrss`` of the child) per run, and each
size's smallest peak against the first size's. This is what a user's ``/usr/bin/time -v restore
sr`` shows: interpreter, torch, the weights (memory-mapped) and the run, automatic tiles included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_weights(model: str, folder: Path) -> tuple[Path, Path]:
    """The model's filled weights as .safetensors, as the tests write them."""
    sys.path.insert(0, str(ROOT))
    from restore_cli.registry import default_registry
    from tests.conftest import write_weights as write

    return write(default_registry().get(model), folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--model", default="realsr-v3")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        unet, ae = write_weights(args.model, folder)
        best: dict[int, int] = {}
        for size in args.sizes:
            src = folder / f"in{size}.png"
            pixels = np.random.default_rng(size).random((size, size, 3)) * 255
            Image.fromarray(pixels.astype(np.uint8)).save(src)
            for k in range(args.repeat):
                cmd = [sys.executable, "-m", "restore_cli", "sr", str(src), "-o",
                       str(folder / f"out{size}_{k}.png"), "-m", args.model, "--checkpoint",
                       str(unet), "--autoencoder", str(ae), "--device", "cpu"]  # fmt: skip
                t0 = time.perf_counter()
                # wait4: this child's own peak (RUSAGE_CHILDREN would be the largest so far)
                pid = subprocess.Popen(cmd, stdout=subprocess.DEVNULL).pid
                _, status, rusage = os.wait4(pid, 0)
                seconds = time.perf_counter() - t0
                if code := os.waitstatus_to_exitcode(status):
                    sys.exit(f"restore sr failed ({code}) on {src}")
                peak = rusage.ru_maxrss * 1024
                best[size] = min(best.get(size, peak), peak)
                print(
                    f"{size}x{size}: {seconds:6.1f} s  peak RSS {peak / 2**30:.2f} GiB", flush=True
                )
        first = best[args.sizes[0]]
        for size in args.sizes:
            print(f"{size}x{size}: {best[size] / 2**30:.2f} GiB, {best[size] / first:.2f}x the "
                  f"{args.sizes[0]}x{args.sizes[0]} run")  # fmt: skip


if __name__ == "__main__":
    main()
