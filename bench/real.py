"""`python -m bench --comfyui [--quick]`: the worker against the floor on the REAL ComfyUI (tiny
models), as `python -m bench` does on the stand-in: an instant LoadImage -> SaveImage job, a ~10 MB
PNG made in ComfyUI, 10 MB PNG and MP4 inputs sent back, and the bundled I2V graph at 128x128x5
(the floor sends the graph the worker builds). Method and runs: bench/results/real-comfyui.md."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from .harness import MB, RATIO, Mode, RealComfyUI, Row, breakdown, compare, log, render, stat_row, verdict

IMAGE_SIDE = 128
NOISE_SIZE = (2048, 2080)  # noise at strength 0.5 in a PNG: ~10.0 MB (calibrated on ComfyUI 0.3.64)
JOB_TIMEOUT_S = 900  # the first I2V job pays the cold text encode


def instant_graph() -> dict[str, Any]:
    """LoadImage -> SaveImage: a real round trip through ComfyUI with next to no work."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "?"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "instant"}}}


def noise_graph() -> dict[str, Any]:
    """The image scaled up with noise added, saved as a ~10 MB PNG (noise does not compress)."""
    width, height = NOISE_SIZE
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "?"}},
            "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                         "width": width, "height": height, "crop": "disabled"}},
            "3": {"class_type": "ImageAddNoise", "inputs": {"image": ["2", 0], "seed": 1, "strength": 0.5}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "noise"}}}


def big_input(path: Path) -> Path:
    """A ~10 MB PNG of noise (noise does not compress): a large media input, sent as base64."""
    from PIL import Image

    side = 1824  # 1824 x 1824 x 3 bytes = 9.98 MB raw; the PNG is a little more
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, "PNG", compress_level=1)
    return path


def video_graph(name: str = "?") -> dict[str, Any]:
    """LoadVideo -> SaveVideo (auto: the streams are copied, not re-encoded): a video in, the same out."""
    return {"1": {"class_type": "LoadVideo", "inputs": {"file": name}},
            "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "vid",
                                                        "format": "auto", "codec": "auto"}}}


def big_video(path: Path) -> Path:
    """A ~10 MB H.264 MP4 of noise (lossless, so noise keeps its bytes), made with PyAV."""
    import av
    import numpy as np

    path = path.with_suffix(".mp4")
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for _ in range(70):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# (label, workflow-mode graph or None for the bundled I2V graph, warm-up, measured jobs (full,
# quick), the input image (None: the 128x128 start image))
CONFIGS: list[tuple[str, Callable[[], dict[str, Any]] | None, int, tuple[int, int], Callable[[Path], Path] | None]] = [
    ("instant", instant_graph, 3, (20, 5), None),
    ("10 MB PNG", noise_graph, 2, (12, 4), None),
    # 10 MB in and ~10 MB out: the worker's payload copies, decode and checks against a bare client
    # that decodes the same base64 input
    ("10 MB in + out", instant_graph, 2, (12, 4), big_input),
    ("10 MB MP4 in + out", video_graph, 2, (12, 4), big_video),
    ("I2V 128x128x5", None, 1, (4, 2), None),  # ~30 s a job on 2 busy cores; the warm-up pays the encode
]


