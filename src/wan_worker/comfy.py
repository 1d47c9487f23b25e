"""A plain ComfyUI client: ready check, upload, queue, follow the websocket, history, fetch.

It speaks ComfyUI's own protocol the way ComfyUI's websockets_api_example does: open the socket
with our client id, queue the prompt under a prompt id we chose, read messages until `executing`
with `node: null` for that prompt, then read `/history` for the outputs. It knows nothing of jobs:
the handler decides what a result means.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
import websocket

from .errors import (
    COMFY_UNAVAILABLE,
    EXECUTION_FAILED,
    OUT_OF_MEMORY,
    TIMEOUT,
    WORKFLOW_REJECTED,
    WorkerError,
)
from .settings import Settings

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif")
OUTPUT_KEYS = ("images", "gifs", "videos")  # core nodes use `images`; custom video nodes the others
POLL_S = 0.05
HTTP_TIMEOUT_S = 30.0
OOM_MARKERS = ("OutOfMemoryError", "out of memory", "Allocation on device")

Event = dict[str, Any]


@dataclass(frozen=True)
class OutputFile:
    """One file a node saved, as `/history` reports it."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    animated: bool = False

    @property
    def is_video(self) -> bool:
        return self.animated or self.filename.lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class Run:
    """What happened to one queued prompt."""

    prompt_id: str
    outputs: list[OutputFile] = field(default_factory=list)
    queue_ms: float = 0.0
    execute_ms: float = 0.0


