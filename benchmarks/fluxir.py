"""Seconds per image of the FLUX-IR task models, full size, with deterministically filled weights.

    python benchmarks/fluxir.py [--models lowlight-lolv1 derain-raindrop] [--steps 1 2 10]
                                [--size 512] [--device auto] [--dtype fp32] [--repeat 1]

Runs :meth:`FluxRestorer.restore` untiled (``tile=0``) on a random image and prints one row per
model and step count: seconds per image, seconds per network evaluation, and peak memory.
``underwater-uieb`` has Raindrop's architecture, so it costs the same.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore_cli import nets  # noqa: E402
from restore_cli.device import resolve_device, resolve_dtype  # noqa: E402
from restore_cli.fluxir_pipeline import FluxRestorer  # noqa: E402
from restore_cli.registry import default_registry  # noqa: E402
from restore_cli.weights.checkpoints import load_into  # noqa: E402
from tests.reference_fill import reference_state_dict  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["lowlight-lolv1", "derain-raindrop"])
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 2, 10])
    ap.add_argument("--size", default="512", help="S or HxW")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    h, _, w = args.size.partition("x")
    height, width = int(h), int(w or h)
    pixels = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    print(f"device {device}, dtype {dtype}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, image {height}x{width}")  # fmt: skip
    print(f"{'model':>16} {'steps':>5} {'s/image':>8} {'s/NFE':>7}")
    for name in args.models:
        spec = default_registry().fluxir[name]
        unet = nets.build(spec.net)
        load_into(unet, reference_state_dict(unet), name)
        unet = unet.to(device, dtype).eval()
        for steps in args.steps:
            r = FluxRestorer(spec, steps, unet, device, dtype)
            best = float("inf")
            for _ in range(args.repeat):
                sync(device)
                t0 = time.perf_counter()
                r.restore(pixels, seed=1, tile=0)
                sync(device)
                best = min(best, time.perf_counter() - t0)
            print(f"{name:>16} {steps:>5} {best:8.2f} {best / steps:7.2f}", flush=True)
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
