"""Timing of the full-size pipeline with deterministically filled weights (no download needed).

    python benchmarks/speed.py [--device auto] [--dtype auto] [--sizes 64 40x72] [--model realsr-v3]

Sizes are ``S`` (square) or ``HxW``; sizes that are not a multiple of the model's padding are
reflect-padded as in use. Prints one row per input size: encode, per-step UNet, decode and total seconds, and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore_cli import sampler  # noqa: E402
from restore_cli.checkpoints import load_into  # noqa: E402
from restore_cli.device import make_generator, resolve_device, resolve_dtype  # noqa: E402
from restore_cli.loader import default_registry  # noqa: E402
from restore_cli.nets.unet import UNetModelSwin  # noqa: E402
from restore_cli.nets.vqgan import VQModel  # noqa: E402
from restore_cli.pipeline import Restorer  # noqa: E402
from tests.reference_fill import reference_state_dict  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="realsr-v3")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--sizes", nargs="+", default=["64", "128"])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    spec = default_registry().get(args.model)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with torch.device("meta"):
        unet, vq = UNetModelSwin(spec.unet), VQModel(spec.autoencoder.config)
    load_into(unet, reference_state_dict(unet), "unet")
    load_into(vq, reference_state_dict(vq), "vq")
    unet = unet.to(device, dtype).eval()
    vq = vq.to(device, dtype).eval()
    if device.type in ("cpu", "cuda"):
        vq = vq.to(memory_format=torch.channels_last)
    r = Restorer(spec, unet, vq, device, dtype)
    print(f"model {spec.name}, device {device}, dtype {dtype}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    print(
        f"{'input':>9} {'output':>9} {'encode s':>9} {'unet s/step':>12} {'decode s':>9} {'total s':>8}"
    )
    for size in args.sizes:
        h, _, w = size.partition("x")
        side, width = int(h), int(w or h)
        lq = torch.rand(1, 3, side, width) * 2 - 1
        best = None
        for _ in range(args.repeat):
            with torch.inference_mode():
                sync(device)
                t0 = time.perf_counter()
                p = r.prepare(lq)
                sync(device)
                t1 = time.perf_counter()
                x = sampler.sample(r.denoiser(p), p.z_y, r.tables, make_generator(1))
                sync(device)
                t2 = time.perf_counter()
                r.decode(x, p)
                sync(device)
                t3 = time.perf_counter()
            row = (t1 - t0, (t2 - t1) / spec.schedule.steps, t3 - t2, t3 - t0)
            best = row if best is None or row[3] < best[3] else best
        size_in, size_out = f"{side}x{width}", f"{side * spec.scale}x{width * spec.scale}"
        print(
            f"{size_in:>9} {size_out:>9} {best[0]:9.2f} {best[1]:12.3f} {best[2]:9.2f} {best[3]:8.2f}"
        )
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