def _pid_alive(pid_file: str) -> tuple[bool, int | None]:
    """(alive, pid) of the process in the PID file; no file means nothing to judge by."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return True, None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, pid
    except PermissionError:
        pass
    return True, pid


def _unavailable(why: str, **details: Any) -> WorkerError:
    return WorkerError(
        COMFY_UNAVAILABLE,
        f"ComfyUI is not available: {why}. Check the worker's log lines from ComfyUI; "
        "the worker will be replaced if it keeps failing.",
        details,
    )


class ComfyClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.comfy_url
        self.session = requests.Session()
        self.client_id = str(uuid.uuid4())
        self._ready = False

    # -- readiness -------------------------------------------------------------------------
    def check_process(self) -> None:
        alive, pid = _pid_alive(self.settings.comfy_pid_file)
        if not alive:
            self._ready = False
            raise _unavailable(f"its process (pid {pid}) has exited", pid=pid)

    def wait_until_ready(self) -> None:
        """Poll `/system_stats` until ComfyUI answers; fail at once if its process is gone."""
        self.check_process()
        if self._ready:
            return
        limit = self.settings.comfy_start_timeout_s
        deadline = time.monotonic() + limit
        while True:
            try:
                if self.session.get(f"{self.base}/system_stats", timeout=5).ok:
                    self._ready = True
                    return
            except requests.RequestException:
                pass
            self.check_process()
            if time.monotonic() >= deadline:
                raise _unavailable(f"it did not answer at {self.settings.comfy_host} within {limit:g} s "
                                   "(COMFY_START_TIMEOUT_S)", host=self.settings.comfy_host)
            time.sleep(POLL_S)

    # -- HTTP ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        try:
            return self.session.request(method, f"{self.base}{path}", **kwargs)
        except requests.RequestException as exc:
            self._ready = False
            self.check_process()
            raise _unavailable(f"{method} {path} failed ({type(exc).__name__})", path=path) from None

    def _ok(self, resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code != 200:
            raise _unavailable(f"{what} answered HTTP {resp.status_code}", status=resp.status_code)
        return resp

    def upload_image(self, name: str, data: bytes) -> str:
        """Put an image in ComfyUI's input folder; returns the name LoadImage must use."""
        resp = self._ok(self._request("POST", "/upload/image", files={"image": (name, data, "image/png")},
                                      data={"overwrite": "true"}), "image upload")
        body = resp.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    def queue(self, graph: dict[str, Any], prompt_id: str) -> None:
        resp = self._request("POST", "/prompt",
                             json={"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id})
        if resp.status_code == 400:
            raise rejected(resp.json())
        body = self._ok(resp, "queueing the prompt").json()
        if body.get("node_errors"):
            # ComfyUI queues a graph when at least one output is valid and silently drops the
            # others; a job must not lose outputs silently, so take it back and say why.
            self.interrupt(prompt_id)
            raise rejected(body)

    def history(self, prompt_id: str) -> dict[str, Any]:
        body = self._ok(self._request("GET", f"/history/{prompt_id}"), "history").json()
        return body.get(prompt_id, {})

    def fetch(self, out: OutputFile) -> bytes:
        params = {"filename": out.filename, "subfolder": out.subfolder, "type": out.type}
        return self._ok(self._request("GET", "/view", params=params), f"fetching {out.filename}").content

    def interrupt(self, prompt_id: str) -> None:
        """Stop our prompt whether it is running or still waiting in the queue; best effort."""
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            try:
                self.session.post(f"{self.base}{path}", json=body, timeout=5)
            except requests.RequestException:
                log.warning("could not send %s for prompt %s", path, prompt_id)

    # -- one prompt, start to end ------------------------------------------------------------
    def connect(self) -> websocket.WebSocket:
        try:
            return websocket.create_connection(f"{self.settings.comfy_ws_url}?clientId={self.client_id}",
                                               timeout=10)
        except (OSError, websocket.WebSocketException) as exc:
            self._ready = False
            self.check_process()
            raise _unavailable(f"its websocket did not open ({type(exc).__name__})") from None

    def run(self, graph: dict[str, Any], deadline: float,
            on_event: Callable[[Event], None] | None = None) -> Run:
        """Queue the graph and follow it to the end; returns its saved files."""
        run = Run(prompt_id=str(uuid.uuid4()))
        ws = self.connect()  # before queueing, so no message of ours is missed
        try:
            t0 = time.perf_counter()
            self.queue(graph, run.prompt_id)
            t1 = time.perf_counter()
            self._follow(ws, run.prompt_id, deadline, on_event)
            run.queue_ms, run.execute_ms = (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000
        finally:
            ws.close()
        run.outputs = outputs_of(self.history(run.prompt_id))
        return run

    def _follow(self, ws: websocket.WebSocket, prompt_id: str, deadline: float,
                on_event: Callable[[Event], None] | None) -> None:
        failure: Event | None = None
        while True:
            event = self._next_event(ws, prompt_id, deadline)
            if event is None:
                continue
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if on_event:
                on_event(event)
            if kind in ("execution_error", "execution_interrupted"):
                failure = event
            elif kind == "executing" and data.get("node") is None:
                break
        if failure is not None:
            raise execution_failed(failure)

    def _next_event(self, ws: websocket.WebSocket, prompt_id: str, deadline: float) -> Event | None:
        """One JSON message, or None for a binary preview or a quiet second; enforces the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.interrupt(prompt_id)
            raise WorkerError(TIMEOUT, "The job ran past its time limit and was stopped; lower `length`, "
                                       "`steps` or the size, or raise JOB_TIMEOUT_S.",
                              {"prompt_id": prompt_id})
        ws.settimeout(min(remaining, 1.0))
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            self.check_process()
            return None
        except (OSError, websocket.WebSocketException) as exc:
            self._ready = False
            self.check_process()
            raise _unavailable(f"its websocket closed mid-job ({type(exc).__name__})",
                               prompt_id=prompt_id) from None
        if isinstance(message, bytes):
            return None
        return json.loads(message)


def outputs_of(history_entry: dict[str, Any]) -> list[OutputFile]:
    """Every saved file in a `/history` entry; previews (type temp) are left out."""
    found = []
    for node_id, node_out in (history_entry.get("outputs") or {}).items():
        animated = bool(any(node_out.get("animated") or []))
        for key in OUTPUT_KEYS:
            for item in node_out.get(key) or []:
                if not isinstance(item, dict) or "filename" not in item or item.get("type") == "temp":
                    continue
                found.append(OutputFile(str(node_id), item["filename"], item.get("subfolder", ""),
                                        item.get("type", "output"), animated or key != "images"))
    return found


def rejected(body: dict[str, Any]) -> WorkerError:
    """A 400 from `POST /prompt`: ComfyUI's node_errors, one entry per node and input."""
    error = body.get("error") or {}
    problems = []
    for node_id, node in (body.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            problems.append({
                "node_id": node_id, "class_type": node.get("class_type"),
                "input": (e.get("extra_info") or {}).get("input_name"),
                "type": e.get("type"), "message": e.get("message"), "details": e.get("details"),
            })
    if problems:
        first = problems[0]
        where = f"node {first['node_id']} ({first['class_type']})"
        if first["input"]:
            where += f" input `{first['input']}`"
        what = f"{first['message']}: {first['details']}" if first["details"] else first["message"]
        more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    else:
        where = "the workflow"
        what = error.get("message", "rejected")
        if error.get("details"):
            what += f" ({error['details']})"
        more = ""
    return WorkerError(
        WORKFLOW_REJECTED,
        f"ComfyUI rejected {where}: {what}{more}. Fix the workflow or the value and resend.",
        {"type": error.get("type"), "node_errors": problems},
    )


def execution_failed(event: Event) -> WorkerError:
    """An `execution_error` (or interrupt) message as our error; the traceback stays in the log."""
    data = event["data"]
    details = {k: data.get(k) for k in ("prompt_id", "node_id", "node_type", "exception_type",
                                         "exception_message")}
    if event["type"] == "execution_interrupted":
        return WorkerError(EXECUTION_FAILED, f"ComfyUI interrupted the job in node {data.get('node_id')} "
                                             f"({data.get('node_type')}); send it again.", details)
    if data.get("traceback"):
        log.error("ComfyUI traceback for node %s:\n%s", data.get("node_id"), "".join(data["traceback"]))
    exc_type = str(data.get("exception_type") or "")
    exc_msg = str(data.get("exception_message") or "").strip()
    if any(m in exc_type or m in exc_msg for m in OOM_MARKERS):
        return WorkerError(OUT_OF_MEMORY, f"The GPU ran out of memory in node {data.get('node_id')} "
                                          f"({data.get('node_type')}); use a smaller width/height or "
                                          "length, or a GPU with more memory.", details)
    short = exc_msg if len(exc_msg) <= 300 else exc_msg[:297] + "..."
    return WorkerError(EXECUTION_FAILED, f"ComfyUI failed in node {data.get('node_id')} "
                                         f"({data.get('node_type')}): {exc_type.rsplit('.', 1)[-1]}: {short}",
                       details)
