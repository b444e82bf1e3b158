"""Speed and memory of the full pipeline with deterministically filled weights (no download).

    python benchmarks/bench.py [--models realsr-v3] [--sizes 64 128 256] [--device auto]
                               [--dtypes auto] [--repeat 3] [--vae-tile N] [--tile N]
                               [--folder N] [--batch-sizes 1 4] [--peak]
                               [--compare-reference DIR]

Each configuration runs in a fresh process (so peak memory is its own) and prints one row: task,
model, input and output size, device, dtype, batch, seconds (median, min, max over ``--repeat``
runs after one warm-up), images per second, peak memory (RSS on the CPU, allocated on CUDA/MPS),
achieved GFLOP/s (FLOPs counted as direct convolutions and matrix products on the ``meta``
device, over the median time) and the number of image tiles. Stage times (encode, UNet per
step, decode) follow, with each stage's achieved GFLOP/s; ``--peak`` adds a plain 3x3
convolution's GFLOP/s on the same device, the yardstick for them. ``--folder N`` also times ``batch.run`` over N JPEG files of the first size
against N times the model alone: the cost of decoding and writing that is not hidden.
``--device cuda`` works unchanged on a GPU machine. ``--batch-sizes 1 4`` times each configuration
at every ``--batch-size`` (B copies of the image through ``Restorer.process_many``, each with its
own generator; a tiled image's tiles batched too), so the batch column compares them; images per
second count all B. ``--compare-reference DIR`` also runs the reference implementation (a checkout
of zsyOAOA/ResShift; its code needs einops and PyYAML) on the same filled weights, input and seed,
each side untiled in its own process, and prints both times, the speed-up and how far apart the
two outputs are.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _restorer(model: str, device: str, dtype: str, as_asked: bool = False):
    """realsr-style model ``model`` with filled weights; ``as_asked``: run ``dtype`` even where
    ``restore`` would fall back to fp32 (a CPU without native units), to time what that costs."""
    import torch

    from restore_cli import nets
    from restore_cli.device import DTYPES, resolve_device, resolve_dtype
    from restore_cli.pipeline import Restorer
    from restore_cli.registry import default_registry
    from restore_cli.weights import load_into
    from tests.reference_fill import reference_state_dict

    spec = default_registry().get(model)
    dev = resolve_device(device)
    dt = DTYPES[dtype] if as_asked else resolve_dtype(dtype, dev)
    unet = load_into(nets.build(spec.unet), reference_state_dict(nets.build(spec.unet)), "unet")
    vq_meta = nets.build(spec.autoencoder.config)
    vq = load_into(nets.build(spec.autoencoder.config), reference_state_dict(vq_meta), "vq")
    unet = unet.to(dev, dt).eval()
    vq = vq.to(dev, dt).eval()
    if dev.type in ("cpu", "cuda"):
        vq = vq.to(memory_format=torch.channels_last)
    return Restorer(spec, unet, vq, dev, dt)


def _flops(model: str, h: int, w: int) -> dict[str, float]:
    """FLOPs per stage, counted on ``meta`` (no compute; Winograd does not apply there)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from restore_cli import nets
    from restore_cli.pipeline import Prepared, Restorer
    from restore_cli.registry import default_registry

    spec = default_registry().get(model)
    r = Restorer(
        spec, nets.build(spec.unet), nets.build(spec.autoencoder.config),
        torch.device("meta"), torch.float32,
    )  # fmt: skip
    lq = torch.zeros(1, 3, h, w, device="meta")
    counts = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            p: Prepared = r.prepare(lq, None, 0)
        counts["encode"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            r.denoiser(p)(p.z_y, torch.zeros(1, dtype=torch.long, device="meta"))
        counts["unet_step"] = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            r.decode(p.z_y, p, 0)
        counts["decode"] = fc.get_total_flops()
    return counts


def one(cfg: dict) -> dict:
    """Time one configuration in this process; returns the row as a dict."""
    import numpy as np
    import torch

    from restore_cli import sampler, tiling
    from restore_cli.device import make_generator, memory_budget
    from restore_cli.request import Request

    r = _restorer(cfg["model"], cfg["device"], cfg["dtype"])
    dev, spec = r.device, r.spec
    h, w = cfg["size"]
    lq = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = []
    pixels = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    batch = cfg.get("batch", 1)
    for i in range(cfg["repeat"] + 1):  # the first is a warm-up
        stages = {}
        with torch.inference_mode():
            if batch > 1:  # B images (and a tiled image's tiles) through the networks together
                request = Request(seed=1, tile=cfg["tile"], vae_tile=cfg["vae_tile"],
                                  batch_size=batch)  # fmt: skip
                _sync(dev)
                t0 = time.perf_counter()
                r.process_many([pixels] * batch, None, request)
                _sync(dev)
                total = time.perf_counter() - t0
            elif cfg["tile"] == 0 or cfg["tile"] is None and max(h, w) * spec.scale <= 1024:
                _sync(dev)
                t0 = time.perf_counter()
                p = r.prepare(lq, None, cfg["vae_tile"])
                _sync(dev)
                t1 = time.perf_counter()
                with r.keeping_filters(p.z_y):  # as Restorer.run does
                    x = sampler.sample(r.denoiser(p), p.z_y, r.tables, make_generator(1))
                _sync(dev)
                t2 = time.perf_counter()
                image = r.decode(x, p, cfg["vae_tile"])
                _sync(dev)
                t3 = time.perf_counter()
                if cfg.get("save"):
                    np.save(cfg["save"], image.float().cpu().numpy())
                stages = {"encode": t1 - t0, "unet_step": (t2 - t1) / spec.schedule.steps,
                          "decode": t3 - t2}  # fmt: skip
                total = t3 - t0
            else:  # through the tiled path as `restore` runs it
                t0 = time.perf_counter()
                r.restore(pixels, seed=1, tile=cfg["tile"], vae_tile=cfg["vae_tile"])
                total = time.perf_counter() - t0
        if i:
            rows.append((total, stages))
    t = tiling.resolve(
        cfg["tile"], None, (h, w), scale=spec.scale, multiple=spec.pad_multiple,
        fixed_size=bool(spec.input_size), budget=memory_budget(dev, r.dtype),
    )  # fmt: skip
    tiles = len(tiling.plan(h, w, t.tile, t.overlap)) if t.tile else 1
    f = spec.autoencoder.config.downsample
    latent = (h * spec.scale // f, w * spec.scale // f)
    untiled = bool(stages) and not tiling.autoencoder_tiling(latent, cfg["vae_tile"]).tile
    totals = [t for t, _ in rows]
    median = statistics.median(totals)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
    elif dev.type == "mps":
        peak = torch.mps.driver_allocated_memory()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    flops = _flops(cfg["model"], h, w)
    total_flops = flops["encode"] + flops["decode"] + spec.schedule.steps * flops["unet_step"]
    best_stages = min(rows, key=lambda row: row[0])[1]
    return {
        "task": spec.task, "model": spec.name, "input": f"{h}x{w}",
        "output": f"{h * spec.scale}x{w * spec.scale}", "device": str(dev),
        "dtype": str(r.dtype).replace("torch.", ""), "batch": batch, "median_s": median,
        "min_s": min(totals), "max_s": max(totals), "images_per_s": batch / median,
        "peak_gib": peak / 2**30, "gflop": total_flops / 1e9,
        "gflops_per_s": batch * total_flops / 1e9 / median if tiles == 1 else None,
        "tiles": tiles,
        "untiled": untiled,  # image and autoencoder whole: the run compare_reference can reuse
        "stages": best_stages,
        "stage_gflop": {k: v / 1e9 for k, v in flops.items()},
        "threads": torch.get_num_threads(),
    }  # fmt: skip


# The reference's configuration file for each model this benchmark can compare against.
REFERENCE_CONFIGS = {
    "realsr-v3": "configs/realsr_swinunet_realesrgan256_journal.yaml",
    "realsr-v2": "configs/realsr_swinunet_realesrgan256.yaml",
}


def _inference_only_timm() -> None:
    """Stand-ins for the three ``timm.models.layers`` names the reference's Swin layers import
    (``models/swin_transformer.py``), when timm is not installed (it needs torchvision): at
    inference with a drop-path rate of 0 they are an identity, a pair and a weight initialiser
    whose values the loaded weights replace."""
    import importlib.util
    import types

    import torch

    if importlib.util.find_spec("timm") is not None:
        return
    layers = types.ModuleType("timm.models.layers")

    class DropPath(torch.nn.Identity):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()

    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: torch.nn.init.trunc_normal_(
        t, mean, std, a, b
    )
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def reference_one(cfg: dict) -> dict:
    """Time the reference implementation (a checkout of zsyOAOA/ResShift at ``cfg["reference"]``)
    on the same filled weights, input and seed as :func:`one`: its ``p_sample_loop`` (bicubic
    upsampling, encoder, the UNet steps, decoder), fp32, untiled."""
    import numpy as np
    import torch
    import yaml

    from restore_cli import nets
    from restore_cli.device import resolve_device
    from restore_cli.registry import default_registry
    from tests.reference_fill import reference_state_dict

    spec = default_registry().get(cfg["model"])
    ref = Path(cfg["reference"]).resolve()
    sys.path.insert(0, str(ref))
    _inference_only_timm()
    from utils.util_common import instantiate_from_config  # the reference's own

    conf = yaml.safe_load((ref / REFERENCE_CONFIGS[spec.name]).read_text())
    conf["model"]["params"]["out_channels"] = conf["autoencoder"]["params"]["embed_dim"]
    dev = resolve_device(cfg["device"])
    diffusion = instantiate_from_config(conf["diffusion"])
    parts = {}
    for name, ours in (("model", nets.build(spec.unet)),
                       ("autoencoder", nets.build(spec.autoencoder.config))):  # fmt: skip
        net = instantiate_from_config(conf[name])
        missing, unexpected = net.load_state_dict(reference_state_dict(ours), strict=False)
        buffers = dict(net.named_buffers())
        if unexpected or any(k not in buffers for k in missing):
            raise SystemExit(f"reference {name} keys differ: {unexpected or missing}")
        parts[name] = net.to(dev).eval()
    h, w = cfg["size"]
    lq = (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
    totals, out = [], None
    for i in range(cfg["repeat"] + 1):  # the first is a warm-up
        torch.manual_seed(1)  # the reference draws its noise from the global generator
        with torch.no_grad():
            _sync(dev)
            t0 = time.perf_counter()
            out = diffusion.p_sample_loop(
                y=lq, model=parts["model"], first_stage_model=parts["autoencoder"],
                noise=None, noise_repeat=False, clip_denoised=False, denoised_fn=None,
                model_kwargs={"lq": lq}, progress=False,
            )  # fmt: skip
            _sync(dev)
        if i:
            totals.append(time.perf_counter() - t0)
    assert out is not None
    if cfg.get("save"):
        np.save(cfg["save"], out.float().cpu().numpy())
    return {"median_s": statistics.median(totals), "min_s": min(totals), "max_s": max(totals),
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def conv_peak(device: str, dtype: str) -> float:
    """GFLOP/s of a plain 3x3 convolution (256 -> 256 channels at 128x128, counted as direct):
    the yardstick the stage figures are read against."""
    import torch

    from restore_cli.device import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(dev, dt).eval()
    x = torch.randn(1, 256, 128, 128, device=dev, dtype=dt)
    flop = 2 * 256 * 256 * 9 * 128 * 128
    times = []
    with torch.inference_mode():
        for i in range(6):
            _sync(dev)
            t0 = time.perf_counter()
            conv(x)
            _sync(dev)
            if i:
                times.append(time.perf_counter() - t0)
    return flop / statistics.median(times) / 1e9


def folder(cfg: dict, n: int) -> dict:
    """``batch.run`` over ``n`` JPEGs vs ``n`` calls of the model alone."""
    import numpy as np
    from PIL import Image

    from restore_cli import batch, files
    from restore_cli.request import Request

    r = _restorer(cfg["model"], cfg["device"], cfg["dtype"])
    h, w = cfg["size"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(n):
            img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            Image.fromarray(img).save(src / f"{i:03d}.jpg", quality=90)
        pixels = [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(src.iterdir())]
        request = Request(seed=1, tile=0)
        r.process(pixels[0], None, request)  # warm-up
        t0 = time.perf_counter()
        for p in pixels:
            r.process(p, None, request)
        model_only = time.perf_counter() - t0
        items, _ = files.find_inputs([src])
        jobs = files.plan_outputs(items, output=str(Path(tmp) / "out") + "/",
                                  default_suffix="", several=True)  # fmt: skip
        t0 = time.perf_counter()
        for rec in batch.run(jobs, request, lambda: r, model=r.spec.name):
            assert rec.status == "ok", rec.error
        whole = time.perf_counter() - t0
    return {"images": n, "model_only_s": model_only, "batch_run_s": whole,
            "overhead_pct": 100 * (whole / model_only - 1)}  # fmt: skip


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["realsr-v3"])
    ap.add_argument("--sizes", nargs="+", default=["64"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtypes", nargs="+", default=["auto"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tile", type=int, default=0, help="image tile (0: whole; -1: automatic)")
    ap.add_argument("--vae-tile", type=int, default=None, help="autoencoder tile (latent px)")
    ap.add_argument("--folder", type=int, default=0, help="also time a folder of N JPEGs")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1],
                    help="time each configuration at these --batch-size values")  # fmt: skip
    ap.add_argument(
        "--peak",
        action="store_true",
        help="also time a plain 3x3 convolution: the peak the stages are read against",
    )
    ap.add_argument(
        "--compare-reference",
        metavar="DIR",
        help="also time the reference implementation, a checkout of zsyOAOA/ResShift in DIR (its "
        "Python needs einops and PyYAML; timm's three layer helpers are stood in for if absent), "
        "on the same weights, input and seed, untiled, and print how far its output is from ours",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    args = ap.parse_args()
    if args.one:
        cfg = json.loads(args.one)
        if cfg.get("peak"):
            out = {"gflops_per_s": conv_peak(cfg["device"], cfg["dtype"])}
        elif cfg.get("reference"):
            out = reference_one(cfg)
        else:
            out = folder(cfg, cfg["folder"]) if cfg.get("folder") else one(cfg)
        print(json.dumps(out))
        return
    header = (f"{'model':<18}{'input':>9}{'output':>10} {'device':<7}{'dtype':<9}{'batch':>5}"
              f"{'median s':>9}{'min':>7}{'max':>7}{'img/s':>7}{'peak GiB':>9}{'GFLOP/s':>8}"
              f"{'tiles':>6}  stages (s): encode / UNet per step / decode")  # fmt: skip
    if not args.json:
        print(header)
    tile = None if args.tile < 0 else args.tile
    with tempfile.TemporaryDirectory() as saved:  # outputs --compare-reference reads back
        _table(args, tile, saved)


def _table(args: argparse.Namespace, tile: int | None, saved: str) -> None:
    for model in args.models:
        for dtype in args.dtypes:
            for size, batch in itertools.product(args.sizes, args.batch_sizes):
                cfg = {"model": model, "device": args.device, "dtype": dtype,
                       "size": _size(size), "repeat": args.repeat, "tile": tile,
                       "vae_tile": args.vae_tile, "batch": batch}  # fmt: skip
                if args.compare_reference and batch == 1:
                    cfg["save"] = f"{saved}/{model}-{dtype}-{size}.npy"
                row = _run(cfg)
                if args.json:
                    print(json.dumps(row))
                else:
                    _print_row(row)
                if args.compare_reference and batch == 1:
                    compare_reference(args, cfg, row)
            if args.peak:
                peak = _run({"device": args.device, "dtype": dtype, "peak": True})
                print(f"plain 3x3 convolution (256 ch, 128x128, {dtype}): "
                      f"{peak['gflops_per_s']:.0f} GFLOP/s")  # fmt: skip
            if args.folder:
                cfg = {"model": model, "device": args.device, "dtype": dtype,
                       "size": _size(args.sizes[0]), "folder": args.folder}  # fmt: skip
                res = _run(cfg)
                print(f"folder of {res['images']} JPEGs {args.sizes[0]}: model alone "
                      f"{res['model_only_s']:.2f} s, batch.run {res['batch_run_s']:.2f} s "
                      f"(+{res['overhead_pct']:.1f} %)")  # fmt: skip


def _print_row(row: dict) -> None:
    """One table row, and each stage's GFLOP/s where the image ran whole at batch 1."""
    st = row["stages"]
    stages = (f"{st['encode']:.2f} / {st['unet_step']:.3f} / {st['decode']:.2f}"
              if st else "-")  # fmt: skip
    gf = f"{row['gflops_per_s']:.0f}" if row["gflops_per_s"] else "-"
    print(f"{row['model']:<18}{row['input']:>9}{row['output']:>10} "
          f"{row['device']:<7}{row['dtype']:<9}{row['batch']:>5}"
          f"{row['median_s']:9.2f}{row['min_s']:7.2f}{row['max_s']:7.2f}"
          f"{row['images_per_s']:7.2f}{row['peak_gib']:9.2f}{gf:>8}"
          f"{row['tiles']:>6}  {stages}")  # fmt: skip
    if st and row["tiles"] == 1 and row["batch"] == 1:
        g = row["stage_gflop"]
        per = {k: g[k] / st[k] for k in ("encode", "unet_step", "decode")}
        print(f"{'':<18}GFLOP/s per stage: encode {per['encode']:.0f}, UNet "
              f"{per['unet_step']:.0f}, decode {per['decode']:.0f} "
              f"(GFLOP {g['encode']:.0f} / {g['unet_step']:.0f} per step / "
              f"{g['decode']:.0f})")  # fmt: skip


def compare_reference(args: argparse.Namespace, cfg: dict, ours: dict) -> None:
    """The reference's ``p_sample_loop`` beside our row ``ours`` (of configuration ``cfg``, its
    output saved at ``cfg["save"]``), both untiled, each in a fresh process: seconds (median, min,
    max), peak RSS, the speed-up and the largest difference of the outputs (both draw the same
    noise: the reference from the global generator seeded as ours). A row that ran tiled is
    timed again untiled for the comparison."""
    import numpy as np

    model, (h, w) = cfg["model"], cfg["size"]
    if model not in REFERENCE_CONFIGS:
        raise SystemExit(f"--compare-reference: no reference configuration known for {model}; "
                         f"one of {', '.join(REFERENCE_CONFIGS)}")  # fmt: skip
    if not ours["untiled"]:
        ours = _run({**cfg, "tile": 0, "vae_tile": 0})
    ref = _run({"model": model, "device": cfg["device"], "size": cfg["size"],
                "repeat": cfg["repeat"], "reference": args.compare_reference,
                "save": cfg["save"] + ".reference.npy"})  # fmt: skip
    a, b = np.load(cfg["save"]), np.clip(np.load(cfg["save"] + ".reference.npy"), -1, 1)
    diff = np.abs(a - b)
    result = {"restore": ours, "reference": ref, "speed_up": ref["median_s"] / ours["median_s"],
              "max_diff": float(diff.max()), "mean_diff": float(diff.mean()),
              "pct_over_1e-3": float(100 * (diff > 1e-3).mean())}  # fmt: skip
    if args.json:
        print(json.dumps({"compare_reference": f"{model} {h}x{w}", **result}))
        return
    for name, row in (("restore", ours), ("reference", ref)):
        print(f"{name:<10} {model} {h}x{w} untiled, {row.get('dtype', 'float32')}: median "
              f"{row['median_s']:.2f} s (min {row['min_s']:.2f}, max {row['max_s']:.2f}), "
              f"peak {row['peak_gib']:.2f} GiB")  # fmt: skip
    print(f"speed-up {result['speed_up']:.2f}x; outputs differ by at most {result['max_diff']:.2e} "
          f"(mean {result['mean_diff']:.2e}; {result['pct_over_1e-3']:.3f} % of values by more "
          f"than 1e-3) on [-1, 1]")  # fmt: skip


def _run(cfg: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(cfg)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
