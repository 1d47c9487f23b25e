"""The worker through the real runpod SDK: local test mode and its `--rp_serve_api` server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, png_b64
from tests.test_handler import two_image_workflow

REPO = Path(__file__).resolve().parents[1]


def run_worker(args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 60):
    full_env = {**os.environ, **env, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true"}
    full_env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    return subprocess.run([sys.executable, "-m", "wan_worker", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_test_input_exits_zero(worker_env):
    job = {"input": {"image": png_b64(), "prompt": "waves roll in", "dry_run": True}}
    proc = run_worker(["--test_input", json.dumps(job)], worker_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed successfully" in proc.stdout + proc.stderr


def test_invalid_job_exits_non_zero_with_the_reason(worker_env):
    job = {"input": {"image": png_b64(), "prompt": "waves", "length": 80}}
    proc = run_worker(["--test_input", json.dumps(job)], worker_env)
    assert proc.returncode == 1
    assert "`length` must be 4n+1" in proc.stdout + proc.stderr


def test_repo_test_input_json_is_a_dry_run_that_passes_without_comfyui_or_models(tmp_path):
    """What `make dry-run` does: test_input.json from the working directory, nothing else running."""
    (tmp_path / "test_input.json").write_text((REPO / "test_input.json").read_text())
    env = {"EXTRA_MODEL_PATHS": str(REPO / "extra_model_paths.yaml"), "COMFY_HOST": "127.0.0.1:9"}
    proc = run_worker([], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((REPO / "test_input.json").read_text())["input"]["dry_run"] is True


@pytest.fixture
def api_server(worker_env):
    port = free_port()
    env = {**os.environ, **worker_env, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "wan_worker", "--rp_serve_api", "--rp_api_host",
                             "127.0.0.1", "--rp_api_port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/docs", timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_local_api_server_runsync(api_server, fake):
    images = [{"name": "first.png", "image": png_b64()}, {"name": "second.jpg", "image": png_b64()}]
    resp = requests.post(f"{api_server}/runsync", timeout=60,
                         json={"input": {"workflow": two_image_workflow(), "images": images}})
    body = resp.json()
    assert body["status"] == "COMPLETED", body
    assert {Path(i["filename"]).suffix for i in body["output"]["images"]} == {".mp4", ".png"}

    resp = requests.post(f"{api_server}/runsync", timeout=60,
                         json={"input": {"image": png_b64(), "prompt": "p", "dry_run": True}})
    assert resp.json()["status"] == "COMPLETED"
    assert resp.json()["output"]["checks"]["models"]["ok"] is True

    resp = requests.post(f"{api_server}/runsync", timeout=60, json={"input": {"image": png_b64()}})
    assert resp.json()["status"] == "FAILED" and "`prompt` is required" in resp.json()["error"]
