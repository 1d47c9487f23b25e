"""Whole-body keypoints with DWPose (dw-ll_ucoco_384.onnx, an RTMPose-L distilled on COCO-WholeBody).

Top-down: the person's box, grown 25 % and brought to the model's 3:4 shape, is cropped and resized
to 288x384, normalised with the ImageNet mean/std (RGB). The model returns SimCC vectors,
simcc_x (1, 133, 576) and simcc_y (1, 133, 768): two bins per input pixel; a keypoint is the argmax
of each, its score the lower of the two maxima. The 133 points are COCO-WholeBody's: 0-16 body,
17-22 feet, 23-90 face (68), 91-111 left hand, 112-132 right hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import crop

WIDTH, HEIGHT = 288, 384
SPLIT = 2.0  # SimCC bins per pixel
PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
POINTS = 133
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)


@dataclass(frozen=True)
class Pose:
    """One person in one frame: 133 keypoints (x, y in frame pixels), their scores, the box."""

    points: np.ndarray  # (133, 2)
    scores: np.ndarray  # (133,)
    box: np.ndarray  # (4,) x0, y0, x1, y1

    def mapped(self, fn: Any) -> "Pose":
        """The same pose with points and box moved by `fn` (an (N, 2) -> (N, 2) map)."""
        box = fn(self.box.reshape(2, 2)).reshape(4)
        return Pose(fn(self.points), self.scores, box)


def region(box: np.ndarray) -> tuple[float, float, float, float]:
    """The crop the model sees for a person box: centred, grown by PADDING, 3:4 (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * PADDING, (y1 - y0) * PADDING
    aspect = WIDTH / HEIGHT
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def prepare(frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    area = region(box)
    pixels = crop(frame, area, (WIDTH, HEIGHT)).astype(np.float32)
    tensor = ((pixels - MEAN) / STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32), area


def decode(simcc_x: np.ndarray, simcc_y: np.ndarray,
           area: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(points (133, 2) in frame pixels, scores (133,))."""
    sx, sy = simcc_x.reshape(POINTS, -1), simcc_y.reshape(POINTS, -1)
    xs = sx.argmax(1) / SPLIT
    ys = sy.argmax(1) / SPLIT
    scores = np.minimum(sx.max(1), sy.max(1)).astype(np.float32)
    x0, y0, x1, y1 = area
    points = np.stack([xs / WIDTH * (x1 - x0) + x0, ys / HEIGHT * (y1 - y0) + y0], 1).astype(np.float32)
    return points, scores


def estimate(session: Any, frame: np.ndarray, box: np.ndarray) -> Pose:
    tensor, area = prepare(frame, box)
    names = [o.name for o in session.get_outputs()]
    wanted = ["simcc_x", "simcc_y"] if {"simcc_x", "simcc_y"} <= set(names) else names[:2]
    simcc_x, simcc_y = session.run(wanted, {session.get_inputs()[0].name: tensor})
    points, scores = decode(simcc_x, simcc_y, area)
    return Pose(points, scores, np.asarray(box[:4], np.float32))
