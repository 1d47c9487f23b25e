"""A plain ComfyUI client: ready check, upload, queue, follow the websocket, history, fetch.

It speaks ComfyUI's own protocol the way ComfyUI's websockets_api_example does: open the socket
with our client id, queue the prompt under a prompt id we chose, read messages until `executing`
with `node: null` for that prompt, then read `/history` for the outputs. It knows nothing of jobs:
the handler decides what a result means.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
import websocket
from urllib3.fields import RequestField
from urllib3.filepost import choose_boundary

from . import background
from .errors import (
    COMFY_UNAVAILABLE,
    EXECUTION_FAILED,
    NO_OUTPUT,
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
HEALTH_EVERY_S = 10.0  # a quiet socket this long: ask /system_stats whether ComfyUI still answers
HEALTH_TIMEOUT_S = 5.0
HEALTH_FAILURES = 2  # unanswered health checks in a row before the job is given up
INTERRUPT_GRACE_S = 5.0  # after /interrupt, how long to wait for ComfyUI to confirm
FORGET_WAIT_S = 2.0  # a prompt still ending when its job does: how long to wait before looking later
LATE_POLL_S = 5.0  # then: how often to look again for a prompt that outlived its job (a timeout's)
LATE_GIVE_UP_S = 3600.0  # and for how long
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

    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    outputs: list[OutputFile] = field(default_factory=list)  # what the job returns
    all_files: list[OutputFile] = field(default_factory=list)  # also previews: what to clean up
    queue_ms: float = 0.0
    execute_ms: float = 0.0


def _pid_alive(pid_file: str) -> tuple[bool, int | None]:
    """(alive, pid) of the process in the PID file; no file means nothing to judge by.

    In the container ComfyUI is a child of this process (entrypoint.sh execs the worker), so when
    it exits it lingers as a zombie that `kill -0` still finds: reap it, and count zombies as dead.
    """
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        return True, None
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False, pid
    except ChildProcessError:  # not our child: judge by the process table
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, pid
    except PermissionError:
        pass
    return not _is_zombie(pid), pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


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
        # ComfyUI is local: no proxy, .netrc or CA bundle from the environment applies to it. Looking
        # them up costs ~0.1 ms a request (requests walks all of os.environ for proxies each time;
        # 35 variables here, more in a container), and an HTTP_PROXY set for downloads would send
        # these requests to the proxy.
        self.session.trust_env = False
        # The cleanup after a job (wan_worker.background) runs while the next job uses `session`.
        self.after_jobs = requests.Session()
        self.after_jobs.trust_env = False
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

    def upload_image(self, name: str, data: bytes, mime_type: str = "image/png") -> str:
        """Put an image in ComfyUI's input folder; returns the name LoadImage must use."""
        body, content_type = multipart({"overwrite": "true"}, "image", name, data, mime_type)
        resp = self._ok(self._request("POST", "/upload/image", data=body, headers={"Content-Type": content_type}),
                        "image upload")
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

    def local_path(self, out: OutputFile) -> Path | None:
        """Where the file lies in ComfyUI's folder, when this worker shares it (the container)."""
        base = (Path(self.settings.comfy_dir) / out.type).resolve()
        path = (base / out.subfolder / out.filename).resolve()
        return path if path.is_relative_to(base) and path.is_file() else None

    def fetch(self, out: OutputFile, dest_dir: Callable[[], Path]) -> Path:
        """The saved file on local disk: in place when shared, else streamed from `/view` into
        `dest_dir()` (called only then, so a shared folder costs no temporary folder)."""
        local = self.local_path(out)
        if local is not None:
            return local
        params = {"filename": out.filename, "subfolder": out.subfolder, "type": out.type}
        resp = self._request("GET", "/view", params=params, stream=True)
        if resp.status_code == 404:
            raise WorkerError(NO_OUTPUT, f"ComfyUI reported the output {out.filename} but it is not in its "
                                         "output folder any more; send the job again.",
                              {"filename": out.filename, "subfolder": out.subfolder})
        self._ok(resp, f"fetching {out.filename}")
        dest = dest_dir() / f"{out.node_id}_{out.type}_{Path(out.filename).name}"
        with resp, dest.open("wb") as fh:
            for chunk in resp.iter_content(1024 * 1024):
                fh.write(chunk)
        return dest

    def cleanup(self, prompt_id: str | None, files: list[OutputFile], inputs: list[str]) -> None:
        """Remove a job's uploaded inputs and saved outputs from ComfyUI's folders; best effort.

        When the run ended early, the outputs come from /history (it keeps even failed prompts).
        """
        if prompt_id and not files:
            try:
                files = outputs_of(self.history(prompt_id), include_temp=True)
            except WorkerError:
                files = []
        folders = self._remove_files([OutputFile("", name, "", "input") for name in inputs] + list(files))
        # The files are gone now; their emptied folders and the prompt's history entry go right
        # after the result is handed back (an rmdir can cost milliseconds: see wan_worker.background).
        if folders:
            background.schedule(0.0, functools.partial(self._remove_folders, folders))
        if prompt_id:
            background.schedule(0.0, functools.partial(self.forget, prompt_id))

    def _remove_files(self, files: list[OutputFile]) -> dict[Path, Path]:
        """Unlink the files this worker can reach; returns their folders below ComfyUI's own."""
        folders: dict[Path, Path] = {}
        for out in files:
            path = self.local_path(out)
            if path is not None:
                path.unlink(missing_ok=True)
                folders[path.parent] = (Path(self.settings.comfy_dir) / out.type).resolve()
        return {f: base for f, base in folders.items() if f != base}

    def forget(self, prompt_id: str, late_since: float | None = None) -> None:
        """Delete the prompt from ComfyUI's history; best effort. ComfyUI keeps the last 10000
        prompts there, each with its whole graph and outputs, for a UI nobody opens in a worker:
        memory that grows with every job of a long-lived worker. Runs on the background thread, with
        its own session.

        A prompt that has not ended (an error's last moments, a timeout whose interrupt has not
        landed) writes its entry, and what it saves, after any delete: wait for it to end, and
        when it ends late, remove its files too."""
        try:
            if self._still_queued(prompt_id, FORGET_WAIT_S):
                started = late_since or time.monotonic()
                if time.monotonic() - started < LATE_GIVE_UP_S:
                    background.schedule(LATE_POLL_S, functools.partial(self.forget, prompt_id, started))
                else:
                    log.warning("prompt %s still runs in ComfyUI %.0f s after its job ended", prompt_id,
                                LATE_GIVE_UP_S)
                return
            if late_since is not None:
                entry = self.after_jobs.get(f"{self.base}/history/{prompt_id}", timeout=5).json().get(prompt_id, {})
                self._remove_folders(self._remove_files(outputs_of(entry, include_temp=True)))
                log.info("prompt %s ended %.0f s after its job; its files are removed",
                         prompt_id, time.monotonic() - late_since)
            self.after_jobs.post(f"{self.base}/history", json={"delete": [prompt_id]}, timeout=5)
        except (requests.RequestException, ValueError):
            log.debug("could not delete prompt %s from ComfyUI's history", prompt_id)

    def _still_queued(self, prompt_id: str, wait_s: float) -> bool:
        """Whether ComfyUI still runs (or holds) the prompt after up to `wait_s`; it leaves the
        queue as it writes the history entry."""
        until = time.monotonic() + wait_s
        while True:
            queue = self.after_jobs.get(f"{self.base}/queue", timeout=5).json()
            items = (queue.get("queue_running") or []) + (queue.get("queue_pending") or [])
            if not any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in items):
                return False
            if time.monotonic() >= until:
                return True
            time.sleep(POLL_S * 2)

    @classmethod
    def _remove_folders(cls, folders: dict[Path, Path]) -> None:
        for folder, base in folders.items():
            cls._remove_empty_parents(folder, base)

    @staticmethod
    def _remove_empty_parents(folder: Path, base: Path) -> None:
        """Remove the run's now-empty subfolders, never ComfyUI's own input/ or output/."""
        while folder != base and folder.is_relative_to(base):
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone
                return
            folder = folder.parent

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
            # skip_utf8_validation: websocket-client checks UTF-8 in pure Python (~0.3 us a byte);
            # recv() decodes text frames with bytes.decode("utf-8"), which checks it anyway.
            # Our own TCP socket: ComfyUI is local, but websocket-client (1.9) would send the
            # connection to an HTTP_PROXY set for downloads, even for 127.0.0.1.
            host, _, port = self.settings.comfy_host.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return websocket.create_connection(f"{self.settings.comfy_ws_url}?clientId={self.client_id}",
                                               timeout=10, skip_utf8_validation=True, socket=sock)
        except (OSError, websocket.WebSocketException) as exc:
            self._ready = False
            self.check_process()
            raise _unavailable(f"its websocket did not open ({type(exc).__name__})") from None

    def run(self, run: Run, graph: dict[str, Any], deadline: float,
            on_event: Callable[[Event], None] | None = None) -> Run:
        """Queue the graph under `run.prompt_id` and follow it to the end; fills in its files."""
        follow = _Follow(self, run.prompt_id, deadline, on_event)  # socket open before queueing
        try:
            t0 = time.perf_counter()
            self.queue(graph, run.prompt_id)
            t1 = time.perf_counter()
            follow.until_done()
            run.queue_ms, run.execute_ms = (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000
        finally:
            follow.close()
        entry = self.history(run.prompt_id)
        run.outputs, run.all_files = outputs_of(entry), outputs_of(entry, include_temp=True)
        return run

    def healthy(self) -> bool:
        """Does ComfyUI still answer? Used while a job is quiet, to tell a hang from a long step."""
        self.check_process()
        try:
            return self.session.get(f"{self.base}/system_stats", timeout=HEALTH_TIMEOUT_S).ok
        except requests.RequestException:
            return False


class _Follow:
    """Reads one prompt's websocket messages until ComfyUI says it is over.

    Survives a dropped socket (reconnects with the same client id, then asks /history whether the
    prompt finished meanwhile), notices a dead or hung ComfyUI while the socket is quiet, and at
    the deadline interrupts the prompt and waits briefly for ComfyUI to confirm.
    """

    def __init__(self, client: ComfyClient, prompt_id: str, deadline: float,
                 on_event: Callable[[Event], None] | None) -> None:
        self.client, self.prompt_id, self.deadline, self.on_event = client, prompt_id, deadline, on_event
        self.ws = client.connect()
        self.failure: Event | None = None
        self.last_heard = time.monotonic()
        self.unanswered = 0

    def close(self) -> None:
        self.ws.close()

    def until_done(self) -> None:
        while not self._handle(self._next()):
            pass
        if self.failure is not None:
            raise execution_failed(self.failure)

    def _handle(self, event: Event | None) -> bool:
        """Take one event; True when the prompt is over."""
        if event is None:
            return False
        data = event.get("data") or {}
        if data.get("prompt_id") != self.prompt_id:
            return False
        if self.on_event:
            self.on_event(event)
        if event.get("type") in ("execution_error", "execution_interrupted"):
            self.failure = event
        return event.get("type") == "executing" and data.get("node") is None

    def _next(self) -> Event | None:
        """One JSON message, or None for a binary preview or a quiet second."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._stop_for_timeout()
        self.ws.settimeout(min(remaining, 1.0))
        try:
            message = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            self._check_quiet_comfy()
            return None
        except (OSError, websocket.WebSocketException) as exc:
            return self._reconnect(type(exc).__name__)
        if not message:  # a close frame: the server ended the connection
            return self._reconnect("closed by ComfyUI")
        self.last_heard = time.monotonic()
        if isinstance(message, bytes):
            return None
        return json.loads(message)

    def _check_quiet_comfy(self) -> None:
        self.client.check_process()
        if time.monotonic() - self.last_heard < HEALTH_EVERY_S:
            return
        self.last_heard = time.monotonic()
        self.unanswered = 0 if self.client.healthy() else self.unanswered + 1
        if self.unanswered >= HEALTH_FAILURES:
            raise _unavailable("it stopped answering in the middle of the job", prompt_id=self.prompt_id)

    def _reconnect(self, why: str) -> Event | None:
        """The socket dropped: open a new one, then learn from /history whether we missed the end."""
        settings = self.client.settings
        self.ws.close()
        log.warning("websocket closed mid-job (%s); reconnecting", why)
        for attempt in range(1, settings.websocket_reconnect_attempts + 1):
            self.client.check_process()
            time.sleep(min(settings.websocket_reconnect_delay_s, max(0.0, self.deadline - time.monotonic())))
            try:
                self.ws = self.client.connect()
            except WorkerError:
                log.warning("reconnect %d/%d failed", attempt, settings.websocket_reconnect_attempts)
                continue
            self.last_heard = time.monotonic()
            return self._missed_end()
        raise _unavailable(f"its websocket closed mid-job and {settings.websocket_reconnect_attempts} "
                           "reconnects failed (WEBSOCKET_RECONNECT_ATTEMPTS)", prompt_id=self.prompt_id)

    def _missed_end(self) -> Event | None:
        """If the prompt ended while we were away, the event that ends it (from /history)."""
        status = (self.client.history(self.prompt_id).get("status") or {})
        if not status.get("completed") and status.get("status_str") != "error":
            return None
        for kind, data in status.get("messages") or []:
            if kind in ("execution_error", "execution_interrupted"):
                self.failure = {"type": kind, "data": data}
        return {"type": "executing", "data": {"node": None, "prompt_id": self.prompt_id}}

    def _stop_for_timeout(self) -> None:
        """Interrupt our prompt, give ComfyUI a moment to confirm, then report the timeout."""
        self.client.interrupt(self.prompt_id)
        grace = time.monotonic() + INTERRUPT_GRACE_S
        try:
            while time.monotonic() < grace:
                self.ws.settimeout(max(0.05, grace - time.monotonic()))
                try:
                    message = self.ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if isinstance(message, str) and self._handle(json.loads(message)):
                    break
        except (OSError, websocket.WebSocketException):
            pass
        raise WorkerError(TIMEOUT, "The job ran past its time limit and was stopped; lower `length`, "
                                   "`steps` or the size, or raise `timeout_s`/JOB_TIMEOUT_S.",
                          {"prompt_id": self.prompt_id})


class Pieces:
    """A request body sent piece by piece with a known length (a Content-Length, not chunked):
    requests and urllib3 hand each piece to the socket as it is."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)

    def __len__(self) -> int:
        return sum(len(p) for p in self.pieces)


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes,
              mime_type: str) -> tuple[Pieces, str]:
    """The multipart/form-data body requests' `files=` sends (the same parts and headers, from
    urllib3's own field rendering), without copying `data` into it: requests builds the body in
    one buffer, one more copy of a large input alive during the upload (1.1x a 10 MB MP4, and a
    few ms of copying). Returns the body and its Content-Type."""
    boundary = choose_boundary()
    head = ""
    for key, value in fields.items():
        part = RequestField.from_tuples(key, value)
        head += f"--{boundary}\r\n{part.render_headers()}{value}\r\n"
    upload = RequestField(name=file_field, data=b"", filename=filename)
    upload.make_multipart(content_type=mime_type)
    head += f"--{boundary}\r\n{upload.render_headers()}"
    tail = f"\r\n--{boundary}--\r\n"
    return Pieces([head.encode("utf-8"), data, tail.encode("utf-8")]), f"multipart/form-data; boundary={boundary}"


def outputs_of(history_entry: dict[str, Any], include_temp: bool = False) -> list[OutputFile]:
    """Every saved file in a `/history` entry; previews (type temp) only when asked for."""
    found = []
    for node_id, node_out in (history_entry.get("outputs") or {}).items():
        animated = bool(any(node_out.get("animated") or []))
        for key in OUTPUT_KEYS:
            for item in node_out.get(key) or []:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                if item.get("type") == "temp" and not include_temp:
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
