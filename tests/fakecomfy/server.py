"""A stand-in for a ComfyUI 0.3.64 server, faithful to recordings of the real one, for tests.

No GPU and no ComfyUI exist in the test environment, so the worker talks to this aiohttp server
instead: same routes, bodies, status codes and websocket messages (types, fields and order) as the
real server, node schemas from a real `GET /object_info` (tests/fixtures/object_info.json), and
validation errors byte for byte like ComfyUI's (see validate.py). "Running" a graph walks its nodes
in ComfyUI's execution order, sends the same messages, and writes real files for the save nodes
(SaveVideo writes tests/fixtures/success.mp4, a real h264 MP4). Identical graphs are served from
a cache as ComfyUI does (`execution_cached`, no per-node `executing`, the same output file again).

Usage::

    from tests.fakecomfy import FakeComfy
    with FakeComfy(root_dir=tmp_path) as fake:      # root/input, root/output, root/temp
        fake.host, fake.url, fake.input_dir, fake.output_dir
        fake.fail_on(class_type="UNETLoader", exception_type="torch.OutOfMemoryError",
                     exception_message="Allocation on device")
        ...                                          # drive the worker against fake.url
        fake.requests, fake.prompts, fake.uploads, fake.ws_messages, fake.history()

`FakeComfy(root_dir, ...)`, `.start(boot_delay=0.0)`, `.stop()`, `.host`, `.url`, `.port`,
`.input_dir`, `.output_dir`, `.temp_dir`, `.requests`, `.reset()`; also a context manager.

Misbehaviour, settable from the test thread at any time (a node rule names a `class_type` and/or a
`node_id`; with neither it hits every node; `times=None` means every time). Rules act only on nodes
that really execute, not on nodes served from the cache (see `clear_cache()`, `cache=False`):
- `fail_on(class_type, node_id, exception_type=..., exception_message=..., times=None)`: the node
  raises; `execution_error` with ComfyUI's fields, history status "error", outputs `{}`. As ComfyUI
  does, "\\n" (and for an OutOfMemoryError its TIPS text) is appended to the message.
- `stall_on(class_type, node_id, times=None)`: the node runs until `POST /interrupt` (then
  `execution_interrupted`), `reset()` (then it finishes normally) or the server stops.
- `delay_on(seconds, class_type, node_id)`: each matching node takes that long (interruptible).
- `die_on(class_type, node_id)`: when the node starts, the server dies: it stops listening and cuts
  every connection without a close frame, like a crashed process. `kill()` does it at once.
  `start()` brings it back on the same port with empty queue, history and cache (files stay).
- `drop_websocket(times=1, abrupt=False)`: while a job runs, the next job message for a client
  closes that client's websocket instead (the message is lost); `times=None` keeps doing it, so
  every reconnect during a job is dropped too, up to and including the final `executing` null.
- `http_errors(status=500, count=None, paths=None)`: answer matching HTTP requests (all routes,
  including the websocket upgrade, or those whose path starts with one of `paths`) with `status`
  for `count` requests (None: until `reset()`; 0: off).
- `slow_responses(seconds, count=None, paths=None)`: wait before handling matching requests.
- `start(boot_delay=X)`: the port is reserved at once but refuses connections for X seconds,
  like ComfyUI while it loads.
- `reset()`: all of the above off (stalled nodes resume). `mp4_bytes` may be reassigned.

What the server received, for assertions (copies, safe to read from the test thread):
`requests` (RecordedRequest: method, path, query, json, form, files, status), `prompts` (queued
prompts: prompt_id, number, prompt, client_id, extra_data, outputs), `uploads` (saved names),
`ws_messages` ((client id or None for a broadcast, message) for every JSON message sent),
`history()`, `queue()`, `wait_idle(timeout)`.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import io
import json
import logging
import mimetypes
import os
import random
import socket
import string
import struct
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import WSMsgType, web

from .validate import check_prompt, full_type_name

log = logging.getLogger("fakecomfy")

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
OBJECT_INFO_PATH = FIXTURES_DIR / "object_info.json"
MP4_PATH = FIXTURES_DIR / "success.mp4"

COMFYUI_VERSION = "0.3.64"
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
            "might have accidentally set the batch_size to a large number.")
# The frames a real ComfyUI reports for an exception inside a node (from the recordings).
DEFAULT_TRACEBACK = [
    '  File "/ComfyUI/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, '
    'has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, '
    'execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n',
    '  File "/ComfyUI/execution.py", line 315, in get_output_data\n    return_values = await '
    '_async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, allow_interrupt=True, '
    'execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n',
    '  File "/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n    await process_inputs(input_dict, i)\n',
    '  File "/ComfyUI/execution.py", line 277, in process_inputs\n    result = f(**inputs)\n             ^^^^^^^^^^^\n',
]
# GET /models as recorded; the folders a stock ComfyUI knows.
MODEL_FOLDERS = ["checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                 "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
                 "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"]
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}
MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
# Loader widgets whose choices are the files of a model folder (VAELoader also offers pixel_space).
MODEL_WIDGETS = {("UNETLoader", "unet_name"): "diffusion_models", ("LoraLoaderModelOnly", "lora_name"): "loras",
                 ("LoraLoader", "lora_name"): "loras", ("CLIPLoader", "clip_name"): "text_encoders",
                 ("VAELoader", "vae_name"): "vae", ("CLIPVisionLoader", "clip_name"): "clip_vision",
                 ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
                 ("AudioEncoderLoader", "audio_encoder_name"): "audio_encoders",
                 ("UpscaleModelLoader", "model_name"): "upscale_models",
                 # the worker's own node (comfyui_nodes/wan_worker_nodes) registers this folder
                 ("WanWorkerLoadRIFE", "model_name"): "frame_interpolation"}
IMAGE_UPLOAD_WIDGETS = (("LoadImage", "image"), ("LoadImageMask", "image"))
# Sampler nodes report per-step `progress` messages.
SAMPLERS = {"KSamplerAdvanced", "KSampler"}
# GET /system_stats as recorded (argv is the stand-in's own).
SYSTEM_STATS = {
    "system": {"os": "posix", "ram_total": 25276510208, "ram_free": 24209862656, "comfyui_version": COMFYUI_VERSION,
               "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
               "required_templates_version": "0.1.95",
               "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
               "pytorch_version": "2.14.1+cu130", "embedded_python": False, "argv": []},
    "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 25276510208, "vram_free": 24209862656,
                 "torch_vram_total": 25276510208, "torch_vram_free": 24209862656}],
}
INDEX_HTML = "<!doctype html><html><head><title>ComfyUI</title></head><body>fake ComfyUI</body></html>"


# ----------------------------------------------------------------------------------------------
# Test-facing records and misbehaviour rules
# ----------------------------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    """One HTTP request as the server saw it (status filled in once answered)."""
    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # form field -> uploaded file name
    status: int | None = None


@dataclass
class NodeRule:
    """Which nodes a misbehaviour hits, and how many more times (None: always)."""
    class_type: str | None = None
    node_id: str | None = None
    times: int | None = None

    def take(self, node_id: str, class_type: str) -> bool:
        """Whether it fires for this node; counts the use."""
        if self.class_type is not None and self.class_type != class_type:
            return False
        if self.node_id is not None and str(self.node_id) != node_id:
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


@dataclass
class Failure(NodeRule):
    exception_type: str = "RuntimeError"
    exception_message: str = "fake failure"
    traceback: list[str] | None = None


@dataclass
class Delay(NodeRule):
    seconds: float = 0.0


@dataclass
class HttpFault:
    """A status to answer with, or a delay, for requests whose path starts with one of `paths`."""
    status: int = 500
    seconds: float = 0.0
    count: int | None = None
    paths: tuple[str, ...] | None = None

    def take(self, path: str) -> bool:
        if self.paths is not None and not any(path.startswith(p) for p in self.paths):
            return False
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        return True


@dataclass
class NodeFaults:
    """What happens to one node when it runs."""
    delay: float = 0.0
    stall: bool = False
    die: bool = False
    failure: Failure | None = None


class _Interrupted(Exception):
    """ComfyUI's InterruptProcessingException."""


