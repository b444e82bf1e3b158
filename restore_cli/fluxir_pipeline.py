"""FLUX-IR task models on images: pixels -> symmetric pad -> sample -> crop -> clamp -> pixels.

FLUX-IR ``Task_specitic_restoration/test.py`` with the project's geometry for any size: each side is
padded to the model's multiple M (LOLv1 32, Raindrop and UnderwaterB 16), split floor/ceil between
the two ends, by symmetric reflection (edge repeated: the authors' ``cv2.BORDER_REFLECT`` of
``data/LoL_dataset.py``, numpy's ``symmetric``), and the result cropped back. For LOLv1's 400x600
images that is exactly the authors' 8/8/4/4 pad.

Tensors here are (B, 3, H, W) float32 images in [-1, 1]; the public entry points take (H, W, 3)
float arrays in [0, 1] (:meth:`FluxRestorer.restore`) or PIL images (``__call__``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from . import colorfix, fluxir, imageio, tiling
from .device import free_memory, is_out_of_memory, make_generator, release_memory
from .registry import FluxSpec, FluxStage
from .request import DEFAULT_SEED, ColorFix, Request

# progress(stage, done, total): stage is "step" (network evaluations of the current tile) or "tile".
Progress = Callable[[str, int, int], None]

# Working memory of one network evaluation per input pixel and per inner channel, fp32, from the
# activation peaks measured with the authors' UNet (0.69 GiB for LOLv1, C = 64, and 1.38 GiB for
# Raindrop, C = 128, at 512x512: about 44 bytes per pixel and channel), doubled for allocator slack.
BYTES_PER_PIXEL_CHANNEL = 2 * 44
MAX_AUTO_UNTILED = 2048  # sides above this are tiled whatever the memory
MAX_AUTO_TILE = 1024


def symmetric_pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Pad (B, C, H, W) by (top, bottom, left, right) with edge-repeating reflection of any length
    (``np.pad(mode="symmetric")``: the periodic extension of ``x, flip(x)``)."""
    top, bottom, left, right = pads
    for dim, before, after in ((2, top, bottom), (3, left, right)):
        n = x.shape[dim]
        if before or after:
            idx = torch.arange(-before, n + after, device=x.device) % (2 * n)
            idx = torch.where(idx < n, idx, 2 * n - 1 - idx)
            x = x.index_select(dim, idx)
    return x


