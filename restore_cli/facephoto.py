"""Whole photos with faces: detect, align, restore each face with ``faceir``, paste back.

``restore face photo.jpg`` and ``restore sr photo.jpg --faces`` are this one machinery. The faces
are found on the input (so detection cost does not grow with the output); the background is the
photo itself (``upscale`` 1), or the photo restored by a background model (``realsr-v3`` for
``restore face --upscale 2|4``, the ``sr`` model itself for ``sr --faces``), and the restored faces
are pasted onto it at that scale (:mod:`restore_cli.faces`: facexlib's geometry, OpenCV-exact
warps). The paste works in 8 bits as the reference does; pixels it does not touch keep the
background's full precision, so 16-bit and grayscale photos keep their kind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from . import faces, imageio
from .pipeline import Progress, Restorer
from .request import Request

DETECTORS = {"resnet50": "retinaface-resnet50", "mobilenet": "retinaface-mobilenet"}


@dataclass(frozen=True)
class FaceOptions:
    """Which faces are restored (facexlib's ``FaceRestoreHelper`` defaults)."""

    threshold: float = 0.97  # detection score
    nms: float = 0.4
    only_center_face: bool = False
    max_faces: int | None = None  # the N highest scores
    eye_dist_threshold: float = 5  # pixels between the eyes, at least


@dataclass
class FaceNotes:
    """What a photo's restoration found, for ``--json`` and ``--save-crops``."""

    faces: list[dict[str, Any]] = field(default_factory=list)  # box, score, landmarks
    crops: list[tuple[Image.Image, Image.Image]] = field(
        default_factory=list
    )  # (aligned, restored)


class FacePhotoRestorer:
    """A whole-photo face restorer with the interface :mod:`restore_cli.batch` drives.

    ``face``: the face model (``faceir``), run on aligned 512x512 crops. ``background``: the model
    restoring the rest of the photo (None: the photo itself); its output's scale is ``upscale``
    (an x4 model's output is resized to x2 for ``upscale`` 2). ``spec`` is the background's for
    ``sr --faces`` (the task and model named in records) and the face model's otherwise.
    """

    def __init__(
        self,
        face: Restorer,
        detector: faces.Detector,
        *,
        background: Restorer | None = None,
        upscale: float = 1,
        options: FaceOptions = FaceOptions(),
        primary: str = "face",
    ) -> None:
        if upscale != 1 and background is None:
            raise ValueError("an upscaled photo needs a background model")
        self.face, self.detector, self.background = face, detector, background
        self.upscale, self.options = upscale, options
        self.spec = background.spec if primary == "background" and background else face.spec
        self.device, self.dtype = face.device, face.dtype

    def restore_picture(
        self,
        picture: imageio.Picture,
        mask: np.ndarray | None,
        request: Request,
        progress: Progress | None = None,
        notes: FaceNotes | None = None,
    ) -> imageio.Picture:
        """The photo with every kept face restored and pasted back (``request.scale`` resizes the
        result last, as for ``sr``); ``notes`` receives what was found."""
        return imageio.with_pixels(
            picture, self.restore_pixels(picture.pixels, request, progress, notes)
        )

    def restore_pixels(
        self,
        pixels: np.ndarray,  # (H, W, 3) float in [0, 1]
        request: Request,
        progress: Progress | None = None,
        notes: FaceNotes | None = None,
    ) -> np.ndarray:
        height, width = pixels.shape[:2]
        if self.background is not None:
            bg_request = dataclasses.replace(request, scale=self.upscale)
            bg = self.background.process(pixels, None, bg_request, progress)
        else:
            bg = np.asarray(pixels, dtype=np.float32)
        up = bg.shape[1] / width  # the background's scale (int(w * s) wide)
        photo8 = Image.fromarray(imageio.quantize(pixels))
        found = self.detector.detect(photo8, threshold=self.options.threshold, nms=self.options.nms)
        kept = faces.select_faces(
            found,
            (width, height),
            only_center_face=self.options.only_center_face,
            max_faces=self.options.max_faces,
            eye_dist_threshold=self.options.eye_dist_threshold,
        )
        out = bg
        if kept:
            aligned = [faces.align(photo8, face.landmarks) for face in kept]
            crop_request = Request(
                seed=request.seed, tile=0, color_fix=request.color_fix,
                batch_size=request.batch_size,
            )  # fmt: skip
            crops = [np.asarray(crop, dtype=np.float32) / np.float32(255) for crop, _ in aligned]
            # each crop with a generator of its own, as one by one: batched, the same faces
            outs = self.face.process_many(crops, None, crop_request, progress)
            restored = [Image.fromarray(imageio.quantize(face_out)) for face_out in outs]
            bg8 = imageio.quantize(bg)
            pasted = np.asarray(
                faces.paste(Image.fromarray(bg8), restored, [a for _, a in aligned], up)
            )
            changed = np.any(pasted != bg8, axis=2)  # the faces' footprint; elsewhere bg as is
            out = bg.copy()
            out[changed] = pasted[changed].astype(np.float32) / np.float32(255)
            if notes is not None:
                for face, (crop, _), done in zip(kept, aligned, restored, strict=True):
                    notes.faces.append(
                        {
                            "box": [round(float(v), 2) for v in face.box],
                            "score": round(float(face.score), 5),
                            "landmarks": np.round(face.landmarks, 2).tolist(),
                        }
                    )
                    notes.crops.append((crop, done))
        out = imageio.to_scale(out, (width, height), request.scale, up)
        return out