class _NodeError(Exception):
    """A node raised: carries the fields of `execution_error`."""

    def __init__(self, exception_type: str, message: str, traceback: list[str]) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback


class _Died(Exception):
    """The server was killed while running a node."""


# ----------------------------------------------------------------------------------------------
# Folders, files and models
# ----------------------------------------------------------------------------------------------

def load_object_info(path: str | Path | None = None) -> dict[str, Any]:
    """The node schemas the stand-in serves (the trimmed fixture unless `path` is given)."""
    return json.loads(Path(path or OBJECT_INFO_PATH).read_text(encoding="utf-8"))


def read_extra_model_paths(yaml_path: str | Path) -> list[tuple[str, Path, bool]]:
    """(folder, path, is_default) entries of an extra_model_paths.yaml, resolved like ComfyUI does."""
    import yaml  # a dependency of the project itself

    yaml_path = Path(yaml_path)
    config = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    yaml_dir = yaml_path.resolve().parent
    entries: list[tuple[str, Path, bool]] = []
    for section in config.values():
        if not section:
            continue
        section = dict(section)
        base = section.pop("base_path", None)
        if base is not None:
            base = Path(os.path.expandvars(os.path.expanduser(str(base))))
            if not base.is_absolute():
                base = (yaml_dir / base).resolve()
        is_default = bool(section.pop("is_default", False))
        for folder, value in section.items():
            for line in str(value).split("\n"):
                if not line:
                    continue
                full = Path(base, line) if base is not None else Path(line)
                if not full.is_absolute():
                    full = yaml_dir / full
                entries.append((LEGACY_FOLDERS.get(folder, folder), Path(os.path.normpath(full)), is_default))
    return entries


def list_model_files(dirs: list[Path]) -> list[str]:
    """Model files under `dirs` (recursive, relative, sorted), as ComfyUI's get_filename_list."""
    found: set[str] = set()
    for base in dirs:
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                if Path(name).suffix.lower() in MODEL_EXTENSIONS:
                    found.add(os.path.relpath(os.path.join(dirpath, name), base))
    return sorted(found)


def next_counter(folder: Path, filename: str) -> int:
    """ComfyUI's save counter: one more than the highest `<filename>_NNNNN_` in `folder`."""
    best = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for name in names:
        prefix = name[: len(filename) + 1]
        try:
            digits = int(name[len(filename) + 1:].split("_")[0])
        except ValueError:
            digits = 0
        if os.path.normcase(prefix[:-1]) == os.path.normcase(filename) and prefix[-1:] == "_":
            best = max(best, digits)
    return best + 1


def save_path(filename_prefix: str, base_dir: Path, width: int = 64, height: int = 64) -> tuple[Path, str, str]:
    """(folder, file name stem, subfolder) for a save node, refusing to leave `base_dir`."""
    if "%" in filename_prefix:
        now = time.localtime()
        for key, value in (("%width%", width), ("%height%", height), ("%year%", now.tm_year),
                           ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                           ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                           ("%second%", f"{now.tm_sec:02}")):
            filename_prefix = filename_prefix.replace(key, str(value))
    normalized = os.path.normpath(filename_prefix)
    subfolder, filename = os.path.dirname(normalized), os.path.basename(normalized)
    base = os.path.abspath(base_dir)
    folder = os.path.abspath(os.path.join(base, subfolder))
    if os.path.commonpath((base, folder)) != base:
        raise _NodeError("Exception", "**** ERROR: Saving image outside the output folder is not allowed."
                         f"\n full_output_folder: {folder}\n         output_dir: {base}"
                         f"\n         commonpath: {os.path.commonpath((base, folder))}", DEFAULT_TRACEBACK)
    os.makedirs(folder, exist_ok=True)
    return Path(folder), filename, subfolder


def tiny_png(color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small real PNG for SaveImage / PreviewImage outputs."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buf, "JPEG")
    return buf.getvalue()


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)


def now_ms() -> int:
    return int(time.time() * 1000)


# ----------------------------------------------------------------------------------------------
# Execution order and cache keys
# ----------------------------------------------------------------------------------------------

