"""`python -m bench --comfyui [--quick]`: worker versus bare client on the REAL ComfyUI (tiny models).

The same comparison as the stand-in bench (each side in its own warm process, alternating job by
job, ABBA, overhead = wall - ComfyUI's execute), against a real ComfyUI started here on 127.0.0.1
with tests/tinywan's models (the real-ComfyUI test tier's helpers: tests/comfyui/conftest.py):

* `instant`: workflow mode, a 128x128 PNG in, LoadImage -> SaveImage, a ~30 kB PNG out: ComfyUI's
  work is near zero, so the overhead is all protocol and bookkeeping.
* `10 MB PNG`: workflow mode, the same PNG scaled to 2048x2080 with noise added, saved as a ~10 MB
  PNG (each job uploads under its own name, so ComfyUI does all of it every job).
* `I2V 128x128x5`: the bundled Wan2.2 graph through handler() in I2V mode; the floor sends the graph
  the worker builds (its dry run), with the same image, seed and a save folder of its own.

ComfyUI's interpreter and checkout default to .venv-comfyui/bin/python and ../shared/comfyui/src
(relative to the repository), overridable by COMFY_PYTHON and COMFYUI_DIR, as in the test tier.
One prompt pair for the whole run (ComfyUI caches encodings; --cache-lru keeps them), so the first
I2V warm-up job pays the cold text encode (1-2.5 min on 2 cores) and no measured job does.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from .harness import Mode, log
from . import procs, report
from .procs import BenchError, clean_env
from .report import MB, Row, summarize, summary

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


# (label, kind, graph or None for the bundled I2V graph, warm-up, measured jobs (full, quick), the
# input image (None: the 128x128 start image))
CONFIGS: list[tuple[str, str, Callable[[], dict[str, Any]] | None, int, tuple[int, int],
                    Callable[[Path], Path] | None]] = [
    ("instant", "workflow", instant_graph, 3, (20, 5), None),
    ("10 MB PNG", "workflow", noise_graph, 2, (12, 4), None),
    # 10 MB in and ~10 MB out: the worker's payload copies, decode and checks against a bare client
    # that decodes the same base64 input
    ("10 MB in + out", "workflow", instant_graph, 2, (12, 4), big_input),
    ("10 MB MP4 in + out", "workflow", video_graph, 2, (12, 4), big_video),
    ("I2V 128x128x5", "i2v", None, 1, (4, 2), None),  # ~30 s a job on 2 busy cores; the warm-up pays the encode
]


class RealComfyUI:
    """One real ComfyUI for the run: a copy of the checkout, tiny models on a temporary volume."""

    def __init__(self, tmp: Path) -> None:
        from tests.comfyui.conftest import comfy_python, comfyui_dir

        self.tmp, self.log = tmp, log
        self.python, self.src = comfy_python(), comfyui_dir()
        if not (self.src / "main.py").is_file():
            raise BenchError(f"no ComfyUI checkout at {self.src}: set COMFYUI_DIR")
        if not self.python.is_file():
            raise BenchError(f"no ComfyUI interpreter at {self.python}: set COMFY_PYTHON "
                             "(scripts/comfyui-venv.sh makes .venv-comfyui)")
        self.proc: Any = None
        self.port = 0

    def start(self) -> None:
        """Make the volume and the ComfyUI copy, then launch it."""
        from tests.comfyui.conftest import copy_comfyui, make_tiny_models, volume_yaml
        from tests.conftest import free_port

        self.models = self.tmp / "runpod-volume" / "runpod-slim" / "ComfyUI" / "models"
        make_tiny_models(self.python, self.models)
        self.yaml = volume_yaml(self.tmp / "extra_model_paths.yaml", self.tmp / "runpod-volume", self.tmp / "workspace")
        self.comfy_dir = copy_comfyui(self.src, self.tmp / "comfyui")
        self.port = free_port()
        self.log_path = self.tmp / "logs" / "comfyui.log"
        self.pid_file = self.tmp / "comfyui.pid"
        self.launch()

    def launch(self) -> None:
        """Start ComfyUI on this port with these folders (again, after a kill) and wait until it answers."""
        from tests.comfyui.conftest import start_comfyui, wait_ready

        self.proc = start_comfyui(self.python, self.comfy_dir, self.port, self.yaml, self.log_path)
        self.pid_file.write_text(str(self.proc.pid))
        try:
            wait_ready(f"http://{self.host}", self.proc, self.log_path)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        self.log(f"real ComfyUI (pid {self.proc.pid}) at {self.host}; log {self.log_path}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL ComfyUI's whole process group, as a crash or the OOM killer would."""
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None:
            from tests.comfyui.conftest import stop_group

            stop_group(self.proc)
            self.proc = None


def worker_env(comfy: RealComfyUI) -> dict[str, str]:

    env = clean_env()
    env.update({"COMFY_HOST": comfy.host, "COMFY_DIR": str(comfy.comfy_dir), "COMFY_PID_FILE": str(comfy.pid_file),
                "EXTRA_MODEL_PATHS": str(comfy.yaml), "COMFY_START_TIMEOUT_S": "60",
                "JOB_TIMEOUT_S": str(JOB_TIMEOUT_S), "LOG_LEVEL": "INFO"})
    return env


