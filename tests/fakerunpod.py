"""A stand-in for RunPod's hosted queue API (https://api.runpod.ai/v2/<endpoint id>/...) on 127.0.0.1.

It answers as RunPod documents its queue endpoints:
- `POST /v2/<id>/run` -> `{"id": ..., "status": "IN_QUEUE"}`
- `GET|POST /v2/<id>/status/<job>` -> `{"id", "status"}` plus, while IN_PROGRESS, the worker's
  latest progress update as `output`; when COMPLETED `output`, `delayTime`, `executionTime`,
  `workerId`; when FAILED `error` at the top level and the rest of the worker's result as `output`
- `POST /v2/<id>/cancel/<job>` -> `{"id", "status": "CANCELLED"}` (the job stays cancelled)
- `GET|POST /v2/<id>/stream/<job>` -> `{"status", "stream": [{"output": ...}]}`, each chunk handed
  out once (a worker that is not a generator has one chunk, its result, when it ends)
- `GET /v2/<id>/health`; `Authorization: Bearer <key>` checked on every route (401 otherwise);
  an unknown endpoint id or job is 404.
Plus `GET /files/<name>`: plain file downloads without auth, standing in for a bucket URL.

A job's life is a *script*: the list of /status answers it gives, one per /status call, the last
one repeating. `script_for(job_id, input)` makes it; the default is a worker that queues twice,
reports each phase and step, and completes with tests/fixtures/success.mp4 as base64. Faults for
the retry tests: `fail(status, count, path_part, retry_after)` answers with an HTTP error, `drop(count,
path_part)` closes the connection without an answer.

    with FakeRunPod() as rp:      # rp.base_url -> RUNPOD_ENDPOINT_BASE_URL, rp.endpoint_id, rp.api_key
        ...; rp.requests, rp.jobs
"""
from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

FIXTURES = Path(__file__).parent / "fixtures"
MP4 = (FIXTURES / "success.mp4").read_bytes()
# The control videos an Animate job returns with return_preprocessed (stand-in bytes, one per key)
PREPROCESSED = {"pose_video": MP4 + b"pose", "face_video": MP4 + b"face"}
API_KEY = "rp_test_key_0123456789"
ENDPOINT_ID = "wan123abc"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}

Script = list[dict[str, Any]]


def png_bytes(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 18), color).save(buf, "PNG")
    return buf.getvalue()


def progress_steps() -> Script:
    """What our worker's progress updates look like in /status, phase by phase."""
    updates = [{"phase": "loading_models", "percent": 0},
               {"phase": "sampling_high", "step": 1, "steps": 2, "percent": 30},
               {"phase": "sampling_high", "step": 2, "steps": 2, "percent": 50},
               {"phase": "sampling_low", "step": 1, "steps": 2, "percent": 70},
               {"phase": "sampling_low", "step": 2, "steps": 2, "percent": 90},
               {"phase": "decoding", "percent": 90},
               {"phase": "encoding", "percent": 97},
               {"phase": "uploading", "percent": 98}]
    return [{"status": "IN_PROGRESS", "output": u} for u in updates]


