"""The pose video's frames, drawn in the style Wan2.2-Animate was conditioned on.

Wan2.2's preprocessing draws 20 body points (OpenPose's 18 with the neck as the shoulders' middle,
plus the two big toes) as filled ellipses between joints in OpenPose's colours at 60 % brightness,
the joints as discs in full colour, and both hands (21 points each) as thin lines coloured round the
hue circle with blue dots; no face points (the face video carries the expression). Black elsewhere.
Widths follow the canvas: body = max(min(w, h) // 200 - 1, 1), hands 4 px, as there.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from .pose import LEFT_HAND, RIGHT_HAND, Pose

THRESHOLD = 0.3  # DWPose's SimCC scores run lower than ViTPose's heatmap peaks (Wan uses 0.5 there)
HAND_WIDTH = 4
HAND_DOT = (0, 0, 255)

# The 20 body points, each a COCO-WholeBody index or the middle of two:
# nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle,
# l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear, l-toe, r-toe.
BODY_FROM = ((0, 0), (5, 6), (6, 6), (8, 8), (10, 10), (5, 5), (7, 7), (9, 9), (12, 12), (14, 14),
             (16, 16), (11, 11), (13, 13), (15, 15), (2, 2), (1, 1), (4, 4), (3, 3), (17, 18), (20, 21))
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
           (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
           (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
           (200, 200, 0), (100, 100, 0))
HAND_EDGES = tuple((0 if j % 4 == 0 else j, j + 1) for j in range(20))  # wrist -> 4 joints per finger


def body_points(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """The 20 body points (x, y) and scores (a middle point scores as its weaker end)."""
    a = np.array([i for i, _ in BODY_FROM])
    b = np.array([j for _, j in BODY_FROM])
    return (pose.points[a] + pose.points[b]) / 2, np.minimum(pose.scores[a], pose.scores[b])


def body_width(width: int, height: int) -> int:
    return max(min(width, height) // 200 - 1, 1)


def limb_polygon(p: np.ndarray, q: np.ndarray, half_width: float) -> list[tuple[float, float]]:
    """An ellipse from p to q, `half_width` thick on each side, as a polygon."""
    centre = (p + q) / 2
    half_length = float(np.hypot(*(q - p))) / 2
    angle = math.atan2(float(q[1] - p[1]), float(q[0] - p[0]))
    t = np.linspace(0, 2 * math.pi, 36, endpoint=False)
    ex, ey = half_length * np.cos(t), half_width * np.sin(t)
    cos, sin = math.cos(angle), math.sin(angle)
    return [(float(centre[0] + x * cos - y * sin), float(centre[1] + x * sin + y * cos)) for x, y in zip(ex, ey)]


def _disc(draw: ImageDraw.ImageDraw, xy: np.ndarray, r: float, colour: tuple[int, int, int]) -> None:
    x, y = float(xy[0]), float(xy[1])
    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def draw_pose(pose: Pose | None, width: int, height: int, threshold: float = THRESHOLD) -> np.ndarray:
    """One pose frame (height, width, 3) uint8; `pose` in canvas pixels; None draws black."""
    image = Image.new("RGB", (width, height))
    if pose is None:
        return np.asarray(image)
    draw = ImageDraw.Draw(image)
    stick = body_width(width, height)
    points, scores = body_points(pose)
    for (i, j), colour in zip(LIMBS, COLOURS):
        if scores[i] >= threshold and scores[j] >= threshold:
            dim = tuple(int(c * 0.6) for c in colour)
            draw.polygon(limb_polygon(points[i], points[j], stick), fill=dim)
    for k, colour in enumerate(COLOURS):
        if scores[k] >= threshold:
            _disc(draw, points[k], stick, colour)
    for hand in (LEFT_HAND, RIGHT_HAND):
        _draw_hand(draw, pose.points[hand], pose.scores[hand], threshold)
    return np.asarray(image)


def _draw_hand(draw: ImageDraw.ImageDraw, points: np.ndarray, scores: np.ndarray, threshold: float) -> None:
    for n, (i, j) in enumerate(HAND_EDGES):
        if scores[i] >= threshold and scores[j] >= threshold:
            r, g, b = colorsys.hsv_to_rgb(n / len(HAND_EDGES), 1.0, 1.0)
            draw.line([tuple(map(float, points[i])), tuple(map(float, points[j]))],
                      fill=(int(r * 255), int(g * 255), int(b * 255)), width=HAND_WIDTH)
    for k in range(len(points)):
        if scores[k] >= threshold:
            _disc(draw, points[k], HAND_WIDTH, HAND_DOT)
