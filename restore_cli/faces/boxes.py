"""RetinaFace anchors, box/landmark decoding and non-maximum suppression (pure index math).

facexlib ``detection/retinaface_utils.py: PriorBox, decode, decode_landm, py_cpu_nms`` (the latter
calls ``torchvision.ops.nms``). Notation: H, W = network input size; N = number of anchors;
a = anchor (cx, cy, w, h) normalised to [0, 1]; variances (0.1, 0.2).
"""

from __future__ import annotations

import numpy as np
import torch

MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor sides per level, in input pixels
STEPS = (8, 16, 32)  # strides of the three levels
VARIANCE = (0.1, 0.2)


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """(N, 4) float32 anchors [cx, cy, w, h] / (W, H, W, H), rows (level, y, x, size).

    Computed in double as facexlib's ``PriorBox.forward`` and stored as float32; never clipped.
    """
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = -(-height // step), -(-width // step)  # ceil, as the conv arithmetic gives
        cx = (np.arange(fw, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(fh, dtype=np.float64) + 0.5) * step / height
        grid = np.empty((fh, fw, len(sizes), 4))
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        for k, size in enumerate(sizes):
            grid[:, :, k, 2] = size / width
            grid[:, :, k, 3] = size / height
        levels.append(grid.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(levels).astype(np.float32))


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(N, 4) offsets -> (N, 4) [x1, y1, x2, y2] in input pixels (facexlib ``decode``)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    top_left = centre - size / 2
    boxes = torch.cat([top_left, size + top_left], dim=1)
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return boxes * scale


def decode_landmarks(
    pre: torch.Tensor, priors: torch.Tensor, width: int, height: int
) -> torch.Tensor:
    """(N, 10) offsets -> (N, 10) five (x, y) points in input pixels (facexlib ``decode_landm``)."""
    points = [
        priors[:, :2] + pre[:, 2 * m : 2 * m + 2] * VARIANCE[0] * priors[:, 2:] for m in range(5)
    ]
    scale = torch.tensor([width, height] * 5, dtype=pre.dtype, device=pre.device)
    return torch.cat(points, dim=1) * scale


def nms(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS of (K, 4) float32 ``boxes`` already sorted by descending score.

    As ``torchvision.ops.nms`` on the CPU: float32 areas (x2 - x1)(y2 - y1) without +1; a box is
    suppressed when its IoU with a kept box is strictly above ``threshold``; the kept indices come
    out in score order.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.nonzero(~suppressed[i + 1 :])[0] + i + 1
        if rest.size == 0:
            break
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > threshold]] = True
    return np.asarray(keep, dtype=np.int64)
