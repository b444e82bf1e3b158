"""Write the small test subsets of the face reference (run once; tests never read ../shared).

    python tests/data/face/extract.py /work/shared/reference/face

* ``astronaut_512x512.png``: the detector and paste input (the other two detector images are
  rebuilt from it in the tests, as the reference's README describes them).
* ``retinaface.safetensors``: per network and image, every 17th anchor row (0, 17, ...) of the raw
  heads, priors and decoded boxes/landmarks/scores, the input's bottom-right 16x16 corner, two
  channels of each intermediate map (427x333 only) and the full detections (mobile0.25).
* ``paste.safetensors``: per rectangle-mask case the landmarks, template, affines and inverse
  affines; ``paste_<case>_grid.png``: the final output sampled on a grid (every 2nd pixel,
  every 3rd at upscale 3) within 12 output pixels of the faces' footprints (alpha 255 where
  sampled); ``paste_<case>_corner.png``: its bottom-right 40x40 corner at full resolution
  (the replicate border of the LANCZOS4 background).
* ``crop_*.png``: the aligned crops (crop ratio 1: full; 1.25: every 2nd pixel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file, save_file

HERE = Path(__file__).parent
NETS = ("resnet50", "mobile0.25")
IMAGES = ("astronaut_512x512", "astronaut_640x480", "astronaut_427x333")
ROW_STRIDE = 17
CASES = ("up1_rect_nobg", "up2_rect_nobg", "up2_rect_bg", "up3_rect_nobg_crop1.25")


def detector_vectors(ref: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for net in NETS:
        for image in IMAGES:
            v = load_file(str(ref / "vectors" / f"retinaface_{net}.{image}.safetensors"))
            rows = torch.arange(0, v["priors"].shape[0], ROW_STRIDE)
            key = f"{net}.{image}"
            for name in ("loc", "conf_logits", "conf", "landmarks"):
                out[f"{key}.{name}"] = v[name][0, rows].contiguous()
            for name in ("priors", "boxes_px", "landmarks_px", "scores"):
                out[f"{key}.{name}"] = v[name][rows].contiguous()
            if "input" in v:
                out[f"{key}.input_corner"] = v["input"][:, :, -16:, -16:].contiguous()
            for name, t in v.items():
                if name.startswith("inter."):
                    out[f"{key}.{name}"] = t[:, :2].contiguous()
                if name.startswith("dets@"):
                    out[f"{key}.{name}"] = t.contiguous()
    return out


def paste_vectors(ref: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    cases = json.loads((ref / "paste" / "cases.json").read_text())
    for case in CASES:
        v = load_np(str(ref / "paste" / f"{case}.safetensors"))
        for name, t in v.items():
            out[f"{case}.{name}"] = t
        up = cases[case]["upscale"]
        output = np.asarray(Image.open(ref / "paste" / f"{case}.output.png"))
        step = 3 if up == 3 else 2
        # where the faces changed the output: warp footprints, from the inverse affines
        h, w = output.shape[:2]
        size = cases[case]["face_size"]
        changed = np.zeros((h, w), dtype=bool)
        for inv in v["inverse_affine_used"]:
            a = np.linalg.inv(np.vstack([inv, [0, 0, 1]]))[:2]
            ys, xs = np.mgrid[0:h, 0:w]
            sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
            sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
            changed |= (sx > -1) & (sx < size[0]) & (sy > -1) & (sy < size[1])
        near = F.max_pool2d(torch.from_numpy(changed).float()[None, None], 25, 1, 12)[0, 0] > 0
        mask = near.numpy()[::step, ::step]
        grid = np.where(mask[..., None], output[::step, ::step], 0).astype(np.uint8)
        alpha = (mask * 255).astype(np.uint8)[..., None]
        rgba = np.concatenate([grid, alpha], axis=2)
        Image.fromarray(rgba, "RGBA").save(HERE / f"paste_{case}_grid.png", optimize=True)
        corner = np.ascontiguousarray(output[-40:, -40:])
        Image.fromarray(corner).save(HERE / f"paste_{case}_corner.png", optimize=True)
    return out


def main(ref: Path) -> None:
    image = Image.open(ref / "images" / "astronaut_512x512.png")
    image.save(HERE / "astronaut_512x512.png")
    save_file(detector_vectors(ref), str(HERE / "retinaface.safetensors"))
    from safetensors.numpy import save_file as save_np

    save_np(paste_vectors(ref), str(HERE / "paste.safetensors"))
    for ratio, case in (("1", "up1_rect_nobg"), ("1.25", "up3_rect_nobg_crop1.25")):
        for k in range(2):
            crop = Image.open(ref / "paste" / f"{case}.cropped_{k}.png")
            if ratio != "1":
                crop = Image.fromarray(np.asarray(crop)[::2, ::2])
            crop.save(HERE / f"crop_{ratio}_{k}.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
