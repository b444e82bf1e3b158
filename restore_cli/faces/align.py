"""5-point alignment to the FFHQ crop: template, robust similarity estimate, crop warp.

facexlib ``utils/face_restoration_helper.py: FaceRestoreHelper.__init__`` (template, crop ratio)
and ``align_warp_face`` (``cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)``,
then ``cv2.warpAffine`` with border (135, 133, 132) BGR). The estimate follows OpenCV's
``calib3d/src/ptsetreg.cpp: LMeDSPointSetRegistrator::run`` and
``AffinePartial2DEstimatorCallback`` step by step, so the same points are rejected as outliers.

A similarity M = [[a, -b, tx], [b, a, ty]] maps photo pixels to crop pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import InputError
from .detect import rgb8
from .warp import warp_affine

# (x, y) of left eye, right eye, nose tip, left and right mouth corner in a 512 x 512 FFHQ crop.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)
CROP_BORDER_RGB = (132, 133, 135)  # facexlib's borderValue (135, 133, 132) in BGR

LMEDS_ITERS = 13  # RANSACUpdateNumIters(confidence 0.99, outlier ratio 0.45, 2 points)
_RNG_MULT = 4164903690  # OpenCV RNG (multiply-with-carry), seeded with 2^64 - 1


def face_template(
    size: int = 512, crop_ratio: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, tuple[int, int]]:
    """The (5, 2) template for a ``size`` face and the crop (width, height).

    ``crop_ratio`` = (height ratio, width ratio), both >= 1, as facexlib: the crop is
    (int(size * rw), int(size * rh)) with the face centred in it.
    """
    rh, rw = crop_ratio
    if rh < 1 or rw < 1:
        raise ValueError(f"crop_ratio must be >= 1 on both axes, not {crop_ratio}")
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    if rh > 1:
        template[:, 1] += size * (rh - 1) / 2
    if rw > 1:
        template[:, 0] += size * (rw - 1) / 2
    return template, (int(size * rw), int(size * rh))


def _pairs(n: int, iters: int = LMEDS_ITERS) -> list[tuple[int, int]]:
    """The index pairs OpenCV's LMeDS draws for n points (``RNG((uint64)-1)``, ``uniform(0, n)``;
    a repeat of the first index is redrawn)."""
    state = 2**64 - 1
    out = []

    def draw() -> int:
        nonlocal state
        state = ((state & 0xFFFFFFFF) * _RNG_MULT + (state >> 32)) & (2**64 - 1)
        return (state & 0xFFFFFFFF) % n

    for _ in range(iters):
        i = draw()
        j = draw()
        while j == i:
            j = draw()
        out.append((i, j))
    return out


def _two_point_model(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact similarity through two correspondences (``AffinePartial2DEstimatorCallback``)."""
    (x1, y1), (x2, y2) = p
    (X1, Y1), (X2, Y2) = q
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / ((x1 - x2) * (x1 - x2) + (y1 - y2) * (y1 - y2))
        s0 = d * ((X1 - X2) * (x1 - x2) + (Y1 - Y2) * (y1 - y2))
        s1 = d * ((Y1 - Y2) * (x1 - x2) - (X1 - X2) * (y1 - y2))
        s2 = d * ((Y1 - Y2) * (x1 * y2 - x2 * y1) - (X1 * y2 - X2 * y1) * (y1 - y2)
                  - (X1 * x2 - X2 * x1) * (x1 - x2))  # fmt: skip
        s3 = d * (-(X1 - X2) * (x1 * y2 - x2 * y1) - (Y1 * x2 - Y2 * x1) * (x1 - x2)
                  - (Y1 * y2 - Y2 * y1) * (y1 - y2))  # fmt: skip
    return np.array([[s0, -s1, s2], [s1, s0, s3]])


def _errors(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """float32 squared residuals with the model cast to float32 (``computeError``)."""
    f = m.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        a = f[0, 0] * src[:, 0] + f[0, 1] * src[:, 1] + f[0, 2] - dst[:, 0]
        b = f[1, 0] * src[:, 0] + f[1, 1] * src[:, 1] + f[1, 2] - dst[:, 1]
        return a * a + b * b


def _least_squares(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The float64 least-squares similarity (what OpenCV's LM refinement converges to)."""
    p, q = src.astype(np.float64), dst.astype(np.float64)
    pm, qm = p.mean(0), q.mean(0)
    dp, dq = p - pm, q - qm
    norm = float((dp * dp).sum())
    if norm == 0:
        raise InputError("face landmarks coincide", "the detection is degenerate; skip this face")
    a = float((dp * dq).sum()) / norm
    b = float((dp[:, 0] * dq[:, 1] - dp[:, 1] * dq[:, 0]).sum()) / norm
    t = qm - np.array([[a, -b], [b, a]]) @ pm
    return np.array([[a, -b, t[0]], [b, a, t[1]]])


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2, 3) float64 similarity mapping ``src`` (n, 2) onto ``dst`` (n, 2), and the inlier mask.

    ``cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)``: points cast to float32; 13
    two-point models from OpenCV's fixed random sequence; the model with the smallest median
    (rank n//2) float32 squared error wins (first one on ties); inliers are the points with error
    <= sigma^2, sigma = 2.5 * 1.4826 * (1 + 5 / (n - 2)) * sqrt(median); the result is the
    least-squares similarity over the inliers.
    """
    p = np.asarray(src, dtype=np.float32).reshape(-1, 2)
    q = np.asarray(dst, dtype=np.float32).reshape(-1, 2)
    n = len(p)
    if n < 2 or len(q) != n:
        raise ValueError(f"need two or more corresponding points, got {len(p)} and {len(q)}")
    if n == 2:
        return _least_squares(p, q), np.ones(2, dtype=bool)
    best, best_median = None, np.inf
    for i, j in _pairs(n):
        model = _two_point_model(p[[i, j]].astype(np.float64), q[[i, j]].astype(np.float64))
        err = _errors(model, p, q)
        median = float(np.sort(err.view(np.int32))[n // 2 : n // 2 + 1].view(np.float32)[0])
        if median < best_median:  # NaN (coincident pair) never wins
            best, best_median = model, median
    if best is None:
        raise InputError("face landmarks coincide", "the detection is degenerate; skip this face")
    sigma = max(2.5 * 1.4826 * (1 + 5.0 / (n - 2)) * np.sqrt(best_median), 0.001)
    inliers = _errors(best, p, q) <= np.float32(sigma * sigma)
    if inliers.sum() < 2:
        raise InputError("face landmarks fit no similarity", "skip this face")
    return _least_squares(p[inliers], q[inliers]), inliers


def align(
    image: Image.Image | np.ndarray,
    landmarks: np.ndarray,
    size: int = 512,
    crop_ratio: tuple[float, float] = (1.0, 1.0),
) -> tuple[Image.Image, np.ndarray]:
    """The aligned face crop (PIL RGB, (int(size * rw), int(size * rh))) and its (2, 3) affine.

    ``landmarks`` (5, 2) in photo pixels (``Face.landmarks``); ``crop_ratio`` = (rh, rw) as
    :func:`face_template`. Outside the photo the crop is (132, 133, 135) RGB, as facexlib's.
    """
    template, crop_size = face_template(size, crop_ratio)
    affine, _ = estimate_similarity(np.asarray(landmarks, dtype=np.float64), template)
    rgb = rgb8(image) if isinstance(image, Image.Image) else np.asarray(image, dtype=np.uint8)
    crop = warp_affine(rgb, affine, crop_size, border=CROP_BORDER_RGB)
    return Image.fromarray(crop, "RGB"), affine
