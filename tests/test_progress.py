"""Progress updates: phases and steps from ComfyUI's events, throttled, sent through the real SDK."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import png_b64
from tests.test_cli import REPO
from wan_worker.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def events(node: str, steps: int) -> list[dict]:
    out = [{"type": "executing", "data": {"node": node, "prompt_id": "p"}}]
    out += [{"type": "progress", "data": {"value": i, "max": steps, "node": node, "prompt_id": "p"}}
            for i in range(1, steps + 1)]
    return out


def test_phases_steps_and_percent():
    sent, clock = [], Clock()
    p = Progress(sent.append, phases={"86": "sampling_high", "85": "sampling_low", "87": "decoding"},
                 interval_s=0, clock=clock)
    p.phase("loading_models")
    for e in events("95", 0) + events("86", 2) + events("96", 0) + events("85", 2) + events("87", 0):
        p.on_event(e)
    assert sent[0] == {"phase": "loading_models", "percent": 0}
    assert {"phase": "sampling_high", "step": 1, "steps": 2, "percent": 30} in sent
    assert {"phase": "sampling_low", "step": 2, "steps": 2, "percent": 90} in sent
    assert sent[-1] == {"phase": "decoding", "percent": 90}
    percents = [s["percent"] for s in sent]
    assert percents == sorted(percents)


def test_steps_are_throttled_to_one_update_a_second():
    sent, times, clock = [], [], Clock()
    p = Progress(lambda s: (sent.append(s), times.append(clock.now)), phases={"86": "sampling_high"},
                 clock=clock)
    for i, e in enumerate(events("86", 40)):
        clock.now = i * 0.1  # ten events a second for four seconds
        p.on_event(e)
    assert 4 <= len(sent) <= 5
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:]))


def test_a_new_phase_is_sent_at_once():
    sent, clock = [], Clock()
    p = Progress(sent.append, phases={"86": "sampling_high", "85": "sampling_low"}, clock=clock)
    for e in events("86", 2) + events("85", 2):  # all within the same instant
        p.on_event(e)
    assert [s["phase"] for s in sent] == ["sampling_high", "sampling_low"]


def test_a_failing_sender_never_fails_the_job():
    def boom(_):
        raise RuntimeError("network down")
    Progress(boom, interval_s=0).phase("uploading")  # no exception


class Recorder(BaseHTTPRequestHandler):
    posts: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.posts.append(json.loads(body or b"null"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_progress_reaches_runpod_through_the_real_sdk(worker_env, fake):
    """With RunPod's job-output webhook set, the SDK's progress_update posts our updates."""
    fake.step_delay = 0.4  # 4 steps per sampler, 1.6 s each: a few seconds of sampling
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.posts = []
    try:
        env = {**os.environ, **worker_env, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
               "RUNPOD_WEBHOOK_POST_OUTPUT": f"http://127.0.0.1:{server.server_port}/job-done/$ID"}
        job = {"input": {"image": png_b64(), "prompt": "sparks fly", "seed": 1, "steps": 8}}
        proc = subprocess.run([sys.executable, "-m", "wan_worker", "--test_input", json.dumps(job)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    updates = [p["output"] for p in Recorder.posts if p and p.get("status") == "IN_PROGRESS"]
    phases = [u["phase"] for u in updates]
    assert phases[0] == "loading_models"
    assert "sampling_high" in phases and "sampling_low" in phases
    assert any("step" in u and u["steps"] == 4 for u in updates)  # each expert runs 4 of the 8
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents), updates  # never backwards
    assert len(updates) <= 10  # six phases and about one step update a second, not one per event
