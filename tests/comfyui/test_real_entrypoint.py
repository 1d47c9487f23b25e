"""entrypoint.sh with the real ComfyUI's main.py: the report, ComfyUI ready, a job through the
worker's `--rp_serve_api` server, and SIGTERM stopping both. Uses test_entrypoint's harness."""
from __future__ import annotations

import base64
import os
import signal
from pathlib import Path

import pytest
import requests

from tests.comfyui.conftest import RealComfy, copy_comfyui, install_worker_nodes
from tests.test_entrypoint import entrypoint, files_under, pid_alive, wait_for, workflow_input  # noqa: F401
from tests.video import decode
from wan_worker.models import MANIFEST

START_S = 180  # the real ComfyUI imports torch and every node: seconds, more on a busy machine


def test_entrypoint_runs_the_real_comfyui(entrypoint, real_comfy: RealComfy, tmp_path: Path):  # noqa: F811
    comfy_dir = copy_comfyui(real_comfy.src, tmp_path / "comfyui")
    install_worker_nodes(comfy_dir)  # as the image has them
    run = entrypoint(comfy_dir=comfy_dir, env={"COMFY_PYTHON": str(real_comfy.python), "COMFY_ARGS": "--cpu",
                                               "EXTRA_MODEL_PATHS": str(real_comfy.yaml)})
    wait_for("ComfyUI", lambda: requests.get(f"{run.comfy}/system_stats", timeout=2).json(), START_S, run)
    run.wait_api()
    log = run.log()
    assert f"All {len(MANIFEST)} model files are present and complete." in log  # every file of every set
    assert "This volume can serve: image-to-video" in log and "[t2v-14b]" in log and "[ti2v-5b]" in log
    assert "[s2v-14b]" in log and "[animate-14b]" in log and "[postprocess]" in log
    assert "[comfyui] ComfyUI version:" in log and "IMPORT FAILED" not in log
    stats = requests.get(f"{run.comfy}/system_stats", timeout=5).json()
    argv = stats["system"]["argv"]
    assert argv[:3] == ["main.py", "--listen", "127.0.0.1"] and "--disable-api-nodes" in argv and "--cpu" in argv

    body = run.runsync(workflow_input("video/ep"), timeout=120)
    assert body["status"] == "COMPLETED", body
    by_ext = {Path(i["filename"]).suffix: i for i in body["output"]["images"]}
    video = decode(base64.b64decode(by_ext[".mp4"]["data"]))
    assert (len(video.frames), video.width, video.height) == (9, 64, 64) and not video.is_blank()
    assert files_under(comfy_dir / "output") == [] and files_under(comfy_dir / "input") == []

    comfy_pid = run.comfy_pid()
    os.kill(run.proc.pid, signal.SIGTERM)  # the entrypoint's PID: the worker, after exec
    run.proc.wait(timeout=20)
    wait_for("ComfyUI to exit", lambda: not pid_alive(comfy_pid), timeout=20)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{run.comfy}/system_stats", timeout=1)
