"""The face video: the driver's face, 512x512 per frame, from the 68 face keypoints.

The box is the face points' extent made square with a margin (more above, for the forehead, as
Wan2.2's crop reaches up), then smoothed over time with a centred moving average, so it follows the
face without lag and without the jitter of per-frame keypoints. A frame without a face reuses the
last crop (before the first face: the first one).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .geometry import crop
from .pose import FACE, Pose

SIZE = 512
MARGIN = 1.5  # the square's side / the face points' larger extent
LIFT = 0.15  # the centre moves up by this share of the side (forehead and hair in, neck out)
SMOOTH = 5  # frames in the moving average (odd)
MIN_POINTS = 10  # fewer confident face points than this: no face in the frame
THRESHOLD = 0.3


def face_box(pose: Pose | None, threshold: float = THRESHOLD) -> np.ndarray | None:
    """(cx, cy, side) of the face square, or None when the face is not seen."""
    if pose is None:
        return None
    points = pose.points[FACE][pose.scores[FACE] >= threshold]
    if len(points) < MIN_POINTS:
        return None
    lo, hi = points.min(0), points.max(0)
    side = float(max(hi - lo)) * MARGIN
    if side < 2:
        return None
    cx, cy = (lo + hi) / 2
    return np.array([cx, cy - LIFT * side, side], np.float32)


def smooth(boxes: Sequence[np.ndarray | None], window: int = SMOOTH) -> list[np.ndarray | None]:
    """Each seen box replaced by the mean of the seen boxes within window // 2 frames of it."""
    half = window // 2
    out: list[np.ndarray | None] = []
    for i, box in enumerate(boxes):
        if box is None:
            out.append(None)
            continue
        near = [b for b in boxes[max(0, i - half):i + half + 1] if b is not None]
        out.append(np.mean(near, 0))
    return out


def face_frames(frames: Sequence[np.ndarray], poses: Sequence[Pose | None],
                map_: Callable[..., Iterable[Any]] = map) -> list[np.ndarray]:
    """One 512x512 face crop per frame (black frames when no face is seen in the whole video);
    `map_` may be a thread pool's map."""
    boxes = smooth([face_box(p) for p in poses])
    crops: list[np.ndarray | None] = list(map_(_crop_face, frames, boxes))
    first = next((c for c in crops if c is not None), np.zeros((SIZE, SIZE, 3), np.uint8))
    last = first
    filled = []
    for c in crops:
        last = c if c is not None else last
        filled.append(last)
    return filled


def _crop_face(frame: np.ndarray, box: np.ndarray | None) -> np.ndarray | None:
    if box is None:
        return None
    cx, cy, side = (float(v) for v in box)
    return crop(frame, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), (SIZE, SIZE))
