"""The image as users run it: real jobs over RunPod's API server in a container of it, the
test_input.json dry run, an empty volume, `docker stop`, and what is inside (versions, one copy of
every CUDA library). Every MP4 is decoded and looked at.

The jobs are the real tier's smallest: 128x128, 2 steps where a family allows it, S2V chunks of 16
frames and Animate windows of 5 (a copy of workflows/ mounted as WORKFLOWS_DIR), on ComfyUI's CPU.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests

from tests import tinyonnx
from tests.avgen import audio_file
from tests.comfyui.conftest import NEGATIVE, PROMPT, start_image, workflows_with
from tests.conftest import free_port
from tests.image.conftest import REPO, Container, docker, run_in_image
from tests.video import audio_track_s, decode, decode_result
from wan_worker.graphs import ANIMATE, S2V
from wan_worker.models import MODEL_SETS

MODELS = "runpod-slim/ComfyUI/models"  # the volume's first layout
IMAGE_B64 = base64.b64encode(start_image()).decode()
CUDA_VERSION = "12.8"
COMFYUI_VERSION = "0.3.64"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- inside the image -------------------------------------------------------------------------


def test_inside_the_image_one_copy_of_every_cuda_library(image: str, report: list[str]):
    """torch's CUDA 12.8 wheels bring the CUDA and cuDNN libraries; onnxruntime-gpu (the Animate
    preprocessing) loads those very files, and no second copy exists anywhere on disk."""
    proc = run_in_image(image, "/src/tests/image/inside.py", mounts=(f"{REPO / 'tests'}:/src/tests:ro",))
    facts = json.loads(proc.stdout)
    nvidia = f"{facts['torch_site']}/nvidia/"
    report.append(f"inside {image}: Python {facts['python']}, torch {facts['torch']} (CUDA {facts['torch_cuda']}, "
                  f"cuDNN {facts['torch_cudnn']}), ComfyUI {facts['comfyui']}, onnxruntime {facts['onnxruntime']}")
    assert facts["torch_cuda"] == CUDA_VERSION and facts["torch"].startswith("2.8.")
    assert facts["comfyui"] == COMFYUI_VERSION
    assert "CUDAExecutionProvider" in facts["onnxruntime_providers"], facts["onnxruntime_providers"]
    twice = {name: paths for name, paths in facts["copies"].items() if len(paths) > 1}
    assert not twice, f"a CUDA library is on disk twice: {twice}"
    cudnn = sorted(name for name in facts["copies"] if name.startswith("libcudnn"))
    assert "libcudnn.so.9" in cudnn and all(facts["copies"][n][0].startswith(nvidia) for n in cudnn)
    report.append(f"cuDNN on disk: one copy ({len(cudnn)} files, all under {nvidia}); CUDA libraries: "
                  f"{sum(len(p) for p in facts['copies'].values())} files, none twice")
    # preload_dlls() found torch's packages (same venv): CUDA runtime, cuBLAS(Lt), cuFFT, cuRAND, cuDNN
    for name in ("libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12", "libcufft.so.11",
                 "libcurand.so.10", "libcudnn.so.9"):
        assert facts["loaded"].get(name, "").startswith(nvidia), (name, facts["loaded"], facts["preload_said"])
    report.append(f"onnxruntime.preload_dlls() loaded {len(facts['loaded'])} CUDA/cuDNN libraries, all from {nvidia}")


def test_the_download_script_runs_from_the_image(image: str):
    """docs/models.md's `--entrypoint /app/scripts/download_models.sh` finds the installed worker."""
    proc = run_in_image(image, "--help", entrypoint="/app/scripts/download_models.sh", timeout=60)
    assert "--set" in proc.stdout and "--dest" in proc.stdout, proc.stdout


# --- the test_input.json dry run -----------------------------------------------------------------


def test_the_test_input_dry_run_runs_and_exits_by_itself(image: str, tmp_path: Path, report: list[str]):
    """No RunPod environment and no API flag: the SDK runs /app/test_input.json once and the
    container exits 0 on its own, without models (an empty volume) or a GPU."""
    t0 = time.monotonic()
    proc = docker("run", "--rm", "--network", "host", "-v", f"{tmp_path}:/runpod-volume:ro",
                  "-e", f"COMFY_PORT={free_port()}", "-e", "COMFY_ARGS=--cpu",
                  "-e", "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true", image, timeout=180, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "completed successfully" in log, log[-4000:]
    assert "'dry_run': True" in log and "Local testing complete, exiting." in log
    assert "MISSING  vae/wan_2.1_vae.safetensors" in log  # the volume report says what is not there
    report.append(f"test_input.json dry run: exited 0 by itself after {time.monotonic() - t0:.1f} s")


# --- an empty volume ---------------------------------------------------------------------------


def test_an_empty_volume_serves_and_names_the_missing_files(start_container, tmp_path: Path):
    """Starts and serves with nothing on the volume; a job comes back FAILED, its error beginning
    with the code (the SDK keeps only the `error` string), and wan-video reads the code from it."""
    c = start_container(tmp_path)
    c.wait_ready()
    body = c.runsync({"image": IMAGE_B64, "prompt": PROMPT, "width": 128, "height": 128, "length": 5})
    assert body["status"] == "FAILED", body
    missing = [f.name for f in MODEL_SETS["i2v-14b"].files]
    assert body["error"].startswith(f"MODELS_MISSING: {len(missing)} model files of set i2v-14b are missing"), body
    assert all(name in body["error"] for name in missing), body["error"]
    image_file = tmp_path / "start.png"
    image_file.write_bytes(start_image())
    client = subprocess.run([str(Path(sys.executable).with_name("wan-video")), str(image_file), PROMPT,
                             "--url", c.api, "-o", str(tmp_path / "out.mp4"), "--length", "5"],
                            capture_output=True, text=True, timeout=120)
    assert client.returncode == 1, client.stdout + client.stderr  # EXIT_JOB_FAILED
    assert "failed: MODELS_MISSING: " in client.stderr, client.stderr
    assert not (tmp_path / "out.mp4").exists()


# --- real jobs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(start_container, tiny_volume: Path, tmp_path_factory: pytest.TempPathFactory,
           report: list[str]) -> Iterator[Container]:
    """One container for the jobs: the tiny models (real tiny ONNX files for the preprocessing,
    written here with onnx), shortened S2V chunks and Animate windows. Stopped by the last test."""
    folder = tiny_volume / MODELS / "detection"
    box = (60.0, 15.0, 110.0, 115.0)
    tinyonnx.detector(folder / "yolox_l.onnx", [tinyonnx.to_detector(box, 160, 120)])
    tinyonnx.pose_model(folder / "dw-ll_ucoco_384.onnx", tinyonnx.to_crop(tinyonnx.standing_person(box), box))
    graphs = tmp_path_factory.mktemp("workflows")
    workflows_with(graphs, S2V.file, ("Sound To Video", "Extend"), length=13)
    workflows_with(graphs, ANIMATE.file, ("Animate", "Extend Animate"), length=5, continue_motion_max_frames=1)
    c = start_container(tiny_volume, mounts=(f"{graphs}:/workflows:ro",), WORKFLOWS_DIR="/workflows")
    ready = c.wait_ready()
    report.append(f"docker run to ready (ComfyUI answering, worker taking jobs), CPU, tiny volume: {ready:.1f} s")
    yield c


