"""`python -m bench --postprocess [--quick]`: what interpolation and upscaling add per frame.

In ComfyUI's interpreter (COMFY_PYTHON: torch, spandrel), both networks at their real size with
random weights of the real files' shapes: RIFE 4.9 as the worker's node builds it (rife49.pth:
blocks of 192/128/96/64 channels) and Real-ESRGAN x2plus as spandrel loads it (23 RRDB blocks, 64
features). Each runs on frames of one small size on this CPU (the cost is linear in pixels, and a
480p ESRGAN frame takes a minute here), alternating, several trials: median and spread, scaled to a
832x480 frame by pixels. The FLOPs of one frame at 832x480 and 1280x720 are counted by torch on the
meta device (no compute), for the GPU estimates of docs/performance.md. The ratio of the two per
pixel is why the block upscales before it interpolates.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from . import REPO
from .harness import BenchError, Mode

NODE_DIR = REPO / "comfyui_nodes" / "wan_worker_nodes"
FRAME_480P = (832, 480)
FLOP_SIZES = ((832, 480), (1280, 720))


def inside(width: int, height: int, trials: int) -> dict[str, Any]:
    """Runs in ComfyUI's interpreter: the timings and FLOPs, as a dict."""
    import time

    import torch
    from spandrel import ModelLoader
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(NODE_DIR))
    import rife  # the worker's node, as ComfyUI runs it

    from tests import tinywan

    torch.manual_seed(0)
    net = rife.build_ifnet(tinywan.rife_state_dict(0, 1.0, widths=(192, 128, 96, 64), resconvs=8))
    esrgan = ModelLoader().load_from_state_dict(tinywan.esrgan_state_dict(0, features=64, blocks=23))
    frames = torch.rand(2, height, width, 3)
    image = frames[:1].movedim(-1, 1).contiguous()
    runs: dict[str, list[float]] = {"rife": [], "esrgan": []}
    with torch.inference_mode():
        rife.interpolate(net, frames, 2)  # warm-up: allocator, kernels
        esrgan(image)
        for _ in range(trials):
            t0 = time.perf_counter()
            rife.interpolate(net, frames, 2)  # one frame made between the two
            runs["rife"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            esrgan(image)  # one frame upscaled 2x
            runs["esrgan"].append(time.perf_counter() - t0)
    flops: dict[str, dict[str, float]] = {"rife": {}, "esrgan": {}}
    meta_net, meta_esrgan = net.to("meta"), esrgan.model.to("meta")
    for w, h in FLOP_SIZES:
        pad = lambda n: n + (-n % rife.PAD_MULTIPLE)  # noqa: E731 - what interpolate() pads to
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            x = torch.rand(1, 3, pad(h), pad(w), device="meta")
            meta_net(x, x, torch.full((1, 1, 1, 1), 0.5, device="meta"))
        flops["rife"][f"{w}x{h}"] = counter.get_total_flops()
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            meta_esrgan(torch.rand(1, 3, h, w, device="meta"))
        flops["esrgan"][f"{w}x{h}"] = counter.get_total_flops()
    return {"size": [width, height], "trials": trials, "threads": torch.get_num_threads(),
            "seconds": runs, "flops": flops, "scale": esrgan.scale}


def summarise(raw: dict[str, Any]) -> list[str]:
    width, height = raw["size"]
    per_480p = FRAME_480P[0] * FRAME_480P[1] / (width * height)
    lines = [f"post-processing on this CPU ({raw['threads']} threads), {width}x{height} frames, "
             f"{raw['trials']} trials each, alternating; scaled to one 832x480 frame by pixels",
             f"{'':<34}{'median':>10}{'spread':>10}{'832x480':>12}{'GFLOP 480p':>12}{'GFLOP 720p':>12}"]
    medians = {}
    for name, label in (("rife", "RIFE 4.9, per frame made"), ("esrgan", "Real-ESRGAN x2plus, per frame in")):
        s = raw["seconds"][name]
        medians[name] = statistics.median(s)
        gflops = [raw["flops"][name][f"{w}x{h}"] / 1e9 for w, h in FLOP_SIZES]
        lines.append(f"{label:<34}{medians[name]:>9.3f}s{max(s) - min(s):>9.3f}s{medians[name] * per_480p:>11.2f}s"
                     f"{gflops[0]:>12.0f}{gflops[1]:>12.0f}")
    lines.append(f"ESRGAN / RIFE per frame (same pixels): {medians['esrgan'] / medians['rife']:.0f}x time, "
                 f"{raw['flops']['esrgan']['832x480'] / raw['flops']['rife']['832x480']:.0f}x FLOPs")
    return lines


def run(b: Any, args: Any) -> None:
    from tests.comfyui.conftest import comfy_python

    python = comfy_python()
    if not python.is_file():
        raise BenchError(f"no ComfyUI interpreter at {python}: set COMFY_PYTHON (make test-comfyui creates "
                         ".venv-comfyui)")
    width, height, trials = (160, 96, 2) if args.quick else (320, 192, 5)
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from bench.postprocess import inside; "
            f"print(json.dumps(inside({width}, {height}, {trials})))")
    proc = subprocess.run([str(python), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise BenchError(proc.stderr[-4000:])
    b.results["postprocess"] = json.loads(proc.stdout.strip().splitlines()[-1])


MODE = Mode(title="postprocess bench", run=run, sections=lambda r: ["\n".join(summarise(r["postprocess"]))]
            if "postprocess" in r else [])
