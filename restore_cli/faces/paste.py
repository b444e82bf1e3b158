"""Paste restored face crops back into the photo: inverse affine and the rectangle soft mask.

facexlib ``utils/face_restoration_helper.py: FaceRestoreHelper.get_inverse_affine`` and
``paste_faces_to_input_image`` (``use_parse=False``). Per face, with s = upscale and (w, h) the
restored crop size:

1. inv = invert(M) * s, then inv[:, 2] += 0.5 s when s > 1 (the reference's offset, kept so
   results line up with GFPGAN's);
2. the crop and an all-ones (h, w) mask are warped into the output (bilinear, border 0); the
   reference's mask is (w, h) -- transposed for non-square crops, which leaves a black band under
   the face; here it has the crop's own shape;
3. mask eroded by int(2 s); w_edge = int(sqrt(area)) // 20; eroded again by 2 w_edge and blurred
   with a (2 w_edge + 1)^2 Gaussian: the soft mask;
4. out = soft * (eroded mask * face) + (1 - soft) * out in float32; after all faces the result is
   truncated to uint8.

Each face only touches a window around its footprint (with margins wider than the erosions and
the blur), so the cost follows the face, not the photo; the values equal a full-image computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .warp import erode, gaussian_blur, invert_affine, warp_affine

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def paste_affine(affine: np.ndarray, upscale: float = 1) -> np.ndarray:
    """(2, 3) map from crop pixels to output pixels for a crop made with ``affine``."""
    inv = invert_affine(affine) * upscale
    if upscale > 1:
        inv[:, 2] += 0.5 * upscale
    return inv


def _window(inv: np.ndarray, size: tuple[int, int], upscale: float, out: tuple[int, int]) -> Window:
    """Output region the face can change: its footprint plus the erosion and blur margins."""
    w, h = size
    corners = np.array([[-1, -1, 1], [w, -1, 1], [-1, h, 1], [w, h, 1]], dtype=np.float64)
    xy = corners @ inv.T
    lo, hi = np.floor(xy.min(0)) - 2, np.ceil(xy.max(0)) + 2
    w_edge_max = int(math.sqrt(max(1.0, float(np.prod(hi - lo))))) // 20 + 1
    margin = int(2 * upscale) + 3 * w_edge_max + 4
    x0, y0 = (max(0, int(v) - margin) for v in lo)
    x1, y1 = (min(n, int(v) + margin + 1) for v, n in zip(hi, out, strict=True))
    return x0, y0, max(x0, x1), max(y0, y1)


def _blend_face(
    canvas: np.ndarray, face: np.ndarray, inv: np.ndarray, upscale: float, win: Window,
    out_size: tuple[int, int],
) -> None:  # fmt: skip
    """Blend one (h, w, 3) uint8 face into ``canvas`` (float32, the window's pixels) in place."""
    h, w = face.shape[:2]
    restored = warp_affine(face, inv, out_size, border=0, window=win)
    mask = warp_affine(np.ones((h, w), dtype=np.float32), inv, out_size, border=0, window=win)
    ero = erode(torch.from_numpy(mask), int(2 * upscale))
    w_edge = int(math.sqrt(float(ero.double().sum()))) // 20
    soft = gaussian_blur(erode(ero, 2 * w_edge), 2 * w_edge + 1).numpy()[..., None]
    pasted = ero.numpy()[..., None] * restored
    canvas[...] = soft * pasted + (np.float32(1) - soft) * canvas


def paste(
    background: Image.Image,
    restored: Sequence[Image.Image],
    affines: Sequence[np.ndarray],
    upscale: float = 1,
) -> Image.Image:
    """``background`` (the photo at ``upscale`` x its size) with each restored crop pasted back.

    ``affines`` are the photo -> crop maps of :func:`restore_cli.faces.align`, one per crop, in
    the same order; later faces blend over earlier ones. RGB in and out; an alpha channel of the
    background is kept unchanged.
    """
    if len(restored) != len(affines):
        raise ValueError(f"{len(restored)} restored crops for {len(affines)} affines")
    has_alpha = background.mode in ("RGBA", "LA", "PA")
    bg = np.asarray(background.convert("RGBA" if has_alpha else "RGB"))
    rgb, out_size = bg[..., :3], (bg.shape[1], bg.shape[0])
    faces = [np.asarray(face.convert("RGB")) for face in restored]
    invs = [paste_affine(a, upscale) for a in affines]
    wins = [
        _window(inv, (f.shape[1], f.shape[0]), upscale, out_size)
        for f, inv in zip(faces, invs, strict=True)
    ]
    wins_used = [
        (f, inv, w)
        for f, inv, w in zip(faces, invs, wins, strict=True)
        if w[2] > w[0] and w[3] > w[1]
    ]
    result = bg.copy()
    if wins_used:
        ux0, uy0 = min(w[0] for *_, w in wins_used), min(w[1] for *_, w in wins_used)
        ux1, uy1 = max(w[2] for *_, w in wins_used), max(w[3] for *_, w in wins_used)
        canvas = rgb[uy0:uy1, ux0:ux1].astype(np.float32)
        for face, inv, (x0, y0, x1, y1) in wins_used:
            part = canvas[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0]
            _blend_face(part, face, inv, upscale, (x0, y0, x1, y1), out_size)
        result[uy0:uy1, ux0:ux1, :3] = np.clip(canvas, 0, 255).astype(np.uint8)  # truncation
    return Image.fromarray(result, "RGBA" if has_alpha else "RGB")