def run(bench: Any, quick: bool, jobs_override: int | None, labels: tuple[str, ...] = ()) -> None:
    """Start the real ComfyUI, run every configuration, stop it; results in bench.results['real']."""
    from tests.comfyui.conftest import NEGATIVE, PROMPT, start_image

    image = bench.tmp / "start.png"
    image.write_bytes(start_image(IMAGE_SIDE, IMAGE_SIDE))
    bench.results["input_image"] = {"format": "PNG", "width": IMAGE_SIDE, "height": IMAGE_SIDE,
                                    "bytes": image.stat().st_size}
    comfy = RealComfyUI(bench.tmp)
    bench.results["real"] = []
    try:
        started = time.monotonic()
        comfy.start()
        bench.results["comfyui_start_s"] = round(time.monotonic() - started, 1)
        for label, make_graph, warmup, (full, short), make_input in CONFIGS:
            if labels and label not in labels:
                continue
            jobs, warm = jobs_override or (short if quick else full), 1 if quick else warmup
            log(f"{label}: {warm} warm-up + {jobs} measured jobs per side")
            path = make_input(bench.tmp / "input.png") if make_input else image
            cfg: dict[str, Any] = {"tag": label.replace(" ", ""), "image": str(path), "comfy_host": comfy.host,
                                   "comfy_dir": str(comfy.comfy_dir)}
            if make_graph is None:
                cfg["input"] = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "width": IMAGE_SIDE,
                                "height": IMAGE_SIDE, "length": 5, "output": "base64"}
            else:
                cfg.update(graph=make_graph(), load_node="1", load_input="file" if path.suffix == ".mp4" else "image")
            result = compare(bench, cfg["tag"], cfg, comfy.worker_env(JOB_TIMEOUT_S), warm, jobs, JOB_TIMEOUT_S)
            result.update(label=label, size_mb=result["size"] / MB, mode="base64")
            bench.results["real"].append(result)
            wm, fm = result["worker_memory"], result["floor_memory"]
            log(f"{label}: worker overhead {result['worker']['overhead_ms']['median']:.1f} ms, floor "
                f"{result['floor']['overhead_ms']['median']:.1f} ms, ratio {result['ratio']:.2f}; peak "
                f"{wm['peak'] / MB:.1f} MB (floor {fm['peak'] / MB:.1f} MB)")
    finally:
        comfy.stop()


# -- the report ---------------------------------------------------------------------------------

def rows(config: dict[str, Any]) -> list[Row]:
    """One configuration's rows: times, the ratio against its 1.10 target, output size, memory."""
    label = config["label"]
    w, f = config["worker"], config["floor"]
    ratio = config["ratio"]
    wm, fm = config["worker_memory"], config["floor_memory"]
    out_mb = config["size"] / MB
    return [
        stat_row("handler wall time, ms", label, w["wall_ms"]),
        stat_row("ComfyUI execute (timings_ms), ms", label, w["execute_ms"]),
        stat_row("worker overhead = wall - execute, ms", label, w["overhead_ms"]),
        stat_row("floor overhead (bare client), ms", label, f["overhead_ms"]),
        Row("ratio worker / floor overhead", label, f"{ratio:.2f}", "", "", f"<= {RATIO:.2f}",
            verdict(ratio <= RATIO)),
        Row("output (base64 delivered)", label, f"{out_mb:.2f} MB" if out_mb >= 0.1 else f"{out_mb * 1000:.1f} kB",
            "", "", "", ""),
        Row("peak memory (VmHWM) worker / floor", label, f"{wm['peak'] / MB:.1f} / {fm['peak'] / MB:.1f} MB",
            "", "", "", ""),
        Row("  warm baseline (VmRSS) worker / floor", label,
            f"{wm['baseline_rss'] / MB:.1f} / {fm['baseline_rss'] / MB:.1f} MB", "", "", "", ""),
        Row("  peak - baseline worker / floor", label,
            f"{wm['peak_minus_baseline'] / MB:.1f} / {fm['peak_minus_baseline'] / MB:.1f} MB", "", "",
            "worker <= floor", verdict(wm["peak_minus_baseline"] <= fm["peak_minus_baseline"] + MB)),
    ]


def table(results: dict[str, Any]) -> str:
    return render([r for config in results.get("real", []) for r in rows(config)])


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(f"ratio {c['label']}", c["ratio"] <= RATIO) for c in results.get("real", [])]


MODE = Mode(
    title="bench on the real ComfyUI",
    run=lambda b, a: run(b, a.quick, a.jobs, tuple(c for c in (a.configs or "").split(",") if c)),
    sections=lambda r: [table(r), breakdown(r.get("real", []), lambda c: c["label"])],
    verdicts=verdicts, word="targets",
    detail=lambda a, r: f"ComfyUI up in {r.get('comfyui_start_s', 0):.0f} s; ",
    note=lambda r: f"{RealComfyUI.note()}; start image: 128x128 PNG, "
                   f"{r.get('input_image', {}).get('bytes', 0) / 1000:.1f} kB",
)