def output_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("status") == "COMPLETED", json.dumps(body)[:2000]
    return body["output"]


def test_an_i2v_job_over_the_api_server(worker: Container, report: list[str]):
    t0 = time.monotonic()
    out = output_of(worker.runsync({"image": IMAGE_B64, "prompt": PROMPT, "negative_prompt": NEGATIVE,
                                    "width": 128, "height": 128, "length": 5, "fps": 12, "seed": 7}))
    video = decode_result(out)
    assert (len(video.frames), video.width, video.height, video.fps) == (5, 128, 128, 12)
    assert video.codec == "h264" and not video.is_blank()
    report.append(f"I2V job (5 frames, 128x128, cold text encode included): {time.monotonic() - t0:.1f} s")


def test_interpolation_and_upscaling_run_in_the_image(worker: Container):
    """The worker's RIFE node in the image's custom_nodes/ and ComfyUI's upscaler, on the tiny weights;
    the I2V job's own values, so ComfyUI serves its frames from the cache and runs only the block."""
    out = output_of(worker.runsync({"image": IMAGE_B64, "prompt": PROMPT, "negative_prompt": NEGATIVE,
                                    "width": 128, "height": 128, "length": 5, "fps": 12, "seed": 7,
                                    "num_interpolated_frames": 1, "upscaler": "default"}))
    video = decode_result(out)
    assert (len(video.frames), video.width, video.height, video.fps) == (9, 256, 256, 24)
    assert out["rendered"] == {"width": 128, "height": 128, "length": 5, "fps": 12.0} and not video.is_blank()


def test_an_s2v_job_carries_its_sound(worker: Container):
    out = output_of(worker.runsync({"image": IMAGE_B64, "audio": b64(audio_file("WAV", seconds=0.5, freq=220.0)),
                                    "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 128, "height": 128,
                                    "seed": 7}))
    video = decode_result(out)
    assert (out["graph"], out["chunks"]) == ("s2v", 1)
    assert (len(video.frames), video.width, video.height, video.fps) == (8, 128, 128, 16)
    assert not video.is_blank()
    codec, seconds = audio_track_s(out)
    assert codec == "aac" and seconds == pytest.approx(0.5, abs=0.05)


def test_an_animate_job_from_a_plain_video_preprocessed_in_the_image(worker: Container):
    """Only `image` and `video`: the worker's own preprocessing (onnxruntime-gpu on this GPU-less
    machine falls back to the CPU provider) makes the pose and face videos inside the container."""
    from wan_worker.preprocess import encode_mp4

    frames = []
    for _ in range(5):
        frame = np.full((120, 160, 3), 60, np.uint8)
        frame[15:115, 60:110] = 255
        frames.append(frame)
    out = output_of(worker.runsync({"image": IMAGE_B64, "video": b64(encode_mp4(frames, 16)), "prompt": PROMPT,
                                    "negative_prompt": NEGATIVE, "width": 128, "height": 128, "seed": 7,
                                    "steps": 2, "return_preprocessed": True}))
    video = decode_result(out)
    assert (out["graph"], out["mode"], out["windows"]) == ("animate", "move", 1)
    assert (len(video.frames), video.width, video.height, video.fps) == (5, 128, 128, 16)
    assert not video.is_blank()
    pose = decode(base64.b64decode(out["pose_video"]))
    assert (len(pose.frames), pose.width, pose.height) == (5, 128, 128) and not pose.is_blank()
    assert "preprocessing model yolox_l.onnx on CPUExecutionProvider" in worker.logs()


def test_docker_stop_exits_0_within_10_s_comfyui_included(worker: Container, report: list[str]):
    """Last of the module: SIGTERM reaches the worker (the container's first process, which
    handles it), the worker stops ComfyUI, and the container exits 0 before docker's 10 s."""
    took, code = worker.stop(timeout=10)
    report.append(f"docker stop: exit {code} in {took:.1f} s")
    assert code == 0 and took < 10, worker.logs()[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{worker.comfy_port}/system_stats", timeout=2)