def success_output(job_id: str, job_input: dict[str, Any], video_url: str | None = None,
                   last_frame_url: str | None = None, preprocessed_urls: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    """A successful I2V result as the worker returns it (an Animate job's pose and face videos too,
    with return_preprocessed: base64, or `<key>_url` from `preprocessed_urls`)."""
    out: dict[str, Any] = {"mime_type": "video/mp4", "filename": f"wan_{job_id}_00001_.mp4", "bytes": len(MP4)}
    if video_url:
        out["video_url"] = video_url
    else:
        out["video"] = base64.b64encode(MP4).decode()
    if job_input.get("return_last_frame"):
        if last_frame_url:
            out["last_frame_url"] = last_frame_url
        else:
            out["last_frame"] = base64.b64encode(png_bytes()).decode()
    if job_input.get("return_preprocessed"):
        for key, data in PREPROCESSED.items():
            if preprocessed_urls:
                out[f"{key}_url"] = preprocessed_urls[key]
            else:
                out[key] = base64.b64encode(data).decode()
    length, fps = job_input.get("length", 81), job_input.get("fps", 16.0)
    out.update(seed=job_input.get("seed", 42), width=848, height=480, length=length, fps=fps,
               duration_s=round(length / fps, 3), prompt_id="p-" + job_id[:8],
               timings_ms={"validate": 2.0, "image": 30.0, "upload": 5.0, "queue": 3.0, "execute": 61234.5,
                           "deliver": 20.0, "total": 61300.0})
    return out


def worker_script(job_id: str, job_input: dict[str, Any]) -> Script:
    """The default: two polls in the queue, a worker that picks it up, every phase, the MP4."""
    done = {"status": "COMPLETED", "output": success_output(job_id, job_input),
            "delayTime": 2150, "executionTime": 61400, "workerId": "w-test"}
    return [{"status": "IN_QUEUE"}, {"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"},
            *progress_steps(), done]


def failed_script(error_code: str, error: str, details: dict[str, Any] | None = None) -> Script:
    """A job the worker failed: RunPod keeps `error` on top and the rest as `output`."""
    return [{"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"},
            {"status": "FAILED", "error": error, "output": {"error_code": error_code, "details": details or {}},
             "delayTime": 900, "executionTime": 1200, "workerId": "w-test"}]


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    json: Any


@dataclass
class FakeJob:
    id: str
    input: dict[str, Any]
    script: Script
    position: int = 0
    cancelled: bool = False
    streamed: bool = False
    created: float = field(default_factory=time.monotonic)
    started: float | None = None

    def current(self) -> dict[str, Any]:
        if self.cancelled:
            return {"status": "CANCELLED"}
        return self.script[min(self.position, len(self.script) - 1)]

    def advance(self) -> dict[str, Any]:
        """The next /status answer. A final answer without RunPod's timings gets the real ones:
        delayTime from /run to the first IN_PROGRESS, executionTime from there on."""
        body = dict(self.current())
        self.position += 1
        now = time.monotonic()
        if body["status"] == "IN_PROGRESS" and self.started is None:
            self.started = now
        if body["status"] in FINAL and "delayTime" not in body:
            started = self.started if self.started is not None else now
            body.update(delayTime=round((started - self.created) * 1000), executionTime=round((now - started) * 1000))
        return body


@dataclass
class Fault:
    kind: str  # "status" or "drop"
    count: int
    path_part: str
    status: int = 503
    retry_after: str | None = None


@dataclass
class FakeRunPod:
    api_key: str = API_KEY
    endpoint_id: str = ENDPOINT_ID
    script_for: Callable[[str, dict[str, Any]], Script] = worker_script
    requests: list[Recorded] = field(default_factory=list)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> "FakeRunPod":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "FakeRunPod":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """What RUNPOD_ENDPOINT_BASE_URL points at (the real one is https://api.runpod.ai/v2)."""
        return f"{self.url}/v2"

    # -- test controls -------------------------------------------------------------------------
    def fail(self, status: int = 503, count: int = 1, path_part: str = "", retry_after: str | None = None) -> None:
        with self.lock:
            self.faults.append(Fault("status", count, path_part, status, retry_after))

    def drop(self, count: int = 1, path_part: str = "") -> None:
        with self.lock:
            self.faults.append(Fault("drop", count, path_part))

    def serve_file(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def paths(self, method: str | None = None) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.path_part in path:
                    fault.count -= 1
                    return fault
        return None

    # -- the API -------------------------------------------------------------------------------
    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        m = re.fullmatch(r"/v2/([^/]+)/(run|runsync|status|cancel|stream|health)(?:/([^/]+))?", path)
        if not m:
            return 404, {"error": "not found"}
        endpoint, action, job_id = m.groups()
        if endpoint != self.endpoint_id:
            return 404, {"error": f"endpoint {endpoint} not found"}
        if action in ("run", "runsync") and method == "POST":
            return self._run(body, action == "runsync")
        if action == "health":
            return 200, {"jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
                         "workers": {"idle": 1, "running": 0}}
        with self.lock:
            job = self.jobs.get(job_id or "")
            if job is None:
                return 404, {"error": "request does not exist"}
            if action == "cancel" and method == "POST":
                if job.current()["status"] not in FINAL:
                    job.cancelled = True
                return 200, {"id": job.id, "status": job.current()["status"]}
            if action == "status":
                return 200, {"id": job.id, **job.advance()}
            if action == "stream":
                state = job.advance()
                chunks = []
                if state["status"] == "COMPLETED" and not job.streamed:  # each chunk is handed out once
                    chunks, job.streamed = [{"output": state["output"]}], True
                return 200, {"status": state["status"], "stream": chunks}
        return 405, {"error": "method not allowed"}

    def _run(self, body: Any, sync: bool) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return 400, {"error": "the body needs an input object"}
        job_id = f"{uuid.uuid4()}-u1"
        job = FakeJob(job_id, body["input"], self.script_for(job_id, body["input"]))
        with self.lock:
            self.jobs[job_id] = job
            if sync:
                job.position = len(job.script) - 1
                return 200, {"id": job_id, **job.current()}
        return 200, {"id": job_id, "status": "IN_QUEUE"}


def _handler_for(fake: FakeRunPod) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            with fake.lock:
                fake.requests.append(Recorded(method, path, self.headers.get("Authorization"), body))
            fault = fake.take_fault(path)
            if fault is not None and fault.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(2)  # no answer at all, as when a proxy cuts the line
                return
            if fault is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return self._send(fault.status, {"error": "service unavailable"}, headers)
            if path.startswith("/files/"):
                return self._send_file(path.removeprefix("/files/"))
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._send(401, {"error": "Unauthorized"})
            status, answer = fake.answer(method, path, body)
            self._send(status, answer)

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_file(self, name: str) -> None:
            data = fake.files.get(name)
            if data is None:
                return self._send(404, {"error": "no such file"})
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
