"""Whole-photo face restoration: RetinaFace detection, 5-point FFHQ alignment, paste-back.

A torch + numpy re-implementation of what GFPGAN, CodeFormer and DiffBIR run around their face
networks (facexlib 0.3.0 ``FaceRestoreHelper``), with OpenCV's warps reproduced exactly::

    from restore_cli import faces
    det = faces.load_detector("retinaface-resnet50")        # or "retinaface-mobilenet"
    found = det.detect(image, threshold=0.97, nms=0.4)      # list[Face], highest score first
    crop, affine = faces.align(image, found[0].landmarks)   # 512 x 512 crop, (2, 3) photo -> crop
    out = faces.paste(background, [restored], [affine], upscale=1)
    out, records = faces.restore_photo(image, det, restore_crops)   # all of it

Modules: :mod:`.detect` (detector, preprocessing), :mod:`.boxes` (anchors, decoding, NMS),
:mod:`.align` (template, LMEDS similarity, crop), :mod:`.warp` (OpenCV-exact warps, erosion,
blur, resize), :mod:`.paste` (inverse affine, soft mask), :mod:`.photo` (orchestration).
"""

from .align import FFHQ_TEMPLATE_512, align, estimate_similarity, face_template
from .detect import Detector, Face, load_detector
from .paste import paste, paste_affine
from .photo import restore_photo, select_faces, upscaled_background

__all__ = [
    "FFHQ_TEMPLATE_512",
    "Detector",
    "Face",
    "align",
    "estimate_similarity",
    "face_template",
    "load_detector",
    "paste",
    "paste_affine",
    "restore_photo",
    "select_faces",
    "upscaled_background",
]
