"""The restoration pipeline: pixels -> pad -> encode -> sample -> decode -> crop (reference
``sampler.py: ResShiftSampler.sample_func``, ``models/gaussian_diffusion.py: p_sample_loop``).

Tensors here are (B, C, H, W) images in [-1, 1]; the public entry points take float arrays in
[0, 1] (``restore``) or PIL images (``__call__``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import colorfix, imageio, sampler, tiling
from .device import bicubic, is_out_of_memory, make_generator, memory_budget, release_memory
from .nets import winograd
from .registry import ModelSpec
from .request import DEFAULT_SEED, ColorFix, Request

# Latent pixels (per image) up to which the UNet keeps its transformed filters for all steps
# (Restorer.keeping_filters). Measured with benchmarks/memory.py (realsr-v3, 2-core AMD EPYC):
# at a 64x64 latent they take 240 MiB and the command's peak went from 1.43 to 1.53 GiB for
# 0.13 s less per UNet call; at a 256x256 latent, kept up to their 384 MiB budget, the UNet's
# stage became the peak, 2.19 GiB against 1.88 without, so larger latents transform per call.
KEEP_FILTERS_LATENT = 64 * 64

# progress(stage, done, total): stage is "step" (diffusion steps of the current tile) or "tile".
Progress = Callable[[str, int, int], None]


@dataclass
class Prepared:
    """One image (or tile), or a batch of B of one size, ready for sampling."""

    lq: torch.Tensor  # (B, 3, Hp, Wp) in [-1, 1], padded
    mask: torch.Tensor | None  # (B, 1, Hp, Wp) in [-1, 1], +1 = hole
    z_y: torch.Tensor  # (B, C, hp, wp) float32 latent of the (upsampled) LQ
    size: tuple[int, int]  # (H, W) before padding


@dataclass
class _Input:
    """An image as :meth:`Restorer.process` hands it to the networks, and what it needs after."""

    img: torch.Tensor  # (1, 3, H, W) in [0, 1], as given
    m01: torch.Tensor | None  # (1, 1, H, W) in [0, 1], 1 = fill
    lq: torch.Tensor  # (1, 3, h, w) in [-1, 1], holes black, at the model's input size if fixed
    mask: torch.Tensor | None  # (1, 1, h, w) in [-1, 1]
    resized_from: tuple[int, int] | None  # (H, W) when resized to the model's input size


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
        unet: torch.nn.Module,  # nets.unet.UNetModelSwin
        vq: torch.nn.Module,  # nets.vqgan.VQModel
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.spec, self.unet, self.vq = spec, unet, vq
        self.device, self.dtype = device, dtype
        self.tables = sampler.schedule_tables(spec.schedule)

    # -- the core, on tensors -------------------------------------------------------------------
    def prepare(
        self, lq: torch.Tensor, mask: torch.Tensor | None = None, vae_tile: int | None = None
    ) -> Prepared:
        """Pad, upsample by the model's scale (bicubic) and encode to the latent ``z_y``
        (in latent tiles when it is larger than ``vae_tile``: see :meth:`encode`)."""
        size = (lq.shape[2], lq.shape[3])
        lq = pad_to_multiple(lq.to(self.device, torch.float32), self.spec.pad_multiple)
        if mask is not None:
            mask = pad_to_multiple(mask.to(self.device, torch.float32), self.spec.pad_multiple)
        up = lq
        if self.spec.scale != 1:
            up = bicubic(lq, scale=self.spec.scale)
        return Prepared(lq, mask, self.encode(up, vae_tile), size)

    def encode(self, up: torch.Tensor, vae_tile: int | None = None) -> torch.Tensor:
        """(1, 3, H, W) [-1, 1] -> float32 latent (1, C, H/f, W/f) on the device, not quantised.

        Latents larger than the autoencoder tile (``vae_tile`` latent pixels; None: the default of
        :func:`tiling.autoencoder_tiling`, 0: never) are encoded in overlapping tiles and blended,
        which bounds the memory of the autoencoder's global attention; smaller ones are encoded
        whole, exactly as the reference does.
        """
        f = self.spec.autoencoder.config.downsample
        h, w = up.shape[-2] // f, up.shape[-1] // f
        t = tiling.autoencoder_tiling((h, w), vae_tile)
        if not t.tile:
            return self.vq.encode(up.to(self.dtype)).float()

        def run(box: tiling.Box) -> torch.Tensor:
            part = up[
                :,
                :,
                box.top * f : (box.top + box.height) * f,
                box.left * f : (box.left + box.width) * f,
            ]
            return self.vq.encode(part.to(self.dtype)).float()

        return tiling.stitch(run, h, w, t, 1).to(self.device)

    def decode_latent(self, x: torch.Tensor, vae_tile: int | None = None) -> torch.Tensor:
        """Latent (1, C, h, w) -> float32 image (1, 3, h*f, w*f), quantised first, not clamped; in
        tiles as :meth:`encode` (the codebook lookup is per latent pixel, so tiles do not change it)."""
        f = self.spec.autoencoder.config.downsample
        h, w = x.shape[-2:]
        t = tiling.autoencoder_tiling((h, w), vae_tile)
        if not t.tile:
            return self.vq.decode(x.to(self.dtype)).float()

        def run(box: tiling.Box) -> torch.Tensor:
            part = x[:, :, box.top : box.top + box.height, box.left : box.left + box.width]
            return self.vq.decode(part.to(self.dtype)).float()

        return tiling.stitch(run, h, w, t, f)

    def denoiser(self, p: Prepared) -> sampler.Denoiser:
        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x, t, lq=p.lq, mask=p.mask).float()

        return net

    def decode(self, x: torch.Tensor, p: Prepared, vae_tile: int | None = None) -> torch.Tensor:
        """Latent -> image (1, 3, H*s, W*s) in [-1, 1], cropped and clamped."""
        out = self.decode_latent(x, vae_tile)
        h, w = p.size
        return out[:, :, : h * self.spec.scale, : w * self.spec.scale].clamp(-1, 1)

    def run(
        self,
        lq: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
        progress: Progress | None = None,
        vae_tile: int | None = None,
        timesteps: tuple[int, ...] | None = None,
        eta: float = 1.0,
        early_exit: float | None = None,
    ) -> torch.Tensor:
        """One pass of the whole chain: (1, 3, H, W) [-1, 1] -> (1, 3, H*s, W*s) [-1, 1]."""
        p = self.prepare(lq, mask, vae_tile)
        step_cb = _step_callback(progress)
        with self.keeping_filters(p.z_y):
            x = sampler.sample(
                self.denoiser(p), p.z_y, self.tables, generator, step_cb,
                timesteps=timesteps, eta=eta, early_exit=early_exit,
            )  # fmt: skip
        return self.decode(x, p, vae_tile)

    def run_many(
        self,
        lqs: Sequence[torch.Tensor],  # B x (1, 3, H, W) in [-1, 1], of one size
        masks: Sequence[torch.Tensor | None],  # B x (1, 1, H, W) in [-1, 1], or None each
        generators: Sequence[torch.Generator],
        progress: Progress | None = None,
        vae_tile: int | None = None,
        timesteps: tuple[int, ...] | None = None,
        eta: float = 1.0,
        early_exit: float | None = None,
    ) -> torch.Tensor:  # (B, 3, H*s, W*s) in [-1, 1]
        """:meth:`run` of B inputs as one batch, input i drawing its noise from ``generators[i]``
        as :meth:`run` would: each input's draws are taken ahead, in batch order, so one
        generator may serve several tiles of an image and they draw what one-by-one runs draw.

        On the CPU the networks still see one input at a time: their convolution and matrix
        kernels pick algorithms (and summation orders) by batch size, so a whole batch differs
        from batch 1 in the last bits (about 1e-5), and on 2 cores it is no faster (realsr-v3,
        three 64x64 latents through the UNet: 1.80 s whole, 1.78 s one by one). So results
        are batch 1's bit for bit there. On a GPU, where batches are what make small tiles fast,
        the batch goes through whole: the same noise, equal to batch 1 up to float rounding.
        """
        if not len(lqs) == len(masks) == len(generators) > 0:
            raise ValueError("run_many needs one mask (or None) and one generator per input")
        if self._whole_batches():
            mask = None if masks[0] is None else torch.cat(list(masks))  # type: ignore[arg-type]
            parts = [self.prepare(torch.cat(list(lqs)), mask, vae_tile)]
        else:
            parts = [self.prepare(lq, m, vae_tile) for lq, m in zip(lqs, masks, strict=True)]
        z_y = torch.cat([p.z_y for p in parts])
        count = sampler.noise_draws(self.tables, timesteps)
        drawn = [sampler.draw_noise(g, z_y[:1].shape, count, z_y) for g in generators]
        noise = [torch.cat(step) for step in zip(*drawn, strict=True)]
        with self.keeping_filters(z_y[:1]):
            x = sampler.sample(
                self._batch_denoiser(parts), z_y, self.tables, None, _step_callback(progress),
                timesteps=timesteps, eta=eta, noise=noise, early_exit=early_exit,
            )  # fmt: skip
        if len(parts) == 1:
            return self.decode(x, parts[0], vae_tile)
        return torch.cat(
            [self.decode(x[i : i + 1].clone(), p, vae_tile) for i, p in enumerate(parts)]
        )

    def keeping_filters(self, z: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """A block in which the UNet keeps its transformed convolution filters from call to call
        (:func:`winograd.keep_filters`) when one image's latent ``z`` is at most
        :data:`KEEP_FILTERS_LATENT` pixels: around the steps of an image or tile, and no longer,
        so they are gone before the autoencoder's decoder."""
        if z.shape[-2] * z.shape[-1] > KEEP_FILTERS_LATENT:
            return contextlib.nullcontext()
        return winograd.keep_filters(self.unet)

    def _whole_batches(self) -> bool:
        """Whether batches go through the networks whole (see :meth:`run_many`)."""
        return self.device.type != "cpu"

    def _batch_denoiser(self, parts: Sequence[Prepared]) -> sampler.Denoiser:
        """The network over a batch: one call, or one per part (each in a fresh tensor, as
        :meth:`run` hands it over)."""
        if len(parts) == 1:
            return self.denoiser(parts[0])
        nets = [self.denoiser(p) for p in parts]

        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [f(x[i : i + 1].clone(), t[i : i + 1].clone()) for i, f in enumerate(nets)]
            )

        return net

    # -- PIL images (the public API) ------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image,
        mask: Image.Image | None = None,
        *,
        seed: int = DEFAULT_SEED,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: ColorFix | str = ColorFix.NONE,
        aligned: bool = False,
        steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        eta: float = 1.0,
        batch_size: int = 1,
        early_exit: float | None = None,
        progress: Progress | None = None,
    ) -> Image.Image:
        """Restore a PIL image of any mode (RGB, RGBA, L, LA, P, I;16, F, ...) as the command line
        restores the same file, EXIF orientation applied (:func:`imageio.picture_from_pil`), and
        return what it would write as a PNG (:func:`imageio.picture_to_pil`): 8-bit, of the same
        kind, alpha kept and resized, grayscale kept; 16-bit grayscale comes back as I;16.
        ``mask``: white = fill, read as the command line reads a mask file. A face model restores
        every face of a whole photo (detected, aligned, pasted back; see :meth:`photo_faces`)
        unless ``aligned`` says the image is an aligned face crop already."""
        picture = imageio.picture_from_pil(image)
        m = None
        if mask is not None:
            m = imageio.mask_from_picture(imageio.picture_from_pil(mask, name="mask"), picture.size)
        request = Request(
            seed=seed, tile=tile, tile_overlap=tile_overlap, color_fix=color_fix, steps=steps,
            timesteps=None if timesteps is None else tuple(timesteps), eta=eta,
            batch_size=batch_size, early_exit=early_exit,
        )  # fmt: skip
        if self.spec.task == "face" and not aligned:  # a whole photo: detect, restore, paste
            result = self.photo_faces().restore_picture(picture, None, request, progress)
        else:
            result = self.restore_picture(picture, m, request, progress)
        return imageio.picture_to_pil(result)

    def photo_faces(self, detector: str = "retinaface-resnet50"):  # -> FacePhotoRestorer
        """This face model as a whole-photo restorer (:mod:`restore_cli.facephoto`), with the
        ``detector`` loaded (downloaded on first use) on this device; kept for later calls."""
        from . import faces
        from .facephoto import FacePhotoRestorer

        cached = getattr(self, "_photo_faces", None)
        if cached is None or cached[0] != detector:
            det = faces.load_detector(detector, device=self.device)
            cached = (detector, FacePhotoRestorer(self, det))
            self._photo_faces = cached
        return cached[1]

    # -- arrays ---------------------------------------------------------------------------------
    def restore(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        mask: np.ndarray | None = None,  # (H, W) float in [0, 1], 1 = fill (inpainting)
        *,
        seed: int = DEFAULT_SEED,
        tile: int | None = None,
        tile_overlap: int | None = None,
        color_fix: ColorFix | str = ColorFix.NONE,
        scale: float | None = None,
        vae_tile: int | None = None,
        steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        eta: float = 1.0,
        batch_size: int = 1,
        early_exit: float | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:  # (H*s, W*s, 3) float32 in [0, 1]
        """Restore one image: :meth:`process` with a :class:`~restore_cli.request.Request` of these
        settings (``tile``: input pixels, 0 = never tile, None = automatic; face models never tile;
        ``color_fix``: none, wavelet or adain; ``scale``: output size over the input's;
        ``batch_size``: tiles through the networks at once, with batch 1's result)."""
        request = Request(
            seed=seed,
            tile=tile,
            tile_overlap=tile_overlap,
            color_fix=color_fix,
            scale=scale,
            vae_tile=vae_tile,
            steps=steps,
            timesteps=None if timesteps is None else tuple(timesteps),
            eta=eta,
            batch_size=batch_size,
            early_exit=early_exit,
        )
        return self.process(pixels, mask, request, progress)

    @torch.inference_mode()
    def process(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        mask: np.ndarray | None,  # (H, W) float in [0, 1], 1 = fill (inpainting only)
        request: Request,
        progress: Progress | None = None,
    ) -> np.ndarray:  # (H*s, W*s, 3) float32 in [0, 1]; s = request.scale or the model's
        inp = self._input(pixels, mask)
        return self._output(self._tiled(inp.lq, inp.mask, request, progress), inp, request)

    @torch.inference_mode()
    def process_many(
        self,
        pixels: Sequence[np.ndarray],  # N x (H, W, 3) float in [0, 1]
        masks: Sequence[np.ndarray | None] | None,  # N x (H, W) float in [0, 1], or None
        request: Request,
        progress: Progress | None = None,
    ) -> list[np.ndarray]:
        """:meth:`process` of each image, with each one's result: consecutive images of one size
        (after the model's own resize) go through the networks together, ``request.batch_size``
        tiles at a time (:meth:`_tiled_many`); at batch size 1, one by one."""
        masks = [None] * len(pixels) if masks is None else masks
        if request.batch_size == 1:
            return [
                self.process(p, m, request, progress) for p, m in zip(pixels, masks, strict=True)
            ]
        inputs = [self._input(p, m) for p, m in zip(pixels, masks, strict=True)]
        outs: list[torch.Tensor] = []
        for _, run in itertools.groupby(inputs, key=lambda i: i.lq.shape[-2:]):
            group = list(run)
            lqs, group_masks = [i.lq for i in group], [i.mask for i in group]
            outs += self._tiled_many(lqs, group_masks, request, progress)
        return [self._output(o, i, request) for o, i in zip(outs, inputs, strict=True)]

    def restore_pictures(
        self,
        pictures: Sequence[imageio.Picture],
        masks: Sequence[np.ndarray | None] | None,
        request: Request,
        progress: Progress | None = None,
    ) -> list[imageio.Picture]:
        """:meth:`restore_picture` of each picture, same-size ones batched (:meth:`process_many`)."""
        outs = self.process_many([p.pixels for p in pictures], masks, request, progress)
        return [imageio.with_pixels(p, o) for p, o in zip(pictures, outs, strict=True)]

    def _input(self, pixels: np.ndarray, mask: np.ndarray | None) -> _Input:
        """(H, W, 3) [0, 1] pixels (and (H, W) mask) as the networks take them."""
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
            resized_from = (lq.shape[-2], lq.shape[-1])
            lq = _resize(lq, (spec.input_size, spec.input_size))
        mask_n = None if m01 is None else m01 * 2 - 1
        return _Input(img, m01, lq, mask_n, resized_from)

    def _output(self, out: torch.Tensor, inp: _Input, request: Request) -> np.ndarray:
        """The networks' (1, 3, h*s, w*s) [-1, 1] result as :meth:`process` returns it."""
        if inp.resized_from is not None:
            out = _resize(out, inp.resized_from).clamp(-1, 1)
        img, m01 = inp.img, inp.m01
        out01 = colorfix.apply(request.color_fix.value, out.cpu().mul_(0.5).add_(0.5), img)
        if m01 is not None:  # paste the known pixels back, as the reference's inpainting script
            out01 = out01 * m01 + img * (1 - m01)
        result = out01[0].permute(1, 2, 0).numpy()
        height, width = img.shape[-2:]
        return imageio.to_scale(result, (width, height), request.scale, self.spec.scale)

    def restore_picture(
        self,
        picture: imageio.Picture,
        mask: np.ndarray | None,
        request: Request,
        progress: Progress | None = None,
    ) -> imageio.Picture:
        """A decoded picture restored, its alpha resized to the result and everything else kept
        (grayscale, bit depth, ICC, EXIF): what the command line and the PIL API write."""
        return imageio.with_pixels(picture, self.process(picture.pixels, mask, request, progress))

    def _tiled(
        self,
        lq: torch.Tensor,  # (1, 3, H, W) in [-1, 1]
        mask: torch.Tensor | None,  # (1, 1, H, W) in [-1, 1]
        request: Request,
        progress: Progress | None,
    ) -> torch.Tensor:  # (1, 3, H*s, W*s) in [-1, 1], on the CPU
        """The image in tiles as :func:`tiling.resolve` decides. An automatic tile is halved (down to
        one padding multiple) whenever the device runs out of memory, as the memory figure behind
        it is an estimate; the generator restarts with each try, so the result is the one that tile
        gives. A tile the caller chose is left alone: running out of memory is theirs to fix."""
        if request.batch_size > 1:
            return self._tiled_many([lq], [mask], request, progress)[0]
        size = (lq.shape[-2], lq.shape[-1])
        t = self._tiling(request, size)
        on_tile = None if progress is None else (lambda i, n: progress("tile", i, n))
        ts = self.spec.trajectory(steps=request.steps, timesteps=request.timesteps)
        while True:
            generator = make_generator(request.seed)

            def run(box: tiling.Box, g: torch.Generator = generator) -> torch.Tensor:
                ys, xs = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
                part_mask = None if mask is None else mask[:, :, ys, xs]
                return self.run(
                    lq[:, :, ys, xs], part_mask, g, progress, vae_tile=request.vae_tile,
                    timesteps=ts, eta=request.eta, early_exit=request.early_exit,
                )  # fmt: skip

            try:
                return tiling.stitch(run, size[0], size[1], t, self.spec.scale, on_tile)
            except (MemoryError, RuntimeError) as exc:
                smaller = tiling.smaller(t, size, self.spec.pad_multiple, request.tile_overlap)
                if not (t.automatic and is_out_of_memory(exc)) or smaller is None:
                    raise
                t = smaller
                release_memory(self.device)

    def _tiling(self, request: Request, size: tuple[int, int]) -> tiling.Tiling:
        return tiling.resolve(
            request.tile,
            request.tile_overlap,
            size,
            scale=self.spec.scale,
            multiple=self.spec.pad_multiple,
            fixed_size=bool(self.spec.input_size),
            budget=memory_budget(self.device, self.dtype) if request.tile is None else None,
        )

    def _tiled_many(
        self,
        lqs: Sequence[torch.Tensor],  # N x (1, 3, H, W) in [-1, 1], of one size
        masks: Sequence[torch.Tensor | None],  # N x (1, 1, H, W) in [-1, 1], or None each
        request: Request,
        progress: Progress | None,
    ) -> list[torch.Tensor]:  # N x (1, 3, H*s, W*s) in [-1, 1], on the CPU
        """:meth:`_tiled` of same-size images at once, each image with the result :meth:`_tiled`
        gives it. The tiles of all of them (one size, as the images share one plan) go through
        :meth:`run_many` ``request.batch_size`` at a time, image by image and each image's in plan
        order, every image drawing from a generator of its own in that order. Parts are made as
        the blending asks for them, so at most one batch of them waits. Running out of memory
        halves the batch first (which changes nothing), then the tile as :meth:`_tiled` does."""
        size = (lqs[0].shape[-2], lqs[0].shape[-1])
        if any(lq.shape[-2:] != size for lq in lqs):
            raise ValueError("_tiled_many takes images of one size")
        t = self._tiling(request, size)
        batch = request.batch_size
        while True:
            try:
                return self._stitch_many(lqs, masks, t, batch, request, progress)
            except (MemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory(self.device)
                if batch > 1:
                    batch //= 2
                    continue
                smaller = tiling.smaller(t, size, self.spec.pad_multiple, request.tile_overlap)
                if not t.automatic or smaller is None:
                    raise
                t = smaller

    def _stitch_many(
        self,
        lqs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        t: tiling.Tiling,
        batch: int,
        request: Request,
        progress: Progress | None,
    ) -> list[torch.Tensor]:
        """One try of :meth:`_tiled_many`: tiling ``t``, ``batch`` tiles at a time."""
        size = (lqs[0].shape[-2], lqs[0].shape[-1])
        on_tile = None if progress is None else (lambda i, n: progress("tile", i, n))
        ts = self.spec.trajectory(steps=request.steps, timesteps=request.timesteps)
        generators = [make_generator(request.seed) for _ in lqs]
        boxes = tiling.plan(*size, t.tile, t.overlap) if t.tile else [tiling.Box(0, 0, *size)]
        work = [(k, box) for k in range(len(lqs)) for box in boxes]
        position = {item: j for j, item in enumerate(work)}
        made: dict[tuple[int, tiling.Box], torch.Tensor] = {}

        def part(box: tiling.Box, k: int) -> torch.Tensor:
            if (k, box) not in made:  # the first not made yet: make it and the next batch - 1
                chunk = work[position[(k, box)] :][:batch]
                crops = [_crop(lqs[i], b) for i, b in chunk]
                crop_masks = [None if masks[i] is None else _crop(masks[i], b) for i, b in chunk]
                out = self.run_many(
                    crops, crop_masks, [generators[i] for i, _ in chunk], progress,
                    vae_tile=request.vae_tile, timesteps=ts, eta=request.eta,
                    early_exit=request.early_exit,
                )  # fmt: skip
                made.update(zip(chunk, out.split(1), strict=True))
            return made.pop((k, box))

        return [
            tiling.stitch(functools.partial(part, k=k), *size, t, self.spec.scale, on_tile)
            for k in range(len(lqs))
        ]


def _crop(x: torch.Tensor, box: tiling.Box) -> torch.Tensor:
    return x[:, :, box.top : box.top + box.height, box.left : box.left + box.width]


def _step_callback(progress: Progress | None) -> sampler.StepCallback | None:
    """Diffusion steps as ``progress("step", i, n)``."""
    if progress is None:
        return None

    def step_cb(i: int, n: int, _x: torch.Tensor, _x0: torch.Tensor) -> None:
        progress("step", i, n)

    return step_cb


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return bicubic(x, size=size, antialias=True)
