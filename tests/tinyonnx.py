"""Tiny stand-ins of the Animate preprocessing models, with the real files' input and output names
and shapes, built with the `onnx` helper (no weights to download), for the tests of both tiers.

- detector (yolox_l.onnx): images (1, 3, 640, 640) -> output (1, 8400, 85). It "sees" a person in each
  given box (in the detector's 640x640 input pixels) when the input is bright at the box's centre
  (objectness = that pixel's first channel / 255), so a test turns a person on or off per frame by
  painting the frame.
- pose (dw-ll_ucoco_384.onnx): input (1, 3, 384, 288) -> simcc_x (1, 133, 576), simcc_y (1, 133, 768),
  one-hot at given keypoints (in the 288x384 crop's pixels) with given scores, whatever the crop shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
DET_SIZE, ANCHORS, DET_CHANNELS = 640, 8400, 85
POSE_W, POSE_H, POINTS, SPLIT = 288, 384, 133, 2


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinyonnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _anchor(cx: float, cy: float, stride: int = 32) -> int:
    """The row of YOLOX's output for the stride-`stride` cell holding (cx, cy)."""
    offset = 0
    for s in (8, 16, 32):
        n = DET_SIZE // s
        if s == stride:
            return offset + int(cy // s) * n + int(cx // s)
        offset += n * n
    raise ValueError(stride)


def detector(path: Path, boxes: Sequence[tuple[float, float, float, float]]) -> Path:
    """A YOLOX-shaped detector that finds `boxes` (x0, y0, x1, y1 in its 640x640 input)."""
    base = np.zeros((1, ANCHORS, DET_CHANNELS), np.float32)
    base[..., :4] = [0, 0, -20, -20]  # empty anchors: zero-size boxes with objectness 0
    nodes, inits, terms = [], [], []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        row = _anchor(cx, cy)
        base[0, row, :4] = [cx / 32 - int(cx // 32), cy / 32 - int(cy // 32), np.log(w / 32), np.log(h / 32)]
        base[0, row, 5] = 1.0  # class 0: person
        gate = np.zeros_like(base)
        gate[0, row, 4] = 1 / 255
        px, py = int(cx), int(cy)
        inits += [numpy_helper.from_array(np.array([0, 0, py, px], np.int64), f"s{k}"),
                  numpy_helper.from_array(np.array([1, 1, py + 1, px + 1], np.int64), f"e{k}"),
                  numpy_helper.from_array(gate, f"g{k}")]
        nodes += [helper.make_node("Slice", ["images", f"s{k}", f"e{k}"], [f"p{k}"]),
                  helper.make_node("Mul", [f"g{k}", f"p{k}"], [f"t{k}"])]  # (1,1,1,1) broadcast: (1,1,8400,85)
        terms.append(f"t{k}")
    inits.append(numpy_helper.from_array(base, "base"))
    inits.append(numpy_helper.from_array(np.array([1, ANCHORS, DET_CHANNELS], np.int64), "shape"))
    total = "base"
    for k, term in enumerate(terms):
        nodes.append(helper.make_node("Add", [total, term], [f"sum{k}"]))
        total = f"sum{k}"
    nodes.append(helper.make_node("Reshape", [total, "shape"], ["output"]) if terms
                 else helper.make_node("Identity", ["base"], ["output"]))
    if not terms:  # still read the input, as the real model does
        nodes[-1:] = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
                      helper.make_node("Mul", ["m", "zero"], ["z"]),
                      helper.make_node("Add", ["base", "z"], ["output"])]
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    graph = helper.make_graph(
        nodes, "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DET_SIZE, DET_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, ANCHORS, DET_CHANNELS])], inits)
    return _save(graph, path)


def pose_model(path: Path, points: np.ndarray, scores: np.ndarray | float = 0.9) -> Path:
    """A DWPose-shaped model whose SimCC peaks sit at `points` ((133, 2) in the 288x384 crop's pixels)."""
    points = np.asarray(points, np.float32)
    scores = np.broadcast_to(np.asarray(scores, np.float32), (POINTS,))
    sx = np.zeros((1, POINTS, POSE_W * SPLIT), np.float32)
    sy = np.zeros((1, POINTS, POSE_H * SPLIT), np.float32)
    for k, ((x, y), s) in enumerate(zip(points, scores)):
        sx[0, k, int(np.clip(round(x * SPLIT), 0, POSE_W * SPLIT - 1))] = s
        sy[0, k, int(np.clip(round(y * SPLIT), 0, POSE_H * SPLIT - 1))] = s
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["cx", "z"], ["simcc_x"]),
             helper.make_node("Add", ["cy", "z"], ["simcc_y"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(sx, "cx"), numpy_helper.from_array(sy, "cy")]
    graph = helper.make_graph(
        nodes, "tiny_dwpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, POSE_H, POSE_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, POINTS, POSE_W * SPLIT]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, POINTS, POSE_H * SPLIT])], inits)
    return _save(graph, path)


def to_detector(box: Sequence[float], frame_w: int, frame_h: int) -> tuple[float, ...]:
    """A box in frame pixels -> the detector's 640x640 input pixels (the frame scaled to fit, top left)."""
    ratio = min(DET_SIZE / frame_h, DET_SIZE / frame_w)
    return tuple(float(v) * ratio for v in box)


def to_crop(points: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Keypoints in frame pixels -> the pose model's 288x384 crop of the person `box`."""
    from wan_worker.preprocess.pose import region

    x0, y0, x1, y1 = region(np.asarray(box, np.float32))
    return (np.asarray(points, np.float32) - [x0, y0]) / [(x1 - x0) / POSE_W, (y1 - y0) / POSE_H]


def standing_person(box: Sequence[float]) -> np.ndarray:
    """133 COCO-WholeBody keypoints (frame pixels) of a person standing in `box`, arms down, face
    forward: plausible geometry for drawing, cropping and masking tests."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    at = lambda fx, fy: (cx + fx * w, y0 + fy * h)  # noqa: E731 - a local shorthand
    pts = np.zeros((POINTS, 2), np.float32)
    body = [at(0, 0.08), at(0.04, 0.06), at(-0.04, 0.06), at(0.08, 0.08), at(-0.08, 0.08),  # nose eyes ears
            at(0.2, 0.2), at(-0.2, 0.2), at(0.25, 0.38), at(-0.25, 0.38), at(0.27, 0.52), at(-0.27, 0.52),
            at(0.12, 0.55), at(-0.12, 0.55), at(0.12, 0.76), at(-0.12, 0.76), at(0.12, 0.95), at(-0.12, 0.95)]
    pts[:17] = body
    pts[17:20] = [at(0.15, 0.98)] * 3  # left foot
    pts[20:23] = [at(-0.15, 0.98)] * 3
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts[23:91] = np.stack([cx + 0.07 * w * np.cos(t), y0 + 0.09 * h + 0.06 * h * np.sin(t)], 1)
    for hand, wrist in ((slice(91, 112), at(0.27, 0.52)), (slice(112, 133), at(-0.27, 0.52))):
        pts[hand] = [(wrist[0] + 0.02 * w * np.sin(k), wrist[1] + 0.004 * h * k) for k in range(21)]
    return pts
