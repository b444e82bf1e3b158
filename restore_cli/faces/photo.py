"""Whole-photo face restoration: detect, select, align, restore (a callable), paste back.

The orchestration of facexlib's ``FaceRestoreHelper`` as GFPGAN's ``GFPGANer.enhance`` runs it
(``get_face_landmarks_5(only_center_face, eye_dist_threshold=5)`` -> ``align_warp_face`` ->
restore -> ``get_inverse_affine`` -> ``paste_faces_to_input_image``), with the restoration
network passed in as a function of the crops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .align import align
from .detect import Detector, Face, rgb8
from .paste import paste
from .warp import resize_lanczos4

RestoreCrops = Callable[[list[Image.Image]], Sequence[Image.Image]]


def select_faces(
    faces: Sequence[Face],
    size: tuple[int, int],
    *,
    only_center_face: bool = False,
    max_faces: int | None = None,
    eye_dist_threshold: float | None = 5,
) -> list[Face]:
    """The faces to restore, in detection order (highest score first).

    Drops faces whose eyes are less than ``eye_dist_threshold`` pixels apart (None: keep all);
    then ``only_center_face`` keeps the one whose box centre is nearest the photo's centre
    (``size`` = (width, height); the first on ties); then ``max_faces`` keeps the N best scores.
    """
    kept = [f for f in faces if eye_dist_threshold is None or f.eye_distance >= eye_dist_threshold]
    if only_center_face and kept:
        cx, cy = size[0] / 2, size[1] / 2
        dists = [np.hypot(f.centre[0] - cx, f.centre[1] - cy) for f in kept]
        kept = [kept[int(np.argmin(dists))]]
    if max_faces is not None:
        kept = sorted(kept, key=lambda f: -f.score)[: max(0, max_faces)]
    return kept


def upscaled_background(image: Image.Image, upscale: float) -> Image.Image:
    """The photo at ``upscale`` x its size (int(w s), int(h s)), resized as facexlib does when no
    background upsampler is given (``cv2.resize`` LANCZOS4; the same size is a copy)."""
    w, h = image.size
    return resize_image(image, (int(w * upscale), int(h * upscale)))


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """OpenCV-exact LANCZOS4 resize of an 8-bit RGB (or RGBA) image to ``size`` = (w, h)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA")
    pixels = np.asarray(image.convert("RGBA")) if has_alpha else rgb8(image)
    return Image.fromarray(resize_lanczos4(pixels, size), "RGBA" if has_alpha else "RGB")


def restore_photo(
    image: Image.Image,
    detector: Detector,
    restore_crops: RestoreCrops,
    *,
    upscale: float = 1,
    background: Image.Image | None = None,
    threshold: float = 0.97,
    nms: float = 0.4,
    only_center_face: bool = False,
    max_faces: int | None = None,
    eye_dist_threshold: float | None = 5,
    size: int = 512,
    crop_ratio: tuple[float, float] = (1.0, 1.0),
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Restore every face of ``image`` and paste it back; returns the result and one record per
    face restored.

    * faces are detected on ``image`` itself (8-bit RGB), kept as :func:`select_faces` says;
    * each is aligned to a ``size`` crop (FFHQ template, ``crop_ratio`` = (rh, rw)) and all crops
      go to ``restore_crops`` in one call, which must return as many crops of the same sizes
      (e.g. a batched face model);
    * the background is ``background`` (e.g. the photo super-resolved), resized with LANCZOS4
      if it is not exactly (int(w * upscale), int(h * upscale)), else the photo resized so;
    * the faces are pasted onto it (:func:`restore_cli.faces.paste`); an alpha channel of the
      background is kept.

    A photo with no face kept returns the background as is. Each record holds ``box``
    [x1, y1, x2, y2], ``score``, ``landmarks`` [[x, y] * 5] (photo pixels, plain floats),
    ``affine`` (2, 3), and the PIL images ``crop`` and ``restored`` (for ``--save-crops``).
    """
    w, h = image.size
    out_size = (int(w * upscale), int(h * upscale))
    if background is None:
        background = upscaled_background(image, upscale)
    elif background.size != out_size:
        background = resize_image(background, out_size)
    rgb = rgb8(image)
    found = detector.detect(Image.fromarray(rgb), threshold=threshold, nms=nms)
    kept = select_faces(
        found, (w, h), only_center_face=only_center_face, max_faces=max_faces,
        eye_dist_threshold=eye_dist_threshold,
    )  # fmt: skip
    if not kept:
        return background, []
    aligned = [align(rgb, face.landmarks, size, crop_ratio) for face in kept]
    crops = [crop for crop, _ in aligned]
    restored = list(restore_crops(crops))
    if len(restored) != len(crops):
        raise ValueError(f"restore_crops returned {len(restored)} images for {len(crops)} crops")
    for crop, out in zip(crops, restored, strict=True):
        if out.size != crop.size:
            raise ValueError(f"restore_crops returned a {out.size} image for a {crop.size} crop")
    result = paste(background, restored, [a for _, a in aligned], upscale)
    records = [
        {
            "box": [float(v) for v in face.box],
            "score": face.score,
            "landmarks": face.landmarks.tolist(),
            "affine": affine,
            "crop": crop,
            "restored": out,
        }
        for face, (crop, affine), out in zip(kept, aligned, restored, strict=True)
    ]
    return result, records
