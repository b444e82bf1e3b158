"""The restoration pipeline: pixels -> pad -> encode -> sample -> decode -> crop (spec §3.5, §4).

Tensors here are (B, C, H, W) images in [-1, 1]; the public entry points take float arrays in
[0, 1] (``restore``) or PIL images (``__call__``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import colorfix, sampler, tiling
from .device import bicubic, is_out_of_memory, make_generator, release_memory
from .nets.unet import UNetModelSwin
from .nets.vqgan import VQModel
from .registry import ModelSpec

# progress(stage, done, total): stage is "step" (diffusion steps of the current tile) or "tile".
Progress = Callable[[str, int, int], None]


@dataclass
class Prepared:
    """One image (or tile) ready for sampling."""

    lq: torch.Tensor  # (1, 3, Hp, Wp) in [-1, 1], padded
    mask: torch.Tensor | None  # (1, 1, Hp, Wp) in [-1, 1], +1 = hole
    z_y: torch.Tensor  # (1, C, hp, wp) float32 latent of the (upsampled) LQ
    size: tuple[int, int]  # (H, W) before padding


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to multiples of ``multiple`` by reflection, as the reference does.

    The reference fails when the pad is not smaller than the side; reflecting repeatedly (and
    replicating a 1-pixel side) extends it to any size and equals the reference where it works.
    """
    for dim in (2, 3):
        need = -x.shape[dim] % multiple
        while need > 0:
            side = x.shape[dim]
            step = min(need, side - 1) if side > 1 else need
            pad = (0, 0, 0, step) if dim == 2 else (0, step, 0, 0)
            x = F.pad(x, pad, mode="reflect" if side > 1 else "replicate")
            need -= step
    return x


