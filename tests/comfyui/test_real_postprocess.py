"""Issue 25 on the real tier: RIFE interpolation and upscaling run inside the job's graph on the real
ComfyUI (the worker's node installed in custom_nodes/, tiny RIFE and Real-ESRGAN weights with the
real key layouts, tests/tinywan.py), every MP4 decoded and its frames looked at.

The jobs share one seed and size, so ComfyUI serves the sampling and decoding from its cache and
only the post-processing block runs again: the in-between frames are compared with the plain job's
frames, which are the interpolated video's every second frame.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.comfyui.conftest import PROMPT, RealComfy, start_image
from tests.video import Video, audio_track_s, decode_result
from wan_worker.errors import INVALID_INPUT, MODELS_MISSING
from wan_worker.handler import handler
from wan_worker.models import RIFE49

IMAGE = base64.b64encode(start_image()).decode()
# The tiny model's frames are close to noise, which H.264 quantises by what surrounds a frame: the
# same frame in two MP4s is several per pixel apart (7-10 measured here), under 2.5 as means of 16x16
# blocks (1.7 at most at 16 and 64 fps), which is how frames of two videos are compared; neighbours
# in one video as 4x4 means.
KEPT_BLOCK, KEPT_NOISE, NEAR_BLOCK = 16, 2.5, 4


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"image": IMAGE, "prompt": PROMPT, "width": 128, "height": 128, "length": 9,
                                    "seed": 2501, **fields}}


def diff(a: np.ndarray, b: np.ndarray, block: int = NEAR_BLOCK) -> float:
    """Mean absolute difference (0-255) of the frames' `block`x`block` means."""
    x, y = (np.asarray(v, np.float32) for v in (a, b))
    h, w, c = x.shape
    x, y = (v.reshape(h // block, block, w // block, block, c).mean(axis=(1, 3)) for v in (x, y))
    return float(np.abs(x - y).mean())


@pytest.fixture(scope="module")
def plain(real_comfy: RealComfy) -> Video:
    """The job without post-processing (module scope: rendered once, then cached by ComfyUI)."""
    from wan_worker import handler as handler_module

    env = real_comfy.worker_env()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        handler_module.worker.cache_clear()
        video = decode_result(handler(job("post-plain")))
        handler_module.worker.cache_clear()
    assert len(video.frames) == 9 and video.fps == 16 and not video.is_blank()
    return video


def test_nine_frames_at_2x_are_seventeen_at_twice_the_fps(real_env, plain: Video):
    result = handler(job("post-rife", num_interpolated_frames=1))
    video = decode_result(result)
    assert len(video.frames) == 17 == result["length"] and video.fps == 32 == result["fps"]
    assert result["rendered"] == {"width": 128, "height": 128, "length": 9, "fps": 16.0}
    assert (video.width, video.height) == (128, 128) and not video.is_blank()
    kept = [diff(video.frames[2 * i], plain.frames[i], KEPT_BLOCK) for i in range(9)]
    assert max(kept) < KEPT_NOISE, kept  # the rendered frames are every second frame, unchanged
    other = [diff(video.frames[2 * i], plain.frames[i + 1], KEPT_BLOCK) for i in range(8)]
    assert min(other) > 2 * KEPT_NOISE, (kept, other)  # and "unchanged" is far below "another frame"
    for i in range(8):  # each made frame against its neighbours, all three from this one MP4
        a, mid, b = (video.frames[k].astype(np.float32) for k in (2 * i, 2 * i + 1, 2 * i + 2))
        to_average, to_either, apart = diff(mid, (a + b) / 2), min(diff(mid, a), diff(mid, b)), diff(a, b)
        assert apart > 3 * to_average, (i, apart, to_average)  # motion: the neighbours differ well beyond noise
        assert to_average < to_either / 2, (i, to_average, to_either)  # between its neighbours, not a copy


def test_4x_makes_three_frames_between_each_pair(real_env, plain: Video):
    video = decode_result(handler(job("post-rife-4x", interpolator_model="rife", num_interpolated_frames=3)))
    assert len(video.frames) == 33 and video.fps == 64
    assert max(diff(video.frames[4 * i], plain.frames[i], KEPT_BLOCK) for i in range(9)) < KEPT_NOISE
    steps = [diff(video.frames[k], video.frames[4]) for k in range(5)]  # walking from frame 0 to frame 1
    assert steps == sorted(steps, reverse=True), steps


def test_the_upscaled_mp4_has_the_promised_size(real_env, plain: Video):
    result = handler(job("post-up", upscaler="default"))
    video = decode_result(result)
    assert (video.width, video.height) == (256, 256) == (result["width"], result["height"])
    assert len(video.frames) == 9 and video.fps == 16 and not video.is_blank()
    result = handler(job("post-up-1.5", upscale_factor=1.5, num_interpolated_frames=1))
    video = decode_result(result)
    assert (video.width, video.height, len(video.frames), video.fps) == (192, 192, 17, 32)
    assert not video.is_blank() and result["upscale"]["width"] == 192


def test_sound_stays_in_step_when_s2v_is_interpolated(real_env, real_comfy: RealComfy, tmp_path: Path, monkeypatch):
    from tests.avgen import audio_file
    from tests.comfyui.conftest import workflows_with

    from wan_worker import handler as handler_module

    # the S2V tests' chunk length (13: 16 frames a chunk): 0.5 s of sound is one chunk
    monkeypatch.setenv("WORKFLOWS_DIR", str(workflows_with(tmp_path, "wan22_s2v.json", ("Sound To Video", "Extend"),
                                                           length=13)))
    handler_module.worker.cache_clear()
    audio = base64.b64encode(audio_file("WAV", seconds=0.5)).decode()
    result = handler({"id": "post-s2v", "input": {"image": IMAGE, "prompt": PROMPT, "audio": audio, "width": 128,
                                                   "height": 128, "seed": 3, "num_interpolated_frames": 1}})
    video = decode_result(result)
    assert len(video.frames) == 15 == result["length"] and video.fps == 32  # 8 frames of sound, (8-1)*2+1
    _codec, seconds = audio_track_s(result)
    assert seconds == pytest.approx(0.5, abs=0.03) and len(video.frames) / video.fps == pytest.approx(0.47, abs=0.02)


def test_bad_values_and_missing_weights_stop_before_comfyui(real_env, real_comfy: RealComfy):
    result = handler(job("post-bad", num_interpolated_frames=7))
    assert result["error_code"] == INVALID_INPUT and "`num_interpolated_frames`" in result["error"]
    weights = real_comfy.models / RIFE49.folder / RIFE49.name
    moved = weights.with_suffix(".away")
    weights.rename(moved)
    try:
        result = handler(job("post-no-rife", num_interpolated_frames=1))
    finally:
        moved.rename(weights)
    assert result["error_code"] == MODELS_MISSING and "frame_interpolation/rife49.pth" in result["error"]
    assert "--set postprocess" in result["error"]


def test_the_stand_ins_schemas_for_the_block_are_the_real_servers(real_comfy: RealComfy):
    """tests/fixtures/object_info.json (which the stand-in validates graphs against) holds the block's
    classes as this ComfyUI, with the worker's node installed and the tiny volume, answers them."""
    import json

    import requests

    real = requests.get(f"{real_comfy.url}/object_info", timeout=30).json()
    fixture = json.loads((Path(__file__).parents[1] / "fixtures" / "object_info.json").read_text())
    for name in ("UpscaleModelLoader", "ImageUpscaleWithModel", "ImageScale", "WanWorkerLoadRIFE",
                 "WanWorkerRIFEInterpolate"):
        assert real[name] == fixture[name], name
    assert real["WanWorkerLoadRIFE"]["python_module"] == "custom_nodes.wan_worker_nodes"
