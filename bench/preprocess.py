"""`python -m bench --preprocess [--quick]`: Animate preprocessing per frame on this CPU.

The real ONNX files (yolox_l.onnx 217 MB, dw-ll_ucoco_384.onnx 134 MB) are not fetched here: two
stand-ins are built with the `onnx` helper, with the real input/output names and shapes and about
the real compute (random weights; a plain conv stack, so the time is the FLOPs' and not YOLOX's or
RTMPose's exact kernels):
- detector: images (1, 3, 640, 640) -> output (1, 8400, 85), ~155 GFLOPs (YOLOX-L at 640: 155.6 G);
- pose: input (1, 3, 384, 288) -> simcc_x (1, 133, 576), simcc_y (1, 133, 768), ~9 GFLOPs
  (RTMPose-L whole-body at 384x288: 10.07 G, mmpose's RTMPose benchmark table).
Then wan_worker.preprocess.preprocess() runs on a synthetic clip (replace mode: pose, face, mask,
background) and each part is timed: detector, pose model, the rest (drawing, crops, masks), MP4s.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Mode, markdown


def _conv(name: str, cin: int, cout: int, k: int, stride: int, rng: np.random.Generator,
          inits: list[Any], nodes: list[Any], src: str, relu: bool = True) -> str:
    from onnx import helper, numpy_helper

    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (cin * k * k))).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]
    out = f"{name}_y"
    nodes.append(helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [out], kernel_shape=[k, k],
                                  strides=[stride, stride], pads=[k // 2] * 4))
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{name}_r"]))
        out = f"{name}_r"
    return out


def conv_stack(src: str, stem: tuple[tuple[int, int, int, int], ...], body: tuple[int, int, int, int],
               head: int, rng: np.random.Generator, inits: list[Any], nodes: list[Any]) -> tuple[str, float]:
    """Strided 3x3 stem convs (cin, cout, out h, out w), `body` = (n, channels, h, w) 3x3 convs, a 1x1
    head to `head` channels: (the output's name, its FLOPs)."""
    x, flops = src, 0.0
    for i, (cin, cout, h, w) in enumerate(stem):
        x = _conv(f"stem{i}", cin, cout, 3, 2, rng, inits, nodes, x)
        flops += flops_conv(cin, cout, 3, h, w)
    n, ch, h, w = body
    for i in range(n):
        x = _conv(f"body{i}", ch, ch, 3, 1, rng, inits, nodes, x)
        flops += flops_conv(ch, ch, 3, h, w)
    x = _conv("head", ch, head, 1, 1, rng, inits, nodes, x, relu=False)
    return x, flops + flops_conv(ch, head, 1, h, w)


def flops_conv(cin: int, cout: int, k: int, h: int, w: int) -> float:
    return 2.0 * cin * cout * k * k * h * w


def build_detector(path: Path, rng: np.random.Generator) -> float:
    """(1,3,640,640) -> (1,8400,85); returns its GFLOPs."""
    from onnx import TensorProto, helper, numpy_helper

    inits: list[Any] = []
    nodes: list[Any] = []
    x, flops = conv_stack("images", ((3, 32, 320, 320), (32, 64, 160, 160), (64, 256, 80, 80)), (20, 256, 80, 80),
                          85, rng, inits, nodes)
    nodes += [helper.make_node("MaxPool", [x], ["p40"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("MaxPool", ["p40"], ["p20"], kernel_shape=[2, 2], strides=[2, 2])]
    parts = []
    for name, n in ((x, 6400), ("p40", 1600), ("p20", 400)):
        inits.append(numpy_helper.from_array(np.array([1, 85, n], np.int64), f"shape{n}"))
        nodes.append(helper.make_node("Reshape", [name, f"shape{n}"], [f"flat{n}"]))
        parts.append(f"flat{n}")
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=2),
              helper.make_node("Sigmoid", ["cat"], ["sig"]),
              helper.make_node("Transpose", ["sig"], ["raw"], perm=[0, 2, 1]),
              # objectness 0 except on one anchor holding the person (as a trained detector's few
              # candidates): random scores would send thousands of boxes to NMS, a cost no real frame has
              helper.make_node("Mul", ["raw", "keep"], ["kept"]),
              helper.make_node("Add", ["kept", "person"], ["output"])]
    keep = np.ones((1, 8400, 85), np.float32)
    keep[..., 4] = 0
    person = np.zeros((1, 8400, 85), np.float32)
    row = 6400 + 1600 + 6 * 20 + 10  # stride 32, cell (10, 6): the middle of the frame
    person[0, row, :6] = [0.5 - 0.5, 0.5 - 0.5, np.log(200 / 32), np.log(440 / 32), 1.0, 0.0]
    keep[0, row, :4] = 0
    keep[0, row, 5] = 0
    person[0, row, 5] = 1.0
    inits += [numpy_helper.from_array(keep, "keep"), numpy_helper.from_array(person, "person")]
    _save(helper.make_graph(nodes, "bench_yolox",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])], inits), path)
    return flops / 1e9