class Restorer:
    """A loaded model. Call it on a PIL image, or use :meth:`restore` on float arrays."""

    def __init__(
        self,
        spec: ModelSpec,
        unet: UNetModelSwin,
        vq: VQModel,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.spec, self.unet, self.vq = spec, unet, vq
        self.device, self.dtype = device, dtype
        self.tables = sampler.schedule_tables(spec.schedule)

    # -- the core, on tensors -------------------------------------------------------------------
    def prepare(self, lq: torch.Tensor, mask: torch.Tensor | None = None) -> Prepared:
        """Pad, upsample by the model's scale (bicubic) and encode to the latent ``z_y``."""
        size = (lq.shape[2], lq.shape[3])
        lq = pad_to_multiple(lq.to(self.device, torch.float32), self.spec.pad_multiple)
        if mask is not None:
            mask = pad_to_multiple(mask.to(self.device, torch.float32), self.spec.pad_multiple)
        up = lq
        if self.spec.scale != 1:
            up = bicubic(lq, scale=self.spec.scale)
        z_y = self.vq.encode(up.to(self.dtype)).float()
        return Prepared(lq, mask, z_y, size)

    def denoiser(self, p: Prepared) -> sampler.Denoiser:
        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x, t, lq=p.lq, mask=p.mask).float()

        return net

    def decode(self, x: torch.Tensor, p: Prepared) -> torch.Tensor:
        """Latent -> image (1, 3, H*s, W*s) in [-1, 1], cropped and clamped."""
        out = self.vq.decode(x.to(self.dtype)).float()
        h, w = p.size
        return out[:, :, : h * self.spec.scale, : w * self.spec.scale].clamp(-1, 1)

    def run(
        self,
        lq: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """One untiled pass: (1, 3, H, W) [-1, 1] -> (1, 3, H*s, W*s) [-1, 1]."""
        p = self.prepare(lq, mask)
        step_cb = None
        if progress is not None:

            def step_cb(i: int, n: int, _x: torch.Tensor, _x0: torch.Tensor) -> None:
                progress("step", i, n)

        x = sampler.sample(self.denoiser(p), p.z_y, self.tables, generator, step_cb)
        return self.decode(x, p)

    # -- PIL images (the public API) ------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image,
        mask: Image.Image | None = None,
        *,
        seed: int = 12345,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: str = "none",
        progress: Progress | None = None,
    ) -> Image.Image:
        """Restore a PIL image (RGB, RGBA, L, LA, P; 8 or 16 bit) and return an 8-bit PIL image of
        the same kind (alpha kept and resized, grayscale kept). ``mask``: white = fill."""
        pixels, alpha, gray = _from_pil(image)
        m = None if mask is None else _from_pil(mask)[0].mean(axis=2)
        out = self.restore(
            pixels,
            m,
            seed=seed,
            tile=tile,
            tile_overlap=tile_overlap,
            color_fix=color_fix,
            progress=progress,
        )
        return _to_pil(out, alpha, gray)

    # -- arrays ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def restore(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        mask: np.ndarray | None = None,  # (H, W) float in [0, 1], 1 = fill (inpainting)
        *,
        seed: int = 12345,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: str = "none",
        progress: Progress | None = None,
    ) -> np.ndarray:  # (H*s, W*s, 3) float32 in [0, 1]
        """Restore one image. ``tile``: tile side in input pixels (0 = never tile, None = auto; face
        models, which take a fixed-size aligned crop, never tile);
        ``color_fix``: none, wavelet or adain (toward the input's colours)."""
        spec = self.spec
        if (mask is not None) != (spec.task == "inpaint"):
            raise ValueError("a mask is required for inpainting models and only for them")
        img = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        img = img.permute(2, 0, 1)[None]  # (1, 3, H, W) in [0, 1]
        m01 = None
        if mask is not None:
            m01 = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
            lq = (img * (1 - m01)) * 2 - 1  # holes are black in the network's input
        else:
            lq = img * 2 - 1
        resized_from = None
        if spec.input_size and lq.shape[-2:] != (spec.input_size, spec.input_size):
            resized_from = lq.shape[-2:]
            lq = _resize(lq, (spec.input_size, spec.input_size))
        mask_n = None if m01 is None else m01 * 2 - 1
        if spec.input_size:  # an aligned crop at the model's fixed size: never cut into tiles
            tile = 0
        if tile is not None:  # the caller's tile: running out of memory is the caller's to fix
            out = self._tiled(lq, mask_n, make_generator(seed), tile, tile_overlap, progress)
        else:
            out = self._tiled_auto(lq, mask_n, seed, tile_overlap, progress)
        if resized_from is not None:
            out = _resize(out, tuple(resized_from)).clamp(-1, 1)
        out01 = colorfix.apply(color_fix, out.cpu().mul_(0.5).add_(0.5), img)  # out is ours
        if m01 is not None:  # paste the known pixels back (spec §1.1)
            out01 = out01 * m01 + img * (1 - m01)
        return out01[0].permute(1, 2, 0).numpy()

    def _tiled_auto(
        self,
        lq: torch.Tensor,
        mask: torch.Tensor | None,
        seed: int,
        overlap: int | None,
        progress: Progress | None,
    ) -> torch.Tensor:
        """With the automatic tile, halved (down to one padding multiple) whenever the device runs
        out of memory: the memory figure behind it is an estimate. The generator restarts with each
        try, so the result is the one that tile gives."""
        tile = self.auto_tile((lq.shape[-2], lq.shape[-1]))
        while True:
            try:
                return self._tiled(lq, mask, make_generator(seed), tile, overlap, progress)
            except (MemoryError, RuntimeError) as exc:
                smaller = tiling.smaller_tile(tile, self.spec.pad_multiple)
                if not is_out_of_memory(exc) or smaller is None:
                    raise
                tile = smaller
                release_memory(self.device)

    def _tiled(
        self,
        lq: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
        tile: int,
        overlap: int | None,
        progress: Progress | None,
    ) -> torch.Tensor:
        h, w = lq.shape[-2:]
        s = self.spec.scale
        m = self.spec.pad_multiple  # each tile is padded to this anyway: a smaller tile only costs
        tile = -(-tile // m) * m if tile > 0 else tile
        if tile <= 0 or (h <= tile and w <= tile):
            return self.run(lq, mask, generator, progress).cpu()
        overlap = tiling.default_overlap(tile) if overlap is None else overlap
        plan = tiling.plan(h, w, tile, overlap)
        out = torch.zeros(1, 3, h * s, w * s)  # the one full-size buffer
        for i, box in enumerate(plan):
            ys, xs = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
            part_mask = None if mask is None else mask[:, :, ys, xs]
            part = self.run(lq[:, :, ys, xs], part_mask, generator, progress).cpu()
            weight = torch.from_numpy(tiling.blend_weights(box, h, w, overlap, s))[None, None]
            oy, ox = (
                slice(box.top * s, (box.top + box.height) * s),
                slice(box.left * s, (box.left + box.width) * s),
            )
            out[:, :, oy, ox] += part * weight
            if progress is not None:
                progress("tile", i + 1, len(plan))
        ty, tx = tiling.weight_totals(plan, h, w, overlap, s)
        out /= torch.from_numpy(ty)[:, None]
        out /= torch.from_numpy(tx)[None, :]
        return out

    def auto_tile(self, size: tuple[int, int] | None = None) -> int:
        """The default tile (input pixels) for an image of ``size`` (H, W) on this device: see
        :func:`tiling.auto_tile`."""
        return tiling.auto_tile(self.spec, self.device, self.dtype, size)


def _from_pil(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(H, W, 3) float32 RGB in [0, 1], alpha (H, W) or None, and whether it was grayscale."""
    gray = image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3].astype(np.float32) / 255
    if image.mode.startswith("I") or image.mode == "F":
        a = np.asarray(image).astype(np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
        rgb = np.repeat(a[..., None], 3, axis=2)
    else:
        rgb = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    return np.clip(rgb, 0, 1), alpha, gray


def _to_pil(rgb: np.ndarray, alpha: np.ndarray | None, gray: bool) -> Image.Image:
    def u8(a: np.ndarray) -> np.ndarray:
        return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)

    h, w = rgb.shape[:2]
    out = Image.fromarray(u8(rgb), "RGB")
    if gray:
        out = out.convert("L")
    if alpha is not None:
        a = Image.fromarray(alpha.astype(np.float32), "F")
        if a.size != (w, h):
            a = a.resize((w, h), Image.Resampling.LANCZOS)
        out.putalpha(Image.fromarray(u8(np.asarray(a)), "L"))
    return out


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return bicubic(x, size=size, antialias=True)
