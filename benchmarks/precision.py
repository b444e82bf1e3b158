"""Reduced precision against fp32: seconds and PSNR of the whole pipeline, deterministically filled
weights (no download needed).

    python benchmarks/precision.py [--model realsr-v3] [--size 64] [--device cpu]
                                   [--dtypes bf16 fp16] [--repeat 3] [--all]

For each dtype the same image (a smooth synthetic photo: gradients, discs and stripes) is restored
with the same seed as in fp32; a row gives the median seconds over ``--repeat`` runs after a
warm-up, the speed-up over fp32 and the PSNR (8-bit, dB) of the output against the fp32 output.
On the CPU a dtype the processor does not compute natively is reported and skipped (emulated it
is about 200x slower; ``restore`` itself falls back to fp32 there); ``--all`` times it anyway. The filled weights are not
the trained ones, so the PSNR is a proxy for the rounding the dtype adds, not a quality score.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _restorer, _sync  # noqa: E402

from restore_cli.device import cpu_native, resolve_device  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def photo(size: int) -> np.ndarray:
    """A smooth (H, W, 3) float32 picture in [0, 1] with edges, as photos have."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(6 * x * y)], axis=-1)
    disc = (x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05
    img[disc] = [0.9, 0.8, 0.2]
    img[(np.floor(x * 12) % 2 == 0) & (y > 0.75)] *= 0.4
    return np.clip(img, 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a8 = np.round(np.clip(a, 0, 1) * 255)
    b8 = np.round(np.clip(b, 0, 1) * 255)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def timed(model: str, device: str, dtype: str, pixels: np.ndarray, repeat: int, as_asked=False):
    r = _restorer(model, device, dtype, as_asked)
    times, out = [], None
    for i in range(repeat + 1):  # the first is a warm-up
        _sync(r.device)
        t0 = time.perf_counter()
        out = r.restore(pixels, seed=1, tile=0)
        _sync(r.device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out, str(r.dtype).replace("torch.", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="realsr-v3")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--all", action="store_true",
                    help="also time dtypes this CPU does not compute natively (emulated bf16 "
                         "can take minutes)")  # fmt: skip
    args = ap.parse_args()
    device = resolve_device(args.device)
    cap = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else "-"
    print(f"{args.model}, {args.size}x{args.size} input, device {device} ({cap}), "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")  # fmt: skip
    pixels = photo(args.size)
    base_s, base, _ = timed(args.model, args.device, "fp32", pixels, args.repeat)
    print(f"{'dtype':<8}{'median s':>9}{'speed-up':>9}{'PSNR dB':>9}")
    print(f"{'fp32':<8}{base_s:9.2f}{1.0:9.2f}{'-':>9}")
    for name in args.dtypes:
        native = device.type != "cpu" or cpu_native(DTYPES[name])
        if not native and not args.all:
            print(f"{name:<8} not native on this CPU: skipped (restore runs fp32 instead)")
            continue
        s, out, got = timed(args.model, args.device, name, pixels, args.repeat, not native)
        note = "" if native else "  (not native: restore runs fp32 instead)"
        print(f"{got:<8}{s:9.2f}{base_s / s:9.2f}{psnr(out, base):9.1f}{note}")


if __name__ == "__main__":
    main()