def pads_for(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): p = (-n) mod M per side, floor(p/2) before, the rest after."""
    ph, pw = -height % multiple, -width % multiple
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


class FluxRestorer:
    """A loaded FLUX-IR model at one step count. Call it on a PIL image, or use :meth:`restore`."""

    def __init__(
        self,
        spec: FluxSpec,
        steps: int,
        unet: torch.nn.Module,  # nets.sr3.SR3UNet
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.spec, self.unet = spec, unet
        self.stage: FluxStage = spec.stage(steps)
        self.device, self.dtype = device, dtype
        s = spec.schedule
        self.tables = fluxir.linear_tables(s.linear_start, s.linear_end, s.n_timestep)

    @property
    def steps(self) -> int:
        return self.stage.steps

    # -- the core, on tensors -------------------------------------------------------------------
    def denoise(self, x_in: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """eps_hat for cat[y, x] (B, 6, H, W) float32 and levels (B,): float32 (B, 3, H, W)."""
        return self.unet(x_in.to(self.dtype), level).float()

    def sample(
        self,
        y: torch.Tensor,  # (B, 3, Hp, Wp) float32 in [-1, 1], sides multiples of the pad multiple
        generators: Sequence[torch.Generator],  # one per image
        *,
        trace: fluxir.Trace | None = None,
        callback: fluxir.Callback | None = None,
    ) -> torch.Tensor:  # (B, 3, Hp, Wp) float32, the final state (unclamped)
        """The stage's loop (``rein``: 10 DDIM-type steps; ``jump``: the distilled jumps)."""
        y = y.to(self.device, torch.float32)
        if self.stage.loop == "rein":
            return fluxir.sample_rein(
                self.denoise, y, self.tables, generators, trace=trace, callback=callback
            )
        start = None if self.spec.start == "noise" else self.spec.start_index
        return fluxir.sample_distilled(
            self.denoise, y, self.tables, generators, self.stage.jumps,
            start_index=start, trace=trace, callback=callback,
        )  # fmt: skip

    @torch.inference_mode()
    def run(
        self,
        lq: torch.Tensor,  # (B, 3, H, W) float32 in [-1, 1], any size
        generators: Sequence[torch.Generator],
        progress: Progress | None = None,
        trace: fluxir.Trace | None = None,
    ) -> torch.Tensor:  # (B, 3, H, W) float32 in [-1, 1] on the CPU
        """Pad, sample, crop and clamp: one untiled pass over a batch of same-size images."""
        h, w = lq.shape[-2:]
        pads = pads_for(h, w, self.spec.pad_multiple)
        y = symmetric_pad(lq.float(), pads)
        if trace is not None:
            trace("lq", y)
        cb = None if progress is None else (lambda i, n: progress("step", i, n))
        x = self.sample(y, generators, trace=trace, callback=cb)
        top, left = pads[0], pads[2]
        return x[:, :, top : top + h, left : left + w].clamp(-1, 1).cpu()

    # -- PIL images (the public API) ------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image,
        *,
        seed: int = DEFAULT_SEED,
        tile: int | None = None,
        tile_overlap: int | None = None,
        progress: Progress | None = None,
    ) -> Image.Image:
        """Restore a PIL image of any mode as the command line restores the same file
        (:func:`imageio.picture_from_pil`) and return what it would write as a PNG
        (:func:`imageio.picture_to_pil`): alpha and grayscale kept."""
        picture = imageio.picture_from_pil(image)
        request = Request(seed=seed, tile=tile, tile_overlap=tile_overlap)
        return imageio.picture_to_pil(self.restore_picture(picture, None, request, progress))

    # -- arrays ---------------------------------------------------------------------------------
    def restore(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        *,
        seed: int = DEFAULT_SEED,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: ColorFix | str = ColorFix.NONE,
        scale: float | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:  # (H, W, 3) float32 in [0, 1]
        """Restore one image: :meth:`process` with a :class:`~restore_cli.request.Request` of these
        settings (``tile``: input pixels, 0 = never tile, None = automatic: whole when it fits in
        memory). One CPU generator per image, so a seed gives the same result on every device."""
        request = Request(
            seed=seed, tile=tile, tile_overlap=tile_overlap, color_fix=color_fix, scale=scale
        )
        return self.process(pixels, None, request, progress)

    @torch.inference_mode()
    def process(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        mask: None,  # the Restorer's signature; these models take no mask
        request: Request,
        progress: Progress | None = None,
    ) -> np.ndarray:  # (H, W, 3) float32 in [0, 1] (or request.scale x the input)
        if mask is not None:
            raise ValueError(f"{self.spec.name} takes no mask")
        img = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        img = img.permute(2, 0, 1)[None]  # (1, 3, H, W) in [0, 1]
        out = self._tiled(img * 2 - 1, request, progress)
        out01 = colorfix.apply(request.color_fix.value, (out + 1) / 2, img)
        result = out01[0].permute(1, 2, 0).numpy()
        height, width = pixels.shape[:2]
        result = imageio.to_scale(result, (width, height), request.scale, 1.0)
        return result

    def restore_picture(
        self,
        picture: imageio.Picture,
        mask: None,
        request: Request,
        progress: Progress | None = None,
    ) -> imageio.Picture:
        """A decoded picture restored, everything else kept (what the command line writes)."""
        return imageio.with_pixels(picture, self.process(picture.pixels, mask, request, progress))

    def _tiled(
        self,
        lq: torch.Tensor,  # (1, 3, H, W) in [-1, 1]
        request: Request,
        progress: Progress | None,
    ) -> torch.Tensor:  # (1, 3, H, W) in [-1, 1], on the CPU
        """Tiles in plan order, each drawing its own noise sequence (at its padded shape) from the
        one generator of the image, blended by :func:`tiling.stitch`. An automatic tiling is halved
        whenever the device runs out of memory (the generator restarts with each try)."""
        size = (lq.shape[-2], lq.shape[-1])
        m = self.spec.pad_multiple
        if request.tile is not None:
            t = tiling.resolve(request.tile, request.tile_overlap, size, scale=1, multiple=m)
        else:
            t = tiling.resolve(
                self.auto_tile(size), request.tile_overlap, size, scale=1, multiple=m
            )
            t = dataclasses.replace(t, automatic=True)
        on_tile = None if progress is None else (lambda i, n: progress("tile", i, n))
        while True:
            generator = make_generator(request.seed)

            def run(box: tiling.Box, g: torch.Generator = generator) -> torch.Tensor:
                ys, xs = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
                return self.run(lq[:, :, ys, xs], [g], progress)

            try:
                return tiling.stitch(run, size[0], size[1], t, 1, on_tile)
            except (MemoryError, RuntimeError) as exc:
                smaller = tiling.smaller(t, size, m, request.tile_overlap)
                if not (t.automatic and is_out_of_memory(exc)) or smaller is None:
                    raise
                t = smaller
                release_memory(self.device)

    def auto_tile(self, size: tuple[int, int]) -> int:
        """Tile side for an image of ``size`` (H, W): the whole image when its padded size fits in
        60 % of the free memory and no side exceeds 2048 pixels (LOLv1's attention is global, so
        tiles change the result everywhere), else the largest tile that fits, up to 1024, in whole
        pad multiples."""
        m = self.spec.pad_multiple
        hp, wp = (-(-s // m) * m for s in size)
        per_px = BYTES_PER_PIXEL_CHANNEL * self.spec.net.inner_channel
        per_px *= 0.5 if self.dtype != torch.float32 else 1.0
        budget = 0.6 * max(free_memory(self.device), 0)
        if max(hp, wp) <= MAX_AUTO_UNTILED and hp * wp * per_px <= budget:
            return max(hp, wp)
        side = int(math.sqrt(budget / per_px)) // m * m
        return max(m, min(MAX_AUTO_TILE, side))
