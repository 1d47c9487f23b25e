"""Which detection is the person to follow, frame after frame.

The first frame with people picks by size (`person`: 0 = the largest, 1 = the next, ...); later
frames take the detection that overlaps the followed box most. When nobody overlaps it (the person
left, or was hidden), the frame counts as without the person, and after LOST frames in a row the
choice is made again by size, so a person who walked across the frame is found again.
"""
from __future__ import annotations

import numpy as np

from .detect import iou

MIN_IOU = 0.1
LOST = 8


def by_size(boxes: np.ndarray) -> np.ndarray:
    """Detections sorted largest first."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]


class Follower:
    def __init__(self, person: int = 0) -> None:
        self.person = person
        self.last: np.ndarray | None = None
        self.missed = 0
        self.most_people = 0  # for the error when `person` names someone never seen

    def choose(self, boxes: np.ndarray) -> np.ndarray | None:
        """The followed person's box in this frame's detections, or None."""
        self.most_people = max(self.most_people, len(boxes))
        if self.last is not None and self.missed < LOST:
            overlaps = [iou(self.last, b) for b in boxes]
            if overlaps and max(overlaps) >= MIN_IOU:
                return self._found(boxes[int(np.argmax(overlaps))])
            self.missed += 1
            return None
        ranked = by_size(boxes)
        if len(ranked) > self.person:
            return self._found(ranked[self.person])
        self.missed += 1
        return None

    def _found(self, box: np.ndarray) -> np.ndarray:
        self.last, self.missed = box, 0
        return box