class ExecutionOrder:
    """ComfyUI's ExecutionList: a topological dissolve that prefers nodes close to an output."""

    def __init__(self, prompt: dict[str, Any], is_output: Callable[[str], bool],
                 is_cached: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, root: str) -> None:
        stack, links = [root], []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = {}
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value) and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], node_id))
        for source, target in links:
            self.add_node(source)
            if target not in self.blocking[source]:
                self.blocking[source][target] = True
                self.block_count[target] += 1

    def empty(self) -> bool:
        return not self.pending

    def pick(self) -> str | None:
        """The next node to run; None if the rest is a cycle."""
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(self.is_output(b2) for b in self.blocking[node_id] for b2 in self.blocking[b]):
                return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for target in self.blocking.pop(node_id):
            self.block_count[target] -= 1


def cache_keys(prompt: dict[str, Any], input_path: Callable[[str], Path]) -> dict[str, str | None]:
    """A key per node from its class, constants and upstream keys (None: not cacheable).

    Like ComfyUI's input-signature cache: node ids do not matter, LoadImage depends on the file's
    content (its IS_CHANGED is the file's sha256)."""
    keys: dict[str, str | None] = {}

    def key(node_id: str, seen: frozenset[str]) -> str | None:
        if node_id in keys:
            return keys[node_id]
        if node_id in seen or node_id not in prompt:
            return None
        node = prompt[node_id]
        parts: list[Any] = [node.get("class_type")]
        if node.get("class_type") in ("LoadImage", "LoadImageMask"):
            try:
                parts.append(hashlib.sha256(input_path(str(node["inputs"].get("image"))).read_bytes()).hexdigest())
            except OSError:
                parts.append(None)
        for name in sorted(node.get("inputs", {})):
            value = node["inputs"][name]
            if is_link(value):
                upstream = key(value[0], seen | {node_id})
                if upstream is None:
                    keys[node_id] = None
                    return None
                parts.append([name, upstream, value[1]])
            else:
                parts.append([name, value])
        try:
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        except (TypeError, ValueError):
            digest = None
        keys[node_id] = digest
        return digest

    for node_id in prompt:
        key(node_id, frozenset())
    return keys


# ----------------------------------------------------------------------------------------------
# The server proper: one instance per run of the stand-in (a restart starts from scratch)
# ----------------------------------------------------------------------------------------------

