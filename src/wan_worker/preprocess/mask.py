"""The character mask for replace mode: white where the character goes, from the person's keypoints.

The person's shape is approximated from the pose (thick limbs, the torso, the head, the hands), then
grown and made blocky as the ComfyUI template's GrowMask (10 px, tapered corners) and BlockifyMask
(32 px blocks) do, so the model has room to draw a character of another build. A segmentation model
(SAM2, as Wan2.2's own preprocessing uses) would follow the outline closer: not done here.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .draw import LIMBS, body_points
from .pose import FACE, LEFT_HAND, RIGHT_HAND, Pose

GROW = 10  # px, GrowMask's expand in the template
BLOCK = 32  # px, BlockifyMask's block_size in the template
THRESHOLD = 0.3
LIMB_SHARE = 0.09  # limb thickness / person box height
TORSO = (2, 5, 11, 8)  # r-shoulder, l-shoulder, l-hip, r-hip in draw.body_points order


def person_mask(pose: Pose | None, width: int, height: int, grow: int = GROW, block: int = BLOCK) -> np.ndarray:
    """(height, width) uint8, 255 = the character; `pose` in canvas pixels; None gives black."""
    mask = Image.new("L", (width, height))
    if pose is not None:
        _draw_person(ImageDraw.Draw(mask), pose)
    grown = grow_mask(np.asarray(mask) > 0, grow)
    return (blockify(grown, block) * 255).astype(np.uint8)


def _draw_person(draw: ImageDraw.ImageDraw, pose: Pose) -> None:
    x0, y0, x1, y1 = (float(v) for v in pose.box)
    thick = max(4.0, (y1 - y0) * LIMB_SHARE)
    points, scores = body_points(pose)
    seen = scores >= THRESHOLD
    for i, j in LIMBS:
        if seen[i] and seen[j]:
            draw.line([tuple(map(float, points[i])), tuple(map(float, points[j]))], fill=255, width=int(thick))
    for k in np.flatnonzero(seen):
        x, y = (float(v) for v in points[k])
        draw.ellipse((x - thick / 2, y - thick / 2, x + thick / 2, y + thick / 2), fill=255)
    if all(seen[k] for k in TORSO):
        draw.polygon([tuple(map(float, points[k])) for k in TORSO], fill=255)
    for part, pad in ((FACE, 0.35), (LEFT_HAND, 0.25), (RIGHT_HAND, 0.25)):
        pts = pose.points[part][pose.scores[part] >= THRESHOLD]
        if len(pts) >= 3:
            lo, hi = pts.min(0), pts.max(0)
            m = float(max(hi - lo)) * pad + thick / 4
            draw.ellipse((lo[0] - m, lo[1] - m * (2 if part is FACE else 1), hi[0] + m, hi[1] + m), fill=255)
    if not seen.any():  # keypoints too weak: the detection box stands in for the person
        draw.rectangle((x0, y0, x1, y1), fill=255)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate `pixels` times by a 3x3 cross (GrowMask with tapered corners: a diamond of radius `pixels`)."""
    out = mask.astype(bool).copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def blockify(mask: np.ndarray, block: int) -> np.ndarray:
    """Blocks of `block` px laid from the mask's bounding box: a block with any white becomes white."""
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, bool)
    if len(ys) == 0:
        return out
    top, left = int(ys.min()), int(xs.min())
    for y in range(top, int(ys.max()) + 1, block):
        for x in range(left, int(xs.max()) + 1, block):
            if mask[y:y + block, x:x + block].any():
                out[y:y + block, x:x + block] = True
    return out