def run_config(bench: Any, comfy: RealComfyUI, image: Path, label: str, kind: str,
               make_graph: Callable[[], dict[str, Any]] | None, warmup: int, jobs: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    from tests.comfyui.conftest import NEGATIVE, PROMPT


    cfg: dict[str, Any] = {"kind": kind, "image": str(image), "comfy_host": comfy.host,
                           "comfy_dir": str(comfy.comfy_dir), "prompt": PROMPT, "negative": NEGATIVE}
    if make_graph is not None:
        cfg.update(graph=make_graph(), load_node="1", ext=image.suffix[1:],
                   load_input="file" if image.suffix == ".mp4" else "image")
    tag = label.replace(" ", "")
    worker = procs.python_child(f"worker-{tag}", "bench.realsides", ["worker", json.dumps(cfg)], worker_env(comfy),
                                bench.logs)
    floor = None
    try:
        baseline = worker.recv(120)["memory"]
        if kind == "i2v":  # the floor sends exactly the graph the worker builds
            answer = worker.call({"cmd": "graph"})
            if not answer.get("ok"):
                raise BenchError(f"the worker's dry run failed: {answer.get('error')}")
            cfg["graph"] = answer["graph"]
        floor = procs.python_child(f"floor-{tag}", "bench.realsides", ["floor", json.dumps(cfg)], clean_env(),
                                   bench.logs)
        floor_baseline = floor.recv(120)["memory"]
        samples = procs.alternate(worker, floor, warmup, jobs, JOB_TIMEOUT_S, log)
        memory = worker.call({"cmd": "memory"})["memory"]
        floor_memory = floor.call({"cmd": "memory"})["memory"]
    finally:
        worker.stop()
        if floor is not None:
            floor.stop()
    size = int(summary([s["bytes"] for s in samples["worker"]])["median"])
    result = summarize(size / MB, size, "base64", samples, baseline, memory, floor_baseline, floor_memory)
    result["label"] = label
    result["floor_bytes"] = int(summary([s["bytes"] for s in samples["floor"]])["median"])
    log(f"{label}: worker overhead {result['worker']['overhead_ms']['median']:.1f} ms, floor "
        f"{result['floor']['overhead_ms']['median']:.1f} ms, ratio {result['ratio']:.2f}; peak "
        f"{memory['hwm'] / MB:.1f} MB (floor {floor_memory['hwm'] / MB:.1f} MB)")
    return result


def run(bench: Any, quick: bool, jobs_override: int | None,
        labels: tuple[str, ...] = ()) -> None:
    """Start the real ComfyUI, run every configuration, stop it; results in bench.results['real']."""
    from tests.comfyui.conftest import start_image

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
        for label, kind, make_graph, warmup, (full, short), make_input in CONFIGS:
            if labels and label not in labels:
                continue
            jobs = jobs_override or (short if quick else full)
            warm = 1 if quick else warmup
            log(f"{label}: {warm} warm-up + {jobs} measured jobs per side")
            config_image = make_input(bench.tmp / "input.png") if make_input else image
            bench.results["real"].append(run_config(bench, comfy, config_image, label, kind, make_graph, warm,
                                                    jobs, log))
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
        report._stat_row("handler wall time, ms", label, w["wall_ms"]),
        report._stat_row("ComfyUI execute (timings_ms), ms", label, w["execute_ms"]),
        report._stat_row("worker overhead = wall - execute, ms", label, w["overhead_ms"]),
        report._stat_row("floor overhead (bare client), ms", label, f["overhead_ms"]),
        Row("ratio worker / floor overhead", label, f"{ratio:.2f}", "", "", f"<= {report.RATIO:.2f}",
            report.verdict(ratio <= report.RATIO)),
        Row("output (base64 delivered)", label, f"{out_mb:.2f} MB" if out_mb >= 0.1 else f"{out_mb * 1000:.1f} kB",
            "", "", "", ""),
        Row("peak memory (VmHWM) worker / floor", label, f"{wm['peak'] / MB:.1f} / {fm['peak'] / MB:.1f} MB",
            "", "", "", ""),
        Row("  warm baseline (VmRSS) worker / floor", label,
            f"{wm['baseline_rss'] / MB:.1f} / {fm['baseline_rss'] / MB:.1f} MB", "", "", "", ""),
        Row("  peak - baseline worker / floor", label,
            f"{wm['peak_minus_baseline'] / MB:.1f} / {fm['peak_minus_baseline'] / MB:.1f} MB", "", "",
            "worker <= floor", report.verdict(wm["peak_minus_baseline"] <= fm["peak_minus_baseline"] + MB)),
    ]


def table(results: dict[str, Any]) -> str:
    return report.render([r for config in results.get("real", []) for r in rows(config)])


def breakdown(results: dict[str, Any]) -> str:
    return report.breakdown({"jobs": [{**c, "size_mb": c["label"], "mode": ""} for c in results.get("real", [])]},
                            label=lambda c: c["label"])


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(f"ratio {c['label']}", c["ratio"] <= report.RATIO) for c in results.get("real", [])]


def environment_note() -> str:
    return (f"ComfyUI: {os.environ.get('COMFYUI_DIR') or '../shared/comfyui/src'} run by "
            f"{os.environ.get('COMFY_PYTHON') or '.venv-comfyui/bin/python'}")


MODE = Mode(
    title="bench on the real ComfyUI",
    run=lambda b, a: run(b, a.quick, a.jobs, tuple(c for c in (a.configs or "").split(",") if c)),
    sections=lambda r: [table(r), "Median ms per handler phase (timings_ms; unaccounted = wall - phases), and the "
                                  "floor's transfer:\n" + breakdown(r)],
    verdicts=verdicts, word="targets",
    detail=lambda a, r: f"ComfyUI up in {r.get('comfyui_start_s', 0):.0f} s; ",
    note=lambda r: f"{environment_note()}; start image: 128x128 PNG, "
                   f"{r.get('input_image', {}).get('bytes', 0) / 1000:.1f} kB",
)
