"""Every ComfyUI fault ends the job with a clear error, and the next job runs normally."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import files_under, free_port, png_b64
from tests.test_cli import REPO
from wan_worker import comfy
from wan_worker.handler import handler

OK_PROMPT = "a lighthouse in a storm, waves crash"


def job(**fields) -> dict:
    return {"id": f"job-{time.monotonic_ns()}", "input": {"image": png_b64(), "prompt": OK_PROMPT, **fields}}


def assert_next_job_succeeds(fake) -> None:
    result = handler(job())
    assert "error" not in result, result
    assert base64.b64decode(result["video"]) == fake.mp4_bytes


@pytest.fixture
def quick(monkeypatch, worker_env):
    """Fast reconnects and health checks, so each fault resolves in about a second."""
    monkeypatch.setenv("WEBSOCKET_RECONNECT_DELAY_S", "0.1")
    monkeypatch.setenv("WEBSOCKET_RECONNECT_ATTEMPTS", "3")
    monkeypatch.setattr(comfy, "HEALTH_EVERY_S", 0.3)
    monkeypatch.setattr(comfy, "HEALTH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(comfy, "INTERRUPT_GRACE_S", 2.0)
    from wan_worker import handler as h
    h.worker.cache_clear()
    return worker_env


def test_comfyui_dies_mid_job(quick, fake):
    fake.die_on(class_type="KSamplerAdvanced")
    t0 = time.monotonic()
    result = handler(job())
    assert result["error_code"] == "COMFY_UNAVAILABLE"
    assert time.monotonic() - t0 < 10
    assert result["refresh_worker"] is True
    fake.reset()
    fake.start()  # ComfyUI back (a fresh worker would start it again)
    assert_next_job_succeeds(fake)


def test_comfyui_stops_answering_mid_job(quick, fake):
    assert_next_job_succeeds(fake)  # ComfyUI was up and answering
    fake.stall_on(class_type="KSamplerAdvanced")
    fake.slow_responses(30, paths=["/system_stats"])
    t0 = time.monotonic()
    result = handler(job())
    assert result["error_code"] == "COMFY_UNAVAILABLE" and "stopped answering" in result["error"]
    assert time.monotonic() - t0 < 10
    fake.reset()
    assert fake.wait_idle(10)
    assert_next_job_succeeds(fake)


def test_websocket_dropped_once_job_still_completes(quick, fake):
    fake.drop_websocket(times=1)
    result = handler(job())
    assert "error" not in result, result
    assert base64.b64decode(result["video"]) == fake.mp4_bytes
    ws_opens = [r for r in fake.requests if r.path == "/ws"]
    assert len(ws_opens) == 2


def test_websocket_dropped_and_missed_end_is_recovered_from_history(quick, fake):
    fake.drop_websocket(times=None)  # even the final `executing` null is lost
    result = handler(job())
    assert "error" not in result, result
    assert any(r.path.startswith("/history/") for r in fake.requests)


def test_websocket_gone_for_good(quick, fake):
    fake.step_delay = 0.3
    result: dict = {}
    worker_thread = threading.Thread(target=lambda: result.update(handler(job())))
    worker_thread.start()
    deadline = time.monotonic() + 5
    while not fake.prompts and time.monotonic() < deadline:
        time.sleep(0.02)
    fake.http_errors(status=500, paths=["/ws"])  # no reconnect will succeed
    fake.drop_websocket(times=None)
    worker_thread.join(15)
    assert result["error_code"] == "COMFY_UNAVAILABLE"
    assert "WEBSOCKET_RECONNECT_ATTEMPTS" in result["error"]
    fake.reset()
    fake.step_delay = 0
    assert fake.wait_idle(10)
    assert_next_job_succeeds(fake)


def test_node_that_never_finishes_times_out_and_is_interrupted(quick, fake):
    fake.stall_on(class_type="KSamplerAdvanced")
    t0 = time.monotonic()
    result = handler(job(timeout_s=1.5))
    elapsed = time.monotonic() - t0
    assert result["error_code"] == "TIMEOUT" and "timeout_s" in result["error"]
    assert 1.5 <= elapsed < 6
    prompt_id = result["details"]["prompt_id"]
    interrupts = [r.json for r in fake.requests if r.path == "/interrupt"]
    assert {"prompt_id": prompt_id} in interrupts
    assert fake.wait_idle(5)
    assert fake.history(forgotten=True)[prompt_id]["status"]["status_str"] == "error"  # ComfyUI really stopped it
    fake.reset()
    assert_next_job_succeeds(fake)


def test_a_prompt_that_outlives_its_timeout_leaves_nothing_when_it_ends(quick, fake, monkeypatch):
    """The interrupt does not land (ComfyUI checks for it only between sampler steps; here it is
    refused), so the prompt runs on after its job: when it ends, its history entry and the video it
    saved go too."""
    monkeypatch.setattr(comfy, "FORGET_WAIT_S", 0.3)
    monkeypatch.setattr(comfy, "LATE_POLL_S", 0.2)
    fake.stall_on(class_type="KSamplerAdvanced")
    fake.http_errors(status=500, paths=["/interrupt"])
    result = handler(job(timeout_s=1))
    assert result["error_code"] == "TIMEOUT"
    prompt_id = result["details"]["prompt_id"]
    time.sleep(1.0)  # the worker has looked, more than once, and left it running
    assert [item[1] for item in fake.queue()["queue_running"]] == [prompt_id]
    fake.reset()  # the sampler carries on and the prompt ends, saving its video
    deadline = time.monotonic() + 10
    while prompt_id in fake.history() or prompt_id not in fake.history(forgotten=True):
        assert time.monotonic() < deadline, "the late prompt's history entry stayed"
        time.sleep(0.05)
    assert fake.history(forgotten=True)[prompt_id]["status"]["status_str"] == "success"
    assert fake.history(forgotten=True)[prompt_id]["outputs"], "it saved a video"
    deadline = time.monotonic() + 5
    while files_under(fake.input_dir, fake.output_dir):
        assert time.monotonic() < deadline, files_under(fake.input_dir, fake.output_dir)
        time.sleep(0.05)
    assert_next_job_succeeds(fake)


def test_out_of_memory_asks_for_a_fresh_worker(quick, fake):
    fake.fail_on(class_type="KSamplerAdvanced", exception_type="torch.OutOfMemoryError",
                 exception_message="Allocation on device", times=1)
    result = handler(job())
    assert result["error_code"] == "OUT_OF_MEMORY" and result["refresh_worker"] is True
    assert "Traceback" not in result["error"]
    assert_next_job_succeeds(fake)


def test_ordinary_failure_does_not_recycle_the_worker(quick, fake):
    fake.fail_on(class_type="VAEDecode", exception_type="RuntimeError", exception_message="bad latent", times=1)
    result = handler(job())
    assert result["error_code"] == "EXECUTION_FAILED" and "refresh_worker" not in result


def test_refresh_worker_setting_recycles_after_every_job(quick, fake, monkeypatch):
    monkeypatch.setenv("REFRESH_WORKER", "true")
    from wan_worker import handler as h
    h.worker.cache_clear()
    result = handler(job())
    assert "video" in result and result["refresh_worker"] is True


def test_failed_jobs_leave_comfyui_folders_clean(quick, fake):
    fake.fail_on(class_type="VAEDecode", exception_type="RuntimeError", exception_message="boom", times=1)
    handler(job())
    fake.stall_on(class_type="KSamplerAdvanced")
    handler(job(timeout_s=1))
    fake.reset()
    assert fake.wait_idle(5)
    leftovers = files_under(fake.input_dir, fake.output_dir)
    assert leftovers == []


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def comfy_process(tmp_path, volume, monkeypatch):
    """The stand-in ComfyUI in a process of its own, so the worker's memory is measured alone."""
    port = free_port()
    root = tmp_path / "comfy-proc"
    root.mkdir()
    yaml = tmp_path / "extra_model_paths.yaml"
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/fakecomfy/main.py"), "--listen", "127.0.0.1",
                             "--port", str(port), "--base-directory", str(root),
                             "--extra-model-paths-config", str(yaml)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"COMFY_HOST": f"127.0.0.1:{port}", "COMFY_DIR": str(root), "EXTRA_MODEL_PATHS": str(yaml),
           "COMFY_PID_FILE": str(tmp_path / "pid"), "COMFY_START_TIMEOUT_S": "20"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from wan_worker import handler as h
    h.worker.cache_clear()
    try:
        yield root
    finally:
        proc.terminate()
        proc.wait(10)
        h.worker.cache_clear()


def test_200_jobs_leave_nothing_behind_and_memory_stays_flat(comfy_process):
    for _ in range(20):  # warm-up: caches, pools, allocator arenas
        assert "video" in handler(job())
    before = _rss_bytes()
    for _ in range(180):
        assert "video" in handler(job())
    after = _rss_bytes()
    leftovers = files_under(comfy_process / "input", comfy_process / "output")
    assert leftovers == []
    assert after <= before * 1.10, (before, after)
