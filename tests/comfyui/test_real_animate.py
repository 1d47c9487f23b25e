"""Animate executed by the real ComfyUI through handler(), on tiny stand-ins of the Animate model,
CLIP vision H and the two LoRAs (tests/tinywan), from short generated videos: a move job in two
windows with the driving video's sound carried into the MP4, and a replace job. Every MP4 is decoded
with PyAV: frame count (it follows the driving video at 16 fps), size, 16 fps, pixels. Two jobs
keep the tier's cost near three minutes: a two-window move job with sound, a one-window replace job.

The product's window is 77 frames continuing from the last 5; these jobs run the bundled graph with
windows of 5 frames continuing from the last 1 (4 new frames a window) in a copy of workflows/
(WORKFLOWS_DIR): the face encoder costs seconds per face frame and step on a CPU, so every frame
counts. Two steps each (the fewest a job may ask for).
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.avgen import video_file
from tests.comfyui.conftest import NEGATIVE, PROMPT, RealComfy, start_image, workflows_with
from tests.video import audio_track_s, decode, decode_result
from wan_worker import handler as handler_module
from wan_worker.graphs import ANIMATE
from wan_worker.handler import handler

WINDOW, MOTION = 5, 1  # a window of 5 frames continuing from the last 1: 4 new frames a window
IMAGE = base64.b64encode(start_image()).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def short_windows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled graphs, with the Animate graph's windows shortened for CPU-sized jobs."""
    return workflows_with(tmp_path_factory.mktemp("workflows"), ANIMATE.file, ("Animate", "Extend Animate"),
                          length=WINDOW, continue_motion_max_frames=MOTION)


@pytest.fixture
def animate_env(real_env: dict[str, str], short_windows: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("WORKFLOWS_DIR", str(short_windows))
    handler_module.worker.cache_clear()
    yield real_env
    handler_module.worker.cache_clear()


def clip(frames: int, fps: int = 16, audio: float | None = None) -> str:
    return b64(video_file("MP4", frames=frames, fps=fps, width=64, height=64, audio_seconds=audio))


def animate(job_id: str, frames: int, **fields: Any) -> dict[str, Any]:
    control = clip(frames)
    return {"id": job_id, "input": {"image": IMAGE, "video": control, "pose_video": control, "face_video": control,
                                    "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 128, "height": 128,
                                    "seed": 7, "steps": 2, **fields}}


def test_a_two_window_move_job_with_the_drivers_sound(animate_env, real_comfy: RealComfy):
    """8 frames: the first window's 5, then 4 more continuing from its last frame, cut to 8; the
    second window reads the control videos from where the first stopped. The MP4 has the sound."""
    files_before = real_comfy.files()
    job = animate("real-animate-move", 8)
    job["input"]["video"] = clip(8, audio=0.5)
    result = handler(job)
    video = decode_result(result)
    assert (result["graph"], result["mode"], result["windows"], result["audio"]) == ("animate", "move", 2, True)
    assert len(video.frames) == result["frames"] == result["length"] == 8
    assert (video.width, video.height, video.fps) == (128, 128, 16)
    assert not video.is_blank()
    codec, seconds = audio_track_s(result)
    assert codec == "aac" and seconds == pytest.approx(0.5, abs=0.05)
    assert real_comfy.files() == files_before  # uploads and outputs cleaned up


def test_a_replace_job_from_a_30fps_driver(animate_env):
    """Replace mode loads the background and the mask too; the 30 fps videos are resampled to 16."""
    control = clip(9, fps=30)  # 0.3 s: 5 frames at 16 fps
    job = animate("real-animate-replace", 5, mode="replace")
    job["input"].update(video=control, pose_video=control, face_video=control, background_video=control,
                        mask_video=control)
    result = handler(job)
    video = decode_result(result)
    assert (result["mode"], result["relight"], result["windows"], result["audio"]) == ("replace", True, 1, False)
    assert len(video.frames) == result["frames"] == 5
    assert (video.width, video.height, video.fps) == (128, 128, 16)
    assert not video.is_blank()


def test_a_move_job_from_only_image_and_video(animate_env, real_comfy: RealComfy):
    """Issue 16: no pose or face video: the worker makes them from the plain driver with tiny ONNX
    models (tests/tinyonnx, written over the volume's placeholders from the test interpreter, which
    has onnx), uploads them, and the real ComfyUI runs the job; the returned pose video is the
    skeleton the tiny models encode, drawn at the job's size."""
    import numpy as np

    from tests import tinyonnx
    from wan_worker.preprocess import encode_mp4

    fw, fh, box = 160, 120, (60.0, 15.0, 110.0, 115.0)
    folder = real_comfy.models / "detection"
    tinyonnx.detector(folder / "yolox_l.onnx", [tinyonnx.to_detector(box, fw, fh)])
    tinyonnx.pose_model(folder / "dw-ll_ucoco_384.onnx", tinyonnx.to_crop(tinyonnx.standing_person(box), box))
    frames = []
    for _ in range(5):
        f = np.full((fh, fw, 3), 60, np.uint8)
        f[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = 255
        frames.append(f)
    job = animate("real-animate-preprocess", 5, return_preprocessed=True)
    job["input"]["video"] = b64(encode_mp4(frames, 16))
    del job["input"]["pose_video"], job["input"]["face_video"]
    result = handler(job)
    video = decode_result(result)
    assert (result["mode"], result["windows"], result["frames"]) == ("move", 1, 5)
    assert (len(video.frames), video.width, video.height, video.fps) == (5, 128, 128, 16)
    assert not video.is_blank()
    pose = decode(base64.b64decode(result["pose_video"]))
    assert (len(pose.frames), pose.width, pose.height) == (5, 128, 128) and not pose.is_blank()
    face = decode(base64.b64decode(result["face_video"]))
    assert (len(face.frames), face.width, face.height) == (5, 512, 512)


def test_the_animate_warm_up_runs_on_comfyui_and_leaves_nothing(animate_env, real_comfy: RealComfy):
    """WARMUP=animate: the smallest Animate job (its own gray pose and face clips, no preprocessing)
    really runs, its video is thrown away and its files are cleaned up like any job's."""
    from wan_worker import background, warmup
    from wan_worker.settings import load_settings

    files_before = real_comfy.files()
    result = warmup.run(load_settings(), "animate")
    assert result is not None and "error" not in result, result
    video = decode_result(result)
    assert (result["graph"], result["mode"], result["windows"]) == ("animate", "move", 1)
    assert (len(video.frames), video.width, video.height) == (result["frames"], 128, 128)
    assert background.wait_idle(10)
    assert real_comfy.files() == files_before
    assert result["prompt_id"] not in real_comfy.history()
