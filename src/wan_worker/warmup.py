"""WARMUP: one tiny job at start, so the first request finds its models loaded.

A fresh ComfyUI loads a job's models when the job runs: on a 14B set that is tens of seconds to
minutes, paid by the first request. With WARMUP set to a job kind, the worker runs the smallest
job of that kind (128x128, 5 frames, 2 steps: the least the input rules allow; Animate brings its
own tiny pose and face videos, so no preprocessing runs) through the normal pipeline as soon as
ComfyUI answers, on a thread of its own and with its own ComfyUI client, and throws the video
away (its files are cleaned up like any job's). A failed warm-up is logged; it never fails the
worker, and jobs never wait for it (ComfyUI queues them behind it).
"""
from __future__ import annotations

import base64
import io
import logging
import threading
import wave
from dataclasses import replace
from typing import Any

from .comfy import ComfyClient
from .settings import Settings

log = logging.getLogger("wan_worker.warmup")

KINDS = ("i2v", "t2v", "ti2v-5b", "s2v", "animate")
OFF = {"", "0", "false", "no", "off", "none"}
SMALLEST = {"width": 128, "height": 128, "length": 5, "steps": 2, "seed": 0, "output": "base64"}
ANIMATE_FRAMES = 5  # the driving video's length at 16 fps; the graph's first window is 77 frames anyway

_started = threading.Lock()  # the warm-up runs once per process


def tiny_png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (90, 120, 160)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def tiny_wav(seconds: float = 1.0, rate: int = 16000) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return base64.b64encode(buf.getvalue()).decode()


def tiny_mp4(frames: int = ANIMATE_FRAMES, side: int = 64) -> str:
    """A few gray frames at 16 fps: Animate's driving, pose and face video in one (their content does
    not matter for loading the models; the pose and face videos spare the ONNX preprocessing)."""
    import numpy as np

    from .preprocess.video import FPS, encode_mp4

    data = encode_mp4([np.full((side, side, 3), 40 + 30 * i, np.uint8) for i in range(frames)], fps=FPS)
    return base64.b64encode(data).decode()


def job_input(kind: str) -> dict[str, Any]:
    """The smallest valid job of `kind`; ValueError names the kinds there are."""
    base = {"prompt": "warm-up", **SMALLEST}
    if kind == "i2v":
        return {**base, "image": tiny_png()}
    if kind == "t2v":
        return base
    if kind == "ti2v-5b":
        return {**base, "model": "5b"}
    if kind == "s2v":
        return {**_without_length(base), "image": tiny_png(), "audio": tiny_wav()}
    if kind == "animate":
        clip = tiny_mp4()
        return {**_without_length(base), "image": tiny_png(), "video": clip, "pose_video": clip,
                "face_video": clip, "mode": "move"}
    raise ValueError(f"WARMUP takes one of {', '.join(KINDS)} (or nothing), not {kind!r}")


def _without_length(job: dict[str, Any]) -> dict[str, Any]:
    """S2V and Animate take their length from the sound or the driving video, and refuse `length`."""
    return {k: v for k, v in job.items() if k != "length"}


def run(settings: Settings, kind: str) -> dict[str, Any] | None:
    """Wait for ComfyUI, run the warm-up job, log the outcome; never raises."""
    from . import handler

    try:
        job = {"id": f"warmup-{kind}", "input": job_input(kind)}
        client = ComfyClient(settings)
        client.wait_until_ready()
        log.info("warm-up: running the smallest %s job so its models are loaded before the first request", kind)
        result = handler.handle(job, lambda: replace(handler.worker(), comfy=client))
    except Exception as exc:  # noqa: BLE001 - a warm-up must never take the worker down
        log.warning("warm-up %s failed (%s); the first job loads the models itself", kind, exc)
        return None
    timings = result.get("timings_ms") or {}
    if "error" in result:
        log.warning("warm-up %s failed: %s [%s]; the first job loads the models itself", kind,
                    result["error"], result.get("error_code"))
    else:
        log.info("warm-up %s done in %.0f ms (model loading %s ms); jobs of this kind now start warm", kind,
                 timings.get("total", 0.0), timings.get("model_load", "?"))
    return result


def start(settings: Settings) -> threading.Thread | None:
    """Start the warm-up of WARMUP on a daemon thread, once per process; None when it is off."""
    kind = settings.warmup.strip().lower()
    if kind in OFF or not _started.acquire(blocking=False):
        return None
    if kind not in KINDS:
        log.warning("WARMUP=%s is not a job kind (%s); no warm-up", settings.warmup, ", ".join(KINDS))
        return None
    thread = threading.Thread(target=run, args=(settings, kind), name="warmup", daemon=True)
    thread.start()
    return thread