def build_pose(path: Path, rng: np.random.Generator) -> float:
    """(1,3,384,288) -> simcc_x (1,133,576), simcc_y (1,133,768); returns its GFLOPs."""
    from onnx import TensorProto, helper, numpy_helper

    inits: list[Any] = []
    nodes: list[Any] = []
    x, flops = conv_stack("input", ((3, 64, 192, 144), (64, 128, 96, 72), (128, 256, 48, 36)), (3, 256, 48, 36),
                          133, rng, inits, nodes)
    inits.append(numpy_helper.from_array(np.array([1, 133, 1728], np.int64), "flat"))
    nodes.append(helper.make_node("Reshape", [x, "flat"], ["tokens"]))
    for name, bins in (("simcc_x", 576), ("simcc_y", 768)):
        inits.append(numpy_helper.from_array((rng.standard_normal((1728, bins)) / 40).astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("MatMul", ["tokens", f"{name}_w"], [name]))
        flops += 2.0 * 133 * 1728 * bins
    _save(helper.make_graph(nodes, "bench_dwpose",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 384, 288])],
                              [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 576]),
                               helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 768])], inits), path)
    return flops / 1e9


def _save(graph: Any, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class Timed:
    """Wraps an InferenceSession and adds up the seconds spent in run()."""

    def __init__(self, session: Any) -> None:
        self.session, self.seconds, self.calls = session, 0.0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.session.run(*args, **kw)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def clip(n: int, width: int = 832, height: int = 480) -> list[np.ndarray]:
    """A synthetic 16 fps driving clip: noise with a bright, moving figure."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        f = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        x = 300 + 4 * i
        f[60:440, x:x + 160] = 230
        frames.append(f)
    return frames


def run(b: Any, args: Any) -> None:
    import onnxruntime as ort

    import wan_worker.preprocess as pre
    from wan_worker.preprocess import sessions

    n, tmp = 6 if args.quick else 16, b.tmp
    rng = np.random.default_rng(0)
    det_g = build_detector(tmp / "yolox_l.onnx", rng)
    pose_g = build_pose(tmp / "dw-ll_ucoco_384.onnx", rng)
    print(f"stand-ins: detector {det_g:.1f} GFLOPs, pose {pose_g:.1f} GFLOPs; {os.cpu_count()} CPUs, "
          f"onnxruntime {ort.__version__}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    opened: list[Timed] = []
    real_open = sessions.open_session

    def timed_open(path: Path, providers: Any = None) -> Timed:
        opened.append(Timed(real_open(path, providers)))
        return opened[-1]

    pre.open_session = timed_open  # type: ignore[assignment]
    frames = clip(n)
    models = pre.PoseModels(tmp / "yolox_l.onnx", tmp / "dw-ll_ucoco_384.onnx")
    # warm-up (session creation and first runs), then the measured run
    pre.preprocess(frames[:2], width=832, height=480, mode="replace", models=models, providers=["CPUExecutionProvider"])
    opened.clear()
    start = time.perf_counter()
    def tick(done: int, total: int) -> None:
        print(f"  frame {done}/{total} at {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    result = pre.preprocess(frames, width=832, height=480, mode="replace", models=models,
                            providers=["CPUExecutionProvider"], progress=tick)
    total = time.perf_counter() - start
    start = time.perf_counter()
    sizes = {k: len(result.mp4(k)) for k in ("pose", "face", "mask", "background")}
    encode = time.perf_counter() - start
    det, est = opened
    rows = {"frames": n, "size": "832x480", "found": result.found,
            "detector_s_per_frame": det.seconds / n, "pose_s_per_frame": est.seconds / max(est.calls, 1),
            "other_s_per_frame": (total - det.seconds - est.seconds) / n, "total_s_per_frame": total / n,
            "mp4_encode_s_per_frame": encode / n, "mp4_bytes": sizes,
            "detector_gflops": round(det_g, 1), "pose_gflops": round(pose_g, 1), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg()[0]}
    b.results["preprocess"] = rows


def table(rows: dict[str, Any]) -> str:
    keys = ("detector", "pose", "other", "total", "mp4_encode")
    return markdown(["part", "seconds per frame"], [[k, f"{rows[k + '_s_per_frame']:.3f}"] for k in keys], pad=False)


MODE = Mode(title="preprocess bench", run=run,
            sections=lambda r: [table(r["preprocess"])] if "preprocess" in r else [])
