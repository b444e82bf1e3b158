"""Face detection with RetinaFace: preprocessing, the network, decoding, thresholds and NMS.

Follows facexlib ``detection/retinaface.py: RetinaFace.detect_faces`` with
``use_origin_size=True`` (as ``FaceRestoreHelper.get_face_landmarks_5`` calls it): the photo is
fed at its own size, as BGR float32 in [0, 255] minus the per-channel mean (104, 117, 123); no
top-k; boxes are neither clipped to the image nor filtered by size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import nets, weights
from ..device import resolve_device
from ..errors import WeightsError
from ..nets.config import RetinaFaceConfig
from ..registry import DetectorSpec, Registry, default_registry
from .boxes import decode_boxes, decode_landmarks, nms, prior_boxes

MEAN_BGR = (104.0, 117.0, 123.0)


@dataclass(frozen=True, eq=False)
class Face:
    """One detection, in pixels of the photo: ``box`` (x1, y1, x2, y2), ``score`` in (0, 1] and
    ``landmarks`` (5, 2) float64 (x, y): the eye at smaller x, the other eye, nose tip, then the
    mouth corners in the same left/right order."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*(self.landmarks[0] - self.landmarks[1])))

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)


def rgb8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image: alpha dropped, gray replicated, 16-bit scaled to 8."""
    if image.mode.startswith("I") or image.mode == "F":
        a = np.asarray(image).astype(np.float64)
        a = a / 65535.0 * 255.0 if a.max() > 256 else a
        return np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def preprocess(image: Image.Image | np.ndarray) -> torch.Tensor:
    """PIL image or (H, W, 3) RGB array -> (1, 3, H, W) float32 BGR minus (104, 117, 123)."""
    rgb = rgb8(image) if isinstance(image, Image.Image) else np.asarray(image)
    bgr = rgb[..., ::-1].astype(np.float32) - np.asarray(MEAN_BGR, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]


class Detector:
    """A loaded RetinaFace. :meth:`detect` finds faces in a PIL image on ``device``."""

    def __init__(self, net: torch.nn.Module, device: torch.device) -> None:
        self.net, self.device = net, device

    @torch.inference_mode()
    def detect_array(
        self, image: Image.Image | np.ndarray, threshold: float = 0.97, nms_threshold: float = 0.4
    ) -> np.ndarray:
        """(K, 15) float32 rows [x1, y1, x2, y2, score, 5 x (x, y)], highest score first, as
        facexlib's ``detect_faces``: score strictly above ``threshold`` (compared in float32),
        then NMS dropping boxes with IoU strictly above ``nms_threshold``."""
        x = preprocess(image)
        h, w = x.shape[-2:]
        loc, logits, landm = self.net(x.to(self.device, torch.float32))
        priors = prior_boxes(h, w).to(self.device)
        boxes = decode_boxes(loc[0], priors, w, h).cpu().numpy()
        points = decode_landmarks(landm[0], priors, w, h).cpu().numpy()
        scores = torch.softmax(logits, dim=-1)[0, :, 1].cpu().numpy()
        keep = np.nonzero(scores > np.float32(threshold))[0]
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = scores.argsort()[::-1]  # as the reference: numpy's default (unstable) sort
        boxes, points, scores = boxes[order], points[order], scores[order]
        kept = nms(boxes, nms_threshold)
        rows = np.concatenate([boxes[kept], scores[kept, None], points[kept]], axis=1)
        return rows.astype(np.float32, copy=False).reshape(-1, 15)

    def detect(self, image: Image.Image, threshold: float = 0.97, nms: float = 0.4) -> list[Face]:
        """Faces in ``image`` (PIL; converted to 8-bit RGB), highest score first."""
        rows = self.detect_array(image, threshold, nms)
        return [
            Face(
                box=tuple(float(v) for v in row[:4]),  # type: ignore[arg-type]
                score=float(row[4]),
                landmarks=row[5:15].astype(np.float64).reshape(5, 2),
            )
            for row in rows
        ]


def detector_fits(spec: DetectorSpec) -> Callable[[dict], None]:
    """A check for ``weights.resolve(expect=...)``: a first download must load strictly into the
    detector network (built on meta) before its hash is recorded, so an HTML page or a wrong file
    is deleted at once instead of failing every later run."""

    def check(state: dict) -> None:
        weights.load_into(
            nets.build(RetinaFaceConfig(spec.backbone)), state, f"download of {spec.name}"
        )

    return check


def load_detector(
    name: str = "retinaface-resnet50",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    registry: Registry | None = None,
    offline: bool = False,
    progress: weights.ProgressFn | None = None,
    on_first_download: Callable[[str], None] | None = None,
) -> Detector:
    """A RetinaFace detector by registry name (``retinaface-resnet50``, ``retinaface-mobilenet``).

    ``checkpoint``: a local ``.pth``/``.safetensors`` file instead of the registry's download (keys
    with or without ``module.``; ``num_batches_tracked`` optional). Registry weights go through
    :func:`restore_cli.weights.resolve` (cache, hash check; ``offline``: never download).
    """
    spec = (registry or default_registry()).detector(name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: detector checkpoint not found", "check the path")
    elif spec.source is None:
        raise WeightsError(
            f"detector '{name}' names no weights in its registry entry",
            "pass a local checkpoint file or add a url to the entry",
        )
    else:
        path = weights.resolve(
            spec.source, name=name, offline=offline, progress=progress,
            on_first_download=on_first_download, expect=detector_fits(spec),
        )  # fmt: skip
    net = weights.load_into(
        nets.build(RetinaFaceConfig(spec.backbone)),
        weights.read_state_dict(path),
        f"{path} (face detector {name})",
    )
    dev = resolve_device(device)
    return Detector(net.to(dev, torch.float32).eval().requires_grad_(False), dev)