class _Server:
    """ComfyUI's PromptServer + PromptQueue + PromptExecutor state; lives in the loop thread."""

    def __init__(self, fake: "FakeComfy") -> None:
        self.fake = fake
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_meta: dict[str, dict[str, Any]] = {}
        self.transports: dict[int, Any] = {}  # id(ws) -> transport, for abrupt drops
        self.dropped: set[int] = set()  # id(ws) of sockets closed by drop_websocket
        self.background: set[asyncio.Task] = set()  # closing sockets (a task needs a reference)
        self.queue: list[tuple[Any, int, list[Any]]] = []  # heap of (number, seq, item)
        self.seq = 0
        self.running: dict[int, list[Any]] = {}
        self.task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.forgotten: dict[str, dict[str, Any]] = {}  # entries a client deleted (tests look at them)
        self.number = 0
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.interrupted = False
        self.interrupt_event = asyncio.Event()
        self.wake = asyncio.Event()
        self.cache: dict[str, dict[str, Any]] = {}  # cache key -> {"ui": UI output or None}

    # -- messages ------------------------------------------------------------------------------

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.queue) + len(self.running)}}

    async def send(self, event: str, data: Any, sid: str | None, job: bool = False) -> None:
        """Send a JSON message to one client (or all when sid is None), as ComfyUI's send_json."""
        message = {"type": event, "data": data}
        self.fake._record_ws(sid, message)
        targets = list(self.sockets.items()) if sid is None else (
            [(sid, self.sockets[sid])] if sid in self.sockets else [])
        for target_sid, ws in targets:
            if job and self.fake._take_ws_drop():
                await self.drop(target_sid, ws)
                continue
            await self._deliver(ws, message)

    async def send_bytes(self, payload: bytes, sid: str | None) -> None:
        targets = list(self.sockets.values()) if sid is None else (
            [self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            if ws.closed:
                continue
            try:
                await ws.send_bytes(payload)
            except Exception as ex:  # noqa: BLE001 - a gone client is not an error for the server
                log.debug("send failed: %s", ex)

    @staticmethod
    async def _deliver(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        if ws.closed:
            return
        try:
            await ws.send_json(message)
        except Exception as ex:  # noqa: BLE001 - ComfyUI logs and carries on
            log.debug("send failed: %s", ex)

    async def drop(self, sid: str, ws: web.WebSocketResponse) -> None:
        """Close a client's websocket from the server side (close frame, or cut when abrupt).

        The socket is forgotten at once, so nothing more reaches it and its late clean-up cannot
        unregister a reconnection that reuses the client id."""
        if self.sockets.get(sid) is ws:
            self.sockets.pop(sid)
            self.sockets_meta.pop(sid, None)
        self.dropped.add(id(ws))
        if self.fake._ws_drop_abrupt:
            transport = self.transports.get(id(ws))
            if transport is not None:
                transport.abort()
            return
        task = asyncio.get_running_loop().create_task(ws.close())  # don't wait for the client's answer
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def queue_updated(self) -> None:
        await self.send("status", {"status": self.queue_info()}, None)

    async def to_client(self, event: str, data: Any, guarded: bool = True) -> None:
        """A job message: ComfyUI sends these to the prompt's client only, some only if it has one."""
        if guarded and self.client_id is None:
            return
        await self.send(event, data, self.client_id, job=True)

    # -- object_info with live file lists -------------------------------------------------------

    def object_info(self) -> dict[str, Any]:
        """The schemas with LoadImage's file list and (when scanning) model lists filled in."""
        base = self.fake._object_info
        info = dict(base)
        images = self.input_images()
        for class_type, widget in IMAGE_UPLOAD_WIDGETS:
            if class_type in info:
                info[class_type] = _with_choices(info[class_type], widget, images)
        if self.fake._scan_models:
            for (class_type, widget), folder in MODEL_WIDGETS.items():
                if class_type in info:
                    files = self.fake.model_files(folder)
                    if class_type == "VAELoader":
                        files = files + ["pixel_space"]
                    info[class_type] = _with_choices(info[class_type], widget, files)
        return info

    def input_images(self) -> list[str]:
        folder = self.fake.input_dir
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if p.is_file()]
        return sorted(n for n in names if (mimetypes.guess_type(n)[0] or "").startswith("image/"))

    def dir_for_type(self, kind: str | None) -> Path | None:
        return {"input": self.fake.input_dir, "output": self.fake.output_dir,
                "temp": self.fake.temp_dir}.get(kind or "")

    def input_path(self, name: str) -> Path:
        """Where a LoadImage file name points (input folder unless annotated "[output]" etc.)."""
        name, folder = self.annotated(name)
        return (folder or self.fake.input_dir) / name

    def annotated(self, name: str) -> tuple[str, Path | None]:
        for suffix, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
            if name.endswith(suffix):
                return name[: -len(suffix)], self.dir_for_type(kind)
        return name, None

    # -- routes ----------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=SERVER_FEATURES["max_upload_size"],
                              middlewares=[self.record_middleware, self.fault_middleware])
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/", self.index),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.models_folder),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)  # ComfyUI serves both
        return app

    @web.middleware
    async def record_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        record = RecordedRequest(request.method, request.path, dict(request.query))
        if request.method == "POST" and request.content_type == "application/json":
            try:
                record.json = json.loads(await request.read() or b"null")
            except ValueError:
                record.json = None
        elif request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                post = await request.post()
                for name, value in post.items():
                    if isinstance(value, web.FileField):
                        record.files[name] = value.filename
                    else:
                        record.form[name] = str(value)
            except Exception:  # noqa: BLE001 - the handler reports a bad body itself
                pass
        self.fake._record_request(record)
        try:
            response = await handler(request)
        except web.HTTPException as ex:
            record.status = ex.status
            raise
        except Exception:
            record.status = 500
            raise
        record.status = response.status
        return response

    @web.middleware
    async def fault_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        delay, status = self.fake._take_http_faults(request.path)
        if delay:
            await asyncio.sleep(delay)
        if status is not None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = "Error"
            return web.Response(status=status, text=f"{status}: {reason}")
        return await handler(request)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)  # reusing a session id replaces the old socket, as ComfyUI
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sockets_meta[sid] = {"feature_flags": {}}
        self.transports[id(ws)] = request.transport
        self.fake._note_connection(sid)
        try:
            await self.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.client_id == sid and self.last_node_id is not None:
                await self.send("executing", {"node": self.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        if sid in self.sockets_meta:
                            self.sockets_meta[sid]["feature_flags"] = data.get("data", {})
                        await self.send("feature_flags", dict(SERVER_FEATURES), sid)
                    first = False
                except Exception:  # noqa: BLE001 - unknown or broken messages are ignored
                    pass
        finally:
            # As ComfyUI: this also forgets a newer socket that reused the same client id
            # (unless this one was dropped on purpose and so already forgotten).
            if id(ws) not in self.dropped:
                self.sockets.pop(sid, None)
                self.sockets_meta.pop(sid, None)
            self.dropped.discard(id(ws))
            self.transports.pop(id(ws), None)
        return ws

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=INDEX_HTML, content_type="text/html")

    async def system_stats(self, request: web.Request) -> web.StreamResponse:
        stats = copy.deepcopy(SYSTEM_STATS)
        stats["system"]["argv"] = list(self.fake.argv)
        return web.json_response(stats)

    async def features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(dict(SERVER_FEATURES))

    async def get_object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.object_info())

    async def get_object_info_node(self, request: web.Request) -> web.StreamResponse:
        node_class = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({node_class: info[node_class]} if node_class in info else {})

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([os.path.splitext(f)[0] for f in self.fake.model_files("embeddings")])

    async def models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.fake.model_folders())

    async def models_folder(self, request: web.Request) -> web.StreamResponse:
        folder = request.match_info["folder"]
        if folder not in self.fake.model_folders():
            return web.Response(status=404)
        return web.json_response(self.fake.model_files(folder))

    async def get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        result = check_prompt(json_data["prompt"], self.object_info(), self.fake.input_dir,
                              output_dir=self.fake.output_dir, temp_dir=self.fake.temp_dir,
                              partial_execution_targets=json_data.get("partial_execution_targets"))
        if not result.ok:
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        item = [number, prompt_id, result.prompt, extra_data, result.outputs]
        self.fake._record_prompt({"prompt_id": prompt_id, "number": number, "prompt": copy.deepcopy(result.prompt),
                                  "client_id": extra_data.get("client_id"), "extra_data": copy.deepcopy(extra_data),
                                  "outputs": list(result.outputs)})
        heapq.heappush(self.queue, (number, self.seq, item))
        self.seq += 1
        await self.queue_updated()
        self.wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    def pending_items(self) -> list[list[Any]]:
        return [copy.deepcopy(entry[2]) for entry in self.queue]

    async def get_queue(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"queue_running": [copy.deepcopy(i) for i in self.running.values()],
                                  "queue_pending": self.pending_items()})

    async def post_queue(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.queue.clear()
            await self.queue_updated()
        for prompt_id in json_data.get("delete", []):
            for index, entry in enumerate(self.queue):
                if entry[2][1] == prompt_id:
                    if len(self.queue) == 1:  # ComfyUI wipes the queue then: two status messages
                        self.queue.clear()
                        await self.queue_updated()
                    else:
                        self.queue.pop(index)
                        heapq.heapify(self.queue)
                    await self.queue_updated()
                    break
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            json_data = json.loads(await request.text() or "")
        except ValueError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if any(item[1] == prompt_id for item in self.running.values()):
                self.interrupt()
            else:
                log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
        else:
            self.interrupt()
        return web.Response(status=200)

    def interrupt(self) -> None:
        self.interrupted = True
        self.interrupt_event.set()

    async def post_free(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("free_memory", False):
            self.cache.clear()  # ComfyUI resets its executor (and so its cache)
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.StreamResponse:
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        limit = int(max_items) if max_items is not None else None
        if offset < 0 and limit is not None:
            offset = len(self.history) - limit
        out: dict[str, Any] = {}
        for index, key in enumerate(self.history):
            if index >= offset:
                out[key] = self.history[key]
                if limit is not None and len(out) >= limit:
                    break
        return web.json_response(out)

    async def get_history_item(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.StreamResponse:
        json_data = await request.json()
        if json_data.get("clear"):
            self.forgotten.update(self.history)
            self.history.clear()
        for prompt_id in json_data.get("delete", []):
            if prompt_id in self.history:
                self.forgotten[prompt_id] = self.history.pop(prompt_id)
        return web.Response(status=200)

    async def upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        kind = post.get("type")
        kind = "input" if kind is None else str(kind)
        upload_dir = self.dir_for_type(kind)
        if upload_dir is None:
            raise web.HTTPInternalServerError()  # ComfyUI fails on an unknown type
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        filename = image.filename
        subfolder = str(post.get("subfolder", ""))
        base = os.path.abspath(upload_dir)
        folder = os.path.join(base, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((base, filepath)) != base:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        data = image.file.read()
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, ext = os.path.splitext(filename)
            n = 1
            while os.path.exists(filepath):
                if Path(filepath).read_bytes() == data:  # same content: keep the existing file
                    duplicate = True
                    break
                filename = f"{stem} ({n}){ext}"
                filepath = os.path.join(folder, filename)
                n += 1
        if not duplicate:
            Path(filepath).write_bytes(data)
        self.fake._record_upload(filename if not subfolder else f"{subfolder}/{filename}")
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" in query:
            filename, folder = self.annotated(query["filename"])
            if not filename:
                return web.Response(status=400)
            if filename[0] == "/" or ".." in filename:
                return web.Response(status=400)
            if folder is None:
                folder = self.dir_for_type(query.get("type", "output"))
            if folder is None:
                return web.Response(status=400)
            base = os.path.abspath(folder)
            if "subfolder" in query:
                full = os.path.abspath(os.path.join(base, query["subfolder"]))
                if os.path.commonpath((full, base)) != base:
                    return web.Response(status=403)
                base = full
            filename = os.path.basename(filename)
            path = os.path.join(base, filename)
            if os.path.isfile(path):
                content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml",
                                    "text/javascript", "text/css"}:
                    content_type = "application/octet-stream"
                return web.FileResponse(path, headers={"Content-Disposition": f'filename="{filename}"',
                                                       "Content-Type": content_type})
        return web.Response(status=404)

    # -- the prompt worker -----------------------------------------------------------------------

    async def worker(self) -> None:
        """ComfyUI's prompt_worker: one prompt at a time, in queue order."""
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            _, _, item = heapq.heappop(self.queue)
            task_id = self.task_counter
            self.task_counter += 1
            self.running[task_id] = copy.deepcopy(item)
            await self.queue_updated()
            number, prompt_id, prompt, extra_data, outputs = item
            success, messages, result = await self.execute(prompt_id, prompt, extra_data, outputs)
            self.running.pop(task_id, None)
            self.history[prompt_id] = {
                "prompt": [number, prompt_id, prompt, extra_data, outputs],
                "outputs": {},
                "status": {"status_str": "success" if success else "error", "completed": success,
                           "messages": [[event, data] for event, data in messages]},
            }
            self.history[prompt_id].update(result)
            await self.queue_updated()
            if self.fake.gc_pause:
                await asyncio.sleep(self.fake.gc_pause)
            if self.client_id is not None:
                await self.send("executing", {"node": None, "prompt_id": prompt_id}, self.client_id, job=True)

    async def execute(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                      outputs: list[str]) -> tuple[bool, list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        """Run one prompt: ComfyUI's message sequence, files for the save nodes, the cache."""
        self.interrupted = False
        self.interrupt_event.clear()
        self.client_id = extra_data.get("client_id")
        messages: list[tuple[str, dict[str, Any]]] = []

        async def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": now_ms()}
            messages.append((event, data))
            if self.client_id is not None or broadcast:
                await self.send(event, data, self.client_id, job=True)

        await add_message("execution_start", {"prompt_id": prompt_id}, False)
        keys = cache_keys(prompt, self.input_path)
        if not self.fake.cache_enabled:
            self.cache.clear()
        live = {k for k in keys.values() if k is not None}
        self.cache = {k: v for k, v in self.cache.items() if k in live}

        def cached(node_id: str) -> bool:
            return keys.get(node_id) is not None and keys[node_id] in self.cache

        await add_message("execution_cached", {"nodes": [n for n in prompt if cached(n)], "prompt_id": prompt_id},
                          False)
        info = self.fake._object_info
        progress: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        order = ExecutionOrder(prompt, lambda n: info.get(prompt[n]["class_type"], {}).get("output_node") is True,
                               cached)
        for output in outputs:
            order.add_node(output)

        success = True
        while not order.empty():
            node_id = order.pick()
            if node_id is None:
                node_id = next(iter(order.pending))
                await add_message("execution_error", self._error_message(
                    prompt_id, prompt, node_id, executed, "graph.DependencyCycleError", "Dependency cycle detected",
                    [], {}), False)
                success = False
                break
            try:
                await self.run_node(prompt_id, prompt, node_id, keys, progress, executed)
            except _Interrupted:
                await add_message("execution_interrupted", {
                    "prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                    "executed": list(executed)}, True)
                success = False
                break
            except _NodeError as ex:
                await add_message("execution_error", self._error_message(
                    prompt_id, prompt, node_id, executed, ex.exception_type, ex.message, ex.traceback,
                    self._current_inputs(prompt, node_id)), False)
                success = False
                break
            except (_Died, asyncio.CancelledError):
                raise
            except Exception as ex:  # noqa: BLE001 - a fault of the stand-in: report it as ComfyUI would
                log.exception("fakecomfy: node %s failed", node_id)
                await add_message("execution_error", self._error_message(
                    prompt_id, prompt, node_id, executed, full_type_name(ex), f"{ex}\n",
                    traceback.format_tb(ex.__traceback__), self._current_inputs(prompt, node_id)), False)
                success = False
                break
            order.complete(node_id)
        else:
            await add_message("execution_success", {"prompt_id": prompt_id}, False)

        ui_outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in prompt:
            entry = self.cache.get(keys.get(node_id) or "")
            if entry is not None and entry.get("ui") is not None:
                ui_outputs[node_id] = entry["ui"]
                meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                 "real_node_id": node_id}
        self.last_node_id = None
        return success, messages, {"outputs": ui_outputs, "meta": meta}

    def _error_message(self, prompt_id: str, prompt: dict[str, Any], node_id: str, executed: list[str],
                       exception_type: str, message: str, tb: list[str],
                       current_inputs: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_id": prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                "executed": list(executed), "exception_message": message, "exception_type": exception_type,
                "traceback": list(tb), "current_inputs": current_inputs, "current_outputs": list(prompt)}

    def _current_inputs(self, prompt: dict[str, Any], node_id: str) -> dict[str, Any]:
        """The node's inputs as ComfyUI formats them: constants as is, objects as strings."""
        schema = self.fake._object_info.get(prompt[node_id]["class_type"], {}).get("input", {})
        known = set(schema.get("required") or {}) | set(schema.get("optional") or {})
        out: dict[str, Any] = {}
        for name, value in prompt[node_id]["inputs"].items():
            if is_link(value):
                source = prompt.get(value[0], {}).get("class_type", "?")
                out[name] = [f"<{source} output {value[1]} of node {value[0]}>"]
            elif name in known:
                out[name] = [value if value is None or isinstance(value, (int, float, bool, str)) else str(value)]
        return out

    async def progress_state(self, prompt_id: str, progress: dict[str, dict[str, Any]]) -> None:
        nodes = {node_id: {**state, "node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id}
                 for node_id, state in progress.items()}
        await self.to_client("progress_state", {"prompt_id": prompt_id, "nodes": nodes}, guarded=False)

    async def run_node(self, prompt_id: str, prompt: dict[str, Any], node_id: str, keys: dict[str, str | None],
                       progress: dict[str, dict[str, Any]], executed: list[str]) -> None:
        """One node: messages, misbehaviour, outputs. Raises _Interrupted or _NodeError."""
        class_type = prompt[node_id]["class_type"]
        key = keys.get(node_id)
        if key is not None and key in self.cache:  # an output node served from the cache
            await self.to_client("executed", {"node": node_id, "display_node": node_id,
                                              "output": self.cache[key].get("ui"), "prompt_id": prompt_id})
            state = progress.setdefault(node_id, {"value": 0, "max": 1, "state": "pending"})
            state.update(state="finished", value=state["max"])
            await self.progress_state(prompt_id, progress)
            return

        progress[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}
        await self.progress_state(prompt_id, progress)
        if self.client_id is not None:
            self.last_node_id = node_id
        await self.to_client("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})

        faults = self.fake._node_faults(node_id, class_type)
        if faults.die:
            await self.fake._die_from_loop()
            raise _Died()
        if faults.delay:
            await self.pause(faults.delay)
        self.check_interrupt()
        if faults.stall:
            generation = self.fake._generation
            while generation == self.fake._generation:
                await self.pause(0.05)
        if faults.failure is not None:
            failure = faults.failure
            message = failure.exception_message + "\n"
            if failure.exception_type.endswith("OutOfMemoryError"):
                message += OOM_TIPS
            raise _NodeError(failure.exception_type, message, failure.traceback or DEFAULT_TRACEBACK)

        inputs = prompt[node_id]["inputs"]
        if class_type in SAMPLERS:
            await self.sample(prompt_id, node_id, inputs, progress)
        ui = self.outputs_of(class_type, inputs)
        if key is not None:
            self.cache[key] = {"ui": ui}
        if ui is not None:
            await self.to_client("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                              "prompt_id": prompt_id})
        progress[node_id].update(state="finished", value=progress[node_id]["max"])
        await self.progress_state(prompt_id, progress)
        executed.append(node_id)

    def check_interrupt(self) -> None:
        if self.interrupted:
            raise _Interrupted()

    async def pause(self, seconds: float) -> None:
        """Sleep, but stop at once on an interrupt (as ComfyUI checks between steps)."""
        self.check_interrupt()
        try:
            await asyncio.wait_for(self.interrupt_event.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass
        self.check_interrupt()

    async def sample(self, prompt_id: str, node_id: str, inputs: dict[str, Any],
                     progress: dict[str, dict[str, Any]]) -> None:
        """Per-step `progress`, like a sampler's callback; the steps it really runs."""
        def number(name: str, default: int) -> int:
            value = inputs.get(name, default)
            return default if is_link(value) else int(value)  # a linked value: assume the default

        steps = number("steps", 1)
        if "start_at_step" in inputs or "end_at_step" in inputs:
            total = min(number("end_at_step", 10000), steps) - number("start_at_step", 0)
        else:
            total = steps
        for value in range(1, max(total, 0) + 1):
            self.check_interrupt()
            if self.fake.step_delay:
                await self.pause(self.fake.step_delay)
            progress[node_id].update(value=value, max=total, state="running")
            await self.progress_state(prompt_id, progress)
            supports_meta = self.sockets_meta.get(self.client_id or "", {}).get("feature_flags", {}).get(
                "supports_preview_metadata", False)
            if self.fake.previews and supports_meta:
                meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                                   "parent_node_id": None, "real_node_id": node_id,
                                   "image_type": "image/jpeg"}).encode()
                await self.send_bytes(struct.pack(">I", 4) + struct.pack(">I", len(meta)) + meta + tiny_jpeg(),
                                      self.client_id)
            await self.to_client("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
                                 guarded=False)
            if self.fake.previews and not supports_meta:
                await self.send_bytes(struct.pack(">I", 1) + struct.pack(">I", 1) + tiny_jpeg(), self.client_id)

    def outputs_of(self, class_type: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """Write what a save node writes; its UI output (None for nodes without one)."""
        if class_type == "SaveVideo":
            folder, stem, subfolder = save_path(str(inputs.get("filename_prefix", "video/ComfyUI")),
                                                self.fake.output_dir)
            name = f"{stem}_{next_counter(folder, stem):05}_.mp4"
            (folder / name).write_bytes(self.fake.mp4_bytes)
            return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}
        if class_type in ("SaveImage", "PreviewImage"):
            if class_type == "SaveImage":
                base, kind = self.fake.output_dir, "output"
                prefix = str(inputs.get("filename_prefix", "ComfyUI"))
            else:
                base, kind = self.fake.temp_dir, "temp"
                prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            folder, stem, subfolder = save_path(prefix, base)
            stem = stem.replace("%batch_num%", "0")
            name = f"{stem}_{next_counter(folder, stem):05}_.png"
            (folder / name).write_bytes(tiny_png())
            return {"images": [{"filename": name, "subfolder": subfolder, "type": kind}]}
        return None


def _with_choices(entry: dict[str, Any], widget: str, choices: list[str]) -> dict[str, Any]:
    """A copy of a node schema whose combo `widget` offers `choices` (either combo form)."""
    entry = copy.deepcopy(entry)
    for section in ("required", "optional"):
        inputs = entry.get("input", {}).get(section) or {}
        if widget in inputs:
            spec = inputs[widget]
            if spec and spec[0] == "COMBO":
                spec[1]["options"] = list(choices)
            else:
                inputs[widget] = [list(choices)] + list(spec[1:])
    return entry


# ----------------------------------------------------------------------------------------------
# The test-facing object
# ----------------------------------------------------------------------------------------------

class FakeComfy:
    """A stand-in ComfyUI on 127.0.0.1, run in a background thread with its own event loop."""

    def __init__(self, root_dir: str | Path, *, object_info: dict[str, Any] | str | Path | None = None,
                 mp4_bytes: bytes | None = None, extra_model_paths_config: str | Path | list | None = None,
                 scan_models: bool | None = None, input_dir: str | Path | None = None,
                 output_dir: str | Path | None = None, temp_dir: str | Path | None = None, port: int = 0,
                 cache: bool = True, previews: bool = False, gc_pause: float = 0.0, step_delay: float = 0.0,
                 argv: list[str] | None = None) -> None:
        """`root_dir` holds input/, output/, temp/ (and models/ when scanning model folders).

        `extra_model_paths_config` (one path or a list) or `scan_models=True` make the loader
        choices the model files really present, as ComfyUI; otherwise they are the fixture's."""
        self.root_dir = Path(root_dir)
        self.input_dir = Path(input_dir) if input_dir else self.root_dir / "input"
        self.output_dir = Path(output_dir) if output_dir else self.root_dir / "output"
        self.temp_dir = Path(temp_dir) if temp_dir else self.root_dir / "temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._object_info = object_info if isinstance(object_info, dict) else load_object_info(object_info)
        self.mp4_bytes = mp4_bytes if mp4_bytes is not None else MP4_PATH.read_bytes()
        self.cache_enabled = cache
        self.previews = previews
        self.gc_pause = gc_pause
        self.step_delay = step_delay
        self._port = port
        self.argv = argv

        configs = extra_model_paths_config
        if configs is not None and not isinstance(configs, list):
            configs = [configs]
        self._model_dirs: dict[str, list[Path]] = {f: [self.root_dir / "models" / f] for f in MODEL_FOLDERS}
        for config in configs or []:
            for folder, path, is_default in read_extra_model_paths(config):
                paths = self._model_dirs.setdefault(folder, [])
                if is_default:
                    paths.insert(0, path)
                else:
                    paths.append(path)
        self._scan_models = bool(configs) if scan_models is None else scan_models

        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._prompts: list[dict[str, Any]] = []
        self._uploads: list[str] = []
        self._ws_messages: list[tuple[str | None, dict[str, Any]]] = []
        self._connections: list[str] = []
        self._failures: list[Failure] = []
        self._stalls: list[NodeRule] = []
        self._delays: list[Delay] = []
        self._deaths: list[NodeRule] = []
        self._ws_drops: int | None = 0
        self._ws_drop_abrupt = False
        self._http_error: HttpFault | None = None
        self._http_delay: HttpFault | None = None
        self._generation = 0

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._dead = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}/ws"

    @property
    def alive(self) -> bool:
        """Listening (or booting) and not killed."""
        return self._thread is not None and self._thread.is_alive() and not self._dead.is_set()

    def start(self, boot_delay: float = 0.0) -> "FakeComfy":
        """Serve in a background thread; with `boot_delay`, refuse connections that long first."""
        if self._thread is not None and self._thread.is_alive():
            if not self._dead.is_set():
                raise RuntimeError("FakeComfy is already running")
            self.stop()  # killed: let the old run finish its teardown first
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))  # bound but not listening: connections are refused
        self._port = sock.getsockname()[1]
        if self.argv is None:
            self.argv = ["main.py", "--listen", "127.0.0.1", "--port", str(self._port)]
        self._ready.clear()
        self._dead.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, args=(sock, boot_delay), daemon=True,
                                        name=f"fakecomfy-{self._port}")
        self._thread.start()
        if boot_delay <= 0:
            if not self._ready.wait(10):
                raise RuntimeError("FakeComfy did not start")
            if self._startup_error is not None:
                raise RuntimeError("FakeComfy failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving (cuts open connections) and wait for the thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._stop_event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop_event.set)
            except RuntimeError:
                pass
        if thread is not None:
            thread.join(10)
        self._thread = None

    def kill(self) -> None:
        """Die now, like a crashed ComfyUI: stop listening, cut every connection."""
        self._dead.set()
        self.stop()

    def __enter__(self) -> "FakeComfy":
        return self.start() if not self.alive else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self, sock: socket.socket, boot_delay: float) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(sock, boot_delay))
        except BaseException as ex:  # noqa: BLE001 - reported to start()
            self._startup_error = ex
            self._ready.set()
        finally:
            try:
                sock.close()
            except OSError:
                pass
            loop.close()
            self._loop = None

    async def _main(self, sock: socket.socket, boot_delay: float) -> None:
        self._stop_event = asyncio.Event()
        server = self._server = _Server(self)
        runner = web.AppRunner(server.make_app(), access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        if boot_delay > 0:
            try:
                await asyncio.wait_for(self._stop_event.wait(), boot_delay)
            except asyncio.TimeoutError:
                pass
        site = None
        worker = None
        if not self._stop_event.is_set():
            site = web.SockSite(runner, sock)
            await site.start()
            worker = asyncio.get_running_loop().create_task(server.worker())
            self._ready.set()
            await self._stop_event.wait()
        # Teardown: stop listening, cut every connection (no goodbye, like a dying process).
        if site is not None:
            await site.stop()
        for handler in list(getattr(runner.server, "connections", []) or []):
            transport = getattr(handler, "transport", None)
            if transport is not None:
                transport.abort()
        if worker is not None:
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await runner.cleanup()

    async def _die_from_loop(self) -> None:
        """die_on: called by the worker task itself; the teardown cancels it."""
        self._dead.set()
        assert self._stop_event is not None
        self._stop_event.set()
        await asyncio.Event().wait()  # never returns: cancelled by the teardown

    def _in_loop(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run `fn` in the server's loop thread (its state lives there) and return its result."""
        loop = self._loop
        if loop is None or self._server is None:
            raise RuntimeError("FakeComfy is not running")

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    # -- misbehaviour ----------------------------------------------------------------------------

    def fail_on(self, class_type: str | None = None, node_id: str | None = None, *,
                exception_type: str = "RuntimeError", exception_message: str = "fake failure",
                times: int | None = None, traceback: list[str] | None = None) -> None:
        """Matching nodes raise: `execution_error` with this type and message."""
        with self._lock:
            self._failures.append(Failure(class_type, node_id, times, exception_type, exception_message, traceback))

    def stall_on(self, class_type: str | None = None, node_id: str | None = None, *,
                 times: int | None = None) -> None:
        """Matching nodes run until interrupted (or until reset())."""
        with self._lock:
            self._stalls.append(NodeRule(class_type, node_id, times))

    def delay_on(self, seconds: float, class_type: str | None = None, node_id: str | None = None) -> None:
        """Matching nodes take `seconds` to run."""
        with self._lock:
            self._delays.append(Delay(class_type, node_id, None, seconds))

    def die_on(self, class_type: str | None = None, node_id: str | None = None) -> None:
        """The server dies when a matching node starts."""
        with self._lock:
            self._deaths.append(NodeRule(class_type, node_id, 1))

    def drop_websocket(self, times: int | None = 1, *, abrupt: bool = False) -> None:
        """Close client websockets at their next job message(s); None: every time."""
        with self._lock:
            self._ws_drops = times
            self._ws_drop_abrupt = abrupt

    def http_errors(self, status: int = 500, count: int | None = None, *,
                    paths: list[str] | None = None) -> None:
        """Answer matching HTTP requests with `status` (count None: until reset; 0: off)."""
        with self._lock:
            self._http_error = HttpFault(status=status, count=count, paths=tuple(paths) if paths else None)

    def slow_responses(self, seconds: float, count: int | None = None, *, paths: list[str] | None = None) -> None:
        """Wait `seconds` before handling matching HTTP requests."""
        with self._lock:
            self._http_delay = HttpFault(seconds=seconds, count=count, paths=tuple(paths) if paths else None)

    def reset(self) -> None:
        """Back to normal behaviour; a stalled node carries on."""
        with self._lock:
            self._failures.clear()
            self._stalls.clear()
            self._delays.clear()
            self._deaths.clear()
            self._ws_drops = 0
            self._ws_drop_abrupt = False
            self._http_error = None
            self._http_delay = None
            self._generation += 1

    def clear_cache(self) -> None:
        """Forget cached node outputs (as `POST /free {"free_memory": true}`)."""
        self._in_loop(lambda: self._server.cache.clear())  # type: ignore[union-attr]

    def _node_faults(self, node_id: str, class_type: str) -> NodeFaults:
        with self._lock:
            faults = NodeFaults()
            faults.die = any(rule.take(node_id, class_type) for rule in self._deaths)
            faults.delay = sum(d.seconds for d in self._delays if d.take(node_id, class_type))
            faults.stall = any(rule.take(node_id, class_type) for rule in self._stalls)
            faults.failure = next((f for f in self._failures if f.take(node_id, class_type)), None)
            return faults

    def _take_ws_drop(self) -> bool:
        with self._lock:
            if self._ws_drops is None:
                return True
            if self._ws_drops > 0:
                self._ws_drops -= 1
                return True
            return False

    def _take_http_faults(self, path: str) -> tuple[float, int | None]:
        with self._lock:
            delay = self._http_delay.seconds if self._http_delay and self._http_delay.take(path) else 0.0
            status = self._http_error.status if self._http_error and self._http_error.take(path) else None
            return delay, status

    # -- models ----------------------------------------------------------------------------------

    def model_folders(self) -> list[str]:
        return list(self._model_dirs)

    def model_files(self, folder: str) -> list[str]:
        """Files of a model folder: scanned from disk, or the fixture's lists when not scanning."""
        if self._scan_models:
            return list_model_files(self._model_dirs.get(folder, []))
        for (class_type, widget), model_folder in MODEL_WIDGETS.items():
            if model_folder == folder and class_type in self._object_info:
                spec = self._object_info[class_type]["input"]["required"][widget]
                choices = spec[1].get("options", []) if spec[0] == "COMBO" else spec[0]
                return [c for c in choices if c != "pixel_space"]
        return []

    # -- what the server saw ---------------------------------------------------------------------

    def _record_request(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _record_prompt(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._prompts.append(entry)

    def _record_upload(self, name: str) -> None:
        with self._lock:
            self._uploads.append(name)

    def _record_ws(self, sid: str | None, message: dict[str, Any]) -> None:
        with self._lock:
            self._ws_messages.append((sid, copy.deepcopy(message)))

    def _note_connection(self, sid: str) -> None:
        with self._lock:
            self._connections.append(sid)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [copy.copy(r) for r in self._requests]

    @property
    def prompts(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._prompts)

    @property
    def uploads(self) -> list[str]:
        with self._lock:
            return list(self._uploads)

    @property
    def ws_messages(self) -> list[tuple[str | None, dict[str, Any]]]:
        with self._lock:
            return copy.deepcopy(self._ws_messages)

    @property
    def ws_connections(self) -> list[str]:
        """Client ids of every websocket connection accepted, in order."""
        with self._lock:
            return list(self._connections)

    def history(self, forgotten: bool = False) -> dict[str, Any]:
        """What `GET /history` answers; with `forgotten`, also the entries a client deleted (the
        worker deletes its prompt's entry after the job)."""
        def snapshot() -> dict[str, Any]:
            server = self._server
            assert server is not None
            return copy.deepcopy({**server.forgotten, **server.history} if forgotten else server.history)
        return self._in_loop(snapshot)

    def queue(self) -> dict[str, list[Any]]:
        def snapshot() -> dict[str, list[Any]]:
            server = self._server
            assert server is not None
            return {"queue_running": copy.deepcopy(list(server.running.values())),
                    "queue_pending": server.pending_items()}
        return self._in_loop(snapshot)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is queued or running; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._in_loop(lambda: not self._server.queue and not self._server.running):  # type: ignore
                return True
            time.sleep(0.02)
        return False


@contextlib.contextmanager
def serve(root_dir: str | Path, **kwargs: Any) -> Iterator[FakeComfy]:
    """A started FakeComfy for a `with` block or a pytest fixture (`with serve(tmp_path) as fake`)."""
    fake = FakeComfy(root_dir, **kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
