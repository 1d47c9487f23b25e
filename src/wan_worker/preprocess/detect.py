"""Person detection with YOLOX-L (DWPose's yolox_l.onnx): boxes of the people in a frame.

The ONNX file takes one 640x640 BGR image, 0-255, the frame scaled to fit at the top left and the
rest grey (114), and returns (1, 8400, 85): per anchor of the three strides (8, 16, 32) the box
offsets (grid-relative centre, log size), the objectness and 80 class scores (already sigmoid).
Here: decode, keep class 0 (person), non-maximum suppression, boxes back in frame pixels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

SIZE = 640
STRIDES = (8, 16, 32)
PAD_VALUE = 114
SCORE_MIN = 0.3  # objectness x person score: what DWPose keeps
NMS_IOU = 0.45
MAX_CANDIDATES = 300  # best-scoring boxes kept for NMS: bounds the work on a crowded (or odd) frame


def prepare(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """(the 1x3x640x640 float32 input, the frame's scale into it)."""
    h, w = frame.shape[:2]
    ratio = min(SIZE / h, SIZE / w)
    nw, nh = max(1, int(w * ratio)), max(1, int(h * ratio))
    canvas = np.full((SIZE, SIZE, 3), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BILINEAR))
    bgr = canvas[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(bgr, dtype=np.float32)[None], ratio


def grids(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(anchor cell (x, y) per row, stride per row) in YOLOX's output order."""
    cells, strides = [], []
    for stride in STRIDES:
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


_GRIDS = grids()


def decode(raw: np.ndarray, ratio: float, score_min: float = SCORE_MIN) -> np.ndarray:
    """(K, 5) person boxes x0, y0, x1, y1, score in frame pixels, best first."""
    pred = raw.reshape(-1, raw.shape[-1]).astype(np.float32)
    cells, strides = _GRIDS
    if len(pred) != len(cells):
        raise ValueError(f"the detector returned {len(pred)} anchors, expected {len(cells)} (YOLOX at 640)")
    centre = (pred[:, :2] + cells) * strides
    size = np.exp(np.minimum(pred[:, 2:4], 20.0)) * strides
    scores = pred[:, 4] * pred[:, 5]
    keep = scores >= score_min
    if not keep.any():
        return np.zeros((0, 5), np.float32)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)[keep] / ratio
    scores = scores[keep]
    if len(scores) > MAX_CANDIDATES:
        top = np.argsort(-scores)[:MAX_CANDIDATES]
        boxes, scores = boxes[top], scores[top]
    chosen = nms(boxes, scores)
    return np.concatenate([boxes[chosen], scores[chosen, None]], 1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float = NMS_IOU) -> list[int]:
    """Indices of the boxes kept, best first: each drops the later ones it overlaps more than iou_max."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        ix = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        union = areas[best] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[overlap <= iou_max]
    return kept


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detect(session: Any, frame: np.ndarray) -> np.ndarray:
    """The people in `frame`: (K, 5) boxes with scores, clipped to the frame."""
    tensor, ratio = prepare(frame)
    raw = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    boxes = decode(raw, ratio)
    h, w = frame.shape[:2]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes[(boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)]
