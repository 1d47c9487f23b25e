"""Where a driving frame lands in the job's picture: scaled to fit, centred, black bars (letterbox).

The pose, the mask and the background of one job all use the same Fit, so they line up pixel for
pixel; the character's proportions are not retargeted (the skeleton keeps the driver's shape).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Fit:
    """Frame (w x h) -> canvas (width x height): point * scale + offset."""

    scale: float
    dx: float
    dy: float
    width: int
    height: int

    @classmethod
    def of(cls, frame_w: int, frame_h: int, width: int, height: int) -> "Fit":
        scale = min(width / frame_w, height / frame_h)
        return cls(scale, (width - frame_w * scale) / 2, (height - frame_h * scale) / 2, width, height)

    def points(self, xy: np.ndarray) -> np.ndarray:
        return xy * self.scale + np.array([self.dx, self.dy])

    def image(self, frame: np.ndarray) -> np.ndarray:
        """The frame letterboxed onto a black canvas of the job's size."""
        h, w = frame.shape[:2]
        nw, nh = max(1, round(w * self.scale)), max(1, round(h * self.scale))
        canvas = np.zeros((self.height, self.width, 3), np.uint8)
        x0, y0 = round(self.dx), round(self.dy)
        resized = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BILINEAR))
        canvas[y0:y0 + nh, x0:x0 + nw] = resized[:self.height - y0, :self.width - x0]
        return canvas


def crop(frame: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The region `box` (x0, y0, x1, y1, may reach outside the frame: black there) resized to `size`."""
    image = Image.fromarray(frame)
    out = image.transform(size, Image.Transform.EXTENT, tuple(float(v) for v in box),
                          Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out)
