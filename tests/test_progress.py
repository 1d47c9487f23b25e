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
    """A hand-driven clock and timer: `advance` fires the timers that fall due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list] = []  # [due, fn, cancelled]

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay, fn):
        timer = [self.now + delay, fn, False]
        self.timers.append(timer)
        return lambda: timer.__setitem__(2, True)

    def advance(self, to: float) -> None:
        for timer in sorted(self.timers, key=lambda t: t[0]):
            if timer[0] <= to and not timer[2]:
                self.now = timer[0]
                timer[2] = True
                timer[1]()
        self.now = to


def events(node: str, steps: int) -> list[dict]:
    out = [{"type": "executing", "data": {"node": node, "prompt_id": "p"}}]
    out += [{"type": "progress", "data": {"value": i, "max": steps, "node": node, "prompt_id": "p"}}
            for i in range(1, steps + 1)]
    return out


def progress_with(clock: Clock, sent: list, times: list | None = None, **kw) -> Progress:
    def send(update):
        sent.append(update)
        if times is not None:
            times.append(clock.now)
    return Progress(send, clock=clock, schedule=clock.schedule, **kw)


def test_phases_steps_and_percent():
    sent, clock = [], Clock()
    p = progress_with(clock, sent, phases={"86": "sampling_high", "85": "sampling_low", "87": "decoding"},
                      interval_s=0)
    p.phase("loading_models")
    for e in events("95", 0) + events("86", 2) + events("96", 0) + events("85", 2) + events("87", 0):
        p.on_event(e)
    assert sent[0] == {"phase": "loading_models", "percent": 5}  # after downloading_loras (0-5)
    assert {"phase": "sampling_high", "step": 1, "steps": 2, "percent": 30} in sent
    assert {"phase": "sampling_low", "step": 2, "steps": 2, "percent": 90} in sent
    assert sent[-1] == {"phase": "decoding", "percent": 90}
    percents = [s["percent"] for s in sent]
    assert percents == sorted(percents)  # node 96 (a loader) did not send it back to 0 %


def test_at_most_one_update_a_second():
    sent, times, clock = [], [], Clock()
    p = progress_with(clock, sent, times, phases={"86": "sampling_high"})
    for i, e in enumerate(events("86", 40)):
        clock.advance(i * 0.1)  # ten events a second for four seconds
        p.on_event(e)
    clock.advance(10)
    assert 4 <= len(sent) <= 6
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:]))
    assert sent[-1]["step"] == 40  # the last state was not lost to the throttle


def test_a_pending_state_goes_out_within_the_interval():
    """A phase that starts right after an update is sent by the timer, not at the next event,
    which on a GPU may be half a minute away."""
    sent, times, clock = [], [], Clock()
    p = progress_with(clock, sent, times, phases={"86": "sampling_high"})
    p.phase("loading_models")
    clock.advance(0.2)
    p.on_event(events("86", 1)[0])
    assert [s["phase"] for s in sent] == ["loading_models"]
    clock.advance(1.0)
    assert [s["phase"] for s in sent] == ["loading_models", "sampling_high"] and times[-1] == 1.0


def test_nothing_is_sent_after_the_job():
    sent, clock = [], Clock()
    with progress_with(clock, sent) as p:
        p.phase("loading_models")
        p.phase("uploading")
    clock.advance(5)
    assert [s["phase"] for s in sent] == ["loading_models"]


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


def test_preprocessing_frames_come_before_everything_else():
    sent, clock = [], Clock()
    p = progress_with(clock, sent, interval_s=0)
    for done in range(1, 5):
        p.preprocessing(done, 4)  # the callback wan_worker.preprocess.preprocess() calls per frame
    p.phase("downloading_loras", bytes=10)
    p.phase("loading_models")
    assert sent[0] == {"phase": "preprocessing", "frame": 1, "frames": 4, "percent": 1}
    assert sent[3] == {"phase": "preprocessing", "frame": 4, "frames": 4, "percent": 4}
    percents = [s["percent"] for s in sent]
    assert percents == sorted(percents) and sent[-1]["phase"] == "loading_models"
