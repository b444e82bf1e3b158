"""Network calls and seconds per trajectory setting, full-size networks with deterministically
filled weights (no download needed): realsr-v1 at 15 and 4 steps, realsr-v3 at 4, 2 and 1 steps,
sinsr-v1 in its one step. All share the x4 SR UNet and the f4 autoencoder, built once.

    python benchmarks/trajectory.py [--device auto] [--dtype auto] [--size 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restore_cli import nets, sampler  # noqa: E402
from restore_cli.device import make_generator, resolve_device, resolve_dtype  # noqa: E402
from restore_cli.pipeline import Restorer  # noqa: E402
from restore_cli.registry import default_registry  # noqa: E402
from restore_cli.weights.checkpoints import load_into  # noqa: E402
from tests.reference_fill import reference_state_dict  # noqa: E402

SETTINGS = [("realsr-v1", None), ("realsr-v1", 4), ("realsr-v3", None), ("realsr-v3", 2),
            ("realsr-v3", 1), ("sinsr-v1", None)]  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=64, help="square input side in pixels")
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting (the best is shown)")
    ap.add_argument("--eta", type=float, default=1.0, help="stochasticity (no effect on speed)")
    ap.add_argument("--early-exit", type=float, default=None, metavar="TOL",
                    help="stop once x0 predictions agree within TOL; adds the calls made and "
                         "the PSNR of the result against the whole chain's")  # fmt: skip
    args = ap.parse_args()
    reg = default_registry()
    first = reg.get("realsr-v1")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    unet, vq = nets.build(first.unet), nets.build(first.autoencoder.config)
    load_into(unet, reference_state_dict(unet), "unet")
    load_into(vq, reference_state_dict(vq), "vq")
    unet, vq = unet.to(device, dtype).eval(), vq.to(device, dtype).eval()
    if device.type in ("cpu", "cuda"):
        vq = vq.to(memory_format=torch.channels_last)
    lq = torch.rand(1, 3, args.size, args.size, generator=make_generator(0)) * 2 - 1
    print(f"device {device}, dtype {dtype}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, input {args.size}x{args.size}")  # fmt: skip
    print(f"{'model':<10} {'timesteps':<22} {'calls':>5} {'encode s':>9} {'sample s':>9} "
          f"{'s/call':>7} {'decode s':>9} {'total s':>8}")  # fmt: skip
    warm = True
    for name, steps in SETTINGS:
        spec = reg.get(name)
        assert spec.unet == first.unet and spec.autoencoder == first.autoencoder
        r = Restorer(spec, unet, vq, device, dtype)
        ts = spec.trajectory(steps=steps)
        best = None
        for _ in range(args.repeat + int(warm)):
            row = run_once(r, lq, ts, args.eta, device, args.early_exit)
            if warm:  # the first run pays for kernel selection and allocation
                warm = False
                continue
            best = row if best is None or row[-1] < best[-1] else best
        calls, enc, samp, dec, total = best
        shown = ",".join(map(str, ts)) if len(ts) < 8 else f"{ts[0]}..{ts[-1]} (all)"
        print(f"{name:<10} {shown:<22} {calls:>5} {enc:9.2f} {samp:9.2f} {samp / calls:7.2f} "
              f"{dec:9.2f} {total:8.2f}")  # fmt: skip


def run_once(
    r: Restorer, lq: torch.Tensor, ts: tuple[int, ...], eta: float, device, early_exit=None
):
    calls = []
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        p = r.prepare(lq)
        sync(device)
        t1 = time.perf_counter()
        net = r.denoiser(p)

        def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            calls.append(int(t[0]))
            return net(x, t)

        x = sampler.sample(counted, p.z_y, r.tables, make_generator(1), timesteps=ts, eta=eta,
                           early_exit=early_exit)  # fmt: skip
        sync(device)
        t2 = time.perf_counter()
        out = r.decode(x, p)
        sync(device)
        t3 = time.perf_counter()
        if early_exit is not None:  # how far the stop lands from the whole chain's result
            full = r.decode(sampler.sample(net, p.z_y, r.tables, make_generator(1),
                                           timesteps=ts, eta=eta), p)  # fmt: skip
            mse = float(((out.clamp(-1, 1) - full.clamp(-1, 1)) / 2).square().mean())
            psnr = float("inf") if mse == 0 else 10 * math.log10(1 / mse)
            print(f"  early exit {early_exit:g}: {len(calls)} of {len(ts)} calls, "
                  f"{psnr:.1f} dB from the whole chain")  # fmt: skip
    assert tuple(calls) == ts[: len(calls)]
    return len(calls), t1 - t0, t2 - t1, t3 - t2, t3 - t0


if __name__ == "__main__":
    main()
