"""Seams and seconds of the autoencoder in latent tiles against the whole latent, full-size
autoencoder with deterministically filled weights (no download needed).

    python benchmarks/vae_tiles.py [--model realsr-v3] [--size 192] [--tiles 128 96 64]

A synthetic photo of ``--size`` input pixels is upsampled x4 as the pipeline does and encoded
whole (the reference's way) and in each latent tile; the whole latent is decoded whole and in each
tile. A row gives the encode and decode seconds and how far the tiled result lands from the whole
one: the largest latent difference and the PSNR (8-bit, dB) of the decoded image. The seams are
where that difference lives, so the PSNR is a measure of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _restorer, _sync  # noqa: E402
from precision import photo, psnr  # noqa: E402

from restore_cli.device import bicubic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="realsr-v3")
    ap.add_argument("--size", type=int, default=192, help="square input side (pixels)")
    ap.add_argument("--tiles", nargs="+", type=int, default=[128, 96, 64])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    r = _restorer(args.model, args.device, "fp32")
    lq = torch.from_numpy(photo(args.size)).permute(2, 0, 1)[None] * 2 - 1
    up = bicubic(lq.to(r.device), scale=r.spec.scale)
    f = r.spec.autoencoder.config.downsample
    print(f"{args.model}: {args.size}x{args.size} input, latent {up.shape[-1] // f}, "
          f"device {r.device}, threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'vae tile':>8}{'encode s':>9}{'decode s':>9}{'max |dz|':>10}{'PSNR dB':>9}")

    def timed(fn, *a):
        _sync(r.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = fn(*a)
        _sync(r.device)
        return out, time.perf_counter() - t0

    timed(r.encode, up[..., : 64 * f, : 64 * f], 0)  # warm-up
    z, enc = timed(r.encode, up, 0)
    img, dec = timed(r.decode_latent, z, 0)
    whole = ((img.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
    print(f"{'whole':>8}{enc:9.2f}{dec:9.2f}{'-':>10}{'-':>9}")
    for tile in args.tiles:
        zt, enc = timed(r.encode, up, tile)
        out, dec = timed(r.decode_latent, z, tile)
        pic = ((out.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
        dz = float((zt - z).abs().max())
        print(f"{tile:>8}{enc:9.2f}{dec:9.2f}{dz:10.4f}{psnr(pic, whole):9.1f}")


if __name__ == "__main__":
    main()
