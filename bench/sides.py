"""The two sides that do the same jobs, each in its own process: the worker and the floor.

    python -m bench.sides worker CONFIG_JSON   the real handler(job), as a deployed worker runs it
    python -m bench.sides floor CONFIG_JSON    a bare protocol client: the least any client must do
    python -m bench.sides ready CONFIG_JSON    ComfyClient.wait_until_ready() against booting stand-ins

Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout (see bench.procs);
the worker's log lines go to stderr, which the bench sends to a file. Each side times itself with
time.perf_counter(), so talking to the bench costs nothing that is measured, and reports its memory
from /proc/self/status (VmRSS now, VmHWM = peak since the process started).

The floor does, per job: decode the job's base64 image; POST /upload/image; open the websocket;
POST /prompt; read messages until `executing` with node null for its prompt; GET /history; GET
/view; then base64 of the MP4 (base64 mode), or /view streamed to a file, a boto3 upload and a
presigned URL (S3 mode). Files it leaves in ComfyUI's folders and the bucket are removed after the
timed part.
"""
from __future__ import annotations

import base64
import json
import math
import random
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from . import procs

PROMPT = "the dragon turns its head slowly toward the camera, cinematic light"


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


# -- the worker ---------------------------------------------------------------------------------

class WorkerSide:
    """handler(job) exactly as RunPod calls it, in a warm process (settings + workflow loaded)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from wan_worker import handler, logs

        logs.setup("INFO")  # the container's default level; lines go to the bench's log file
        self.handler = handler
        self.mode, self.size = cfg["mode"], cfg["size"]
        self.image = base64.b64encode(Path(cfg["image"]).read_bytes()).decode("ascii")
        self.w = handler.worker()  # what the first job would build; part of the warm process
        if self.mode == "s3":
            from wan_worker import s3

            self.s3 = s3

    def job(self, n: int, sdk_send: bool = False) -> dict[str, Any]:
        job = {"id": f"bench-{self.mode}-{n}", "input": {"image": self.image, "prompt": PROMPT,
                                                         "output": self.mode}}
        t0 = time.perf_counter()
        result = self.handler.handler(job)
        wall = _ms(t0)
        if sdk_send:
            # What runpod's rp_http does next with the result: json.dumps, then aiohttp encodes the
            # text to bytes for the POST body, while the result is still referenced.
            body = json.dumps({"output": result}, ensure_ascii=False).encode("utf-8")
            del body
        if "error" in result:
            return {"ok": False, "error": f"{result.get('error_code')}: {result['error']}"}
        answer = {"ok": True, "wall_ms": wall, "timings_ms": result["timings_ms"], "bytes": result["bytes"]}
        if result["bytes"] != self.size:
            return {"ok": False, "error": f"got {result['bytes']} bytes, expected {self.size}"}
        if self.mode == "base64":
            if len(result["video"]) != 4 * math.ceil(self.size / 3):
                return {"ok": False, "error": "base64 video has the wrong length"}
        else:
            conn = self.s3.connection(self.w.settings)  # the worker's own client: no extra memory
            key = self.s3.object_key(job["id"], result["filename"])
            head = conn.client.head_object(Bucket=conn.bucket.name, Key=key)
            if head["ContentLength"] != self.size or head.get("ContentType") != "video/mp4":
                return {"ok": False, "error": f"S3 object {key} is wrong: {head['ContentLength']} bytes"}
            conn.client.delete_object(Bucket=conn.bucket.name, Key=key)
        del result
        return answer


# -- the floor ----------------------------------------------------------------------------------

class ProtocolFloor:
    """What every floor does, and nothing more: ComfyUI's protocol with requests and websocket-client."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import requests
        import websocket

        self.requests, self.websocket, self.cfg = requests, websocket, cfg
        self.image = base64.b64encode(Path(cfg["image"]).read_bytes()).decode("ascii")
        self.base = f"http://{cfg['comfy_host']}"
        self.ws_url = f"ws://{cfg['comfy_host']}/ws"
        self.comfy_dir = Path(cfg["comfy_dir"])
        self.session = requests.Session()
        self.client_id = str(uuid.uuid4())

    def upload(self, name: str, mime: str) -> str:
        """Decode the job's base64 image and upload it, as the worker does; ComfyUI's name for it."""
        up = self.session.post(f"{self.base}/upload/image", files={"image": (name, base64.b64decode(self.image), mime)},
                               data={"overwrite": "true"}, timeout=30)
        up.raise_for_status()
        return up.json()["name"]

    def execute(self, graph: dict[str, Any], prompt_id: str, ws_timeout: float) -> tuple[float, float, float]:
        """Queue the graph and read the websocket until it ran: (posted, queued, done) perf_counter times."""
        ws = self.websocket.create_connection(f"{self.ws_url}?clientId={self.client_id}", timeout=ws_timeout)
        try:
            t_post = time.perf_counter()
            queued = self.session.post(f"{self.base}/prompt", json={"prompt": graph, "client_id": self.client_id,
                                                                      "prompt_id": prompt_id}, timeout=30)
            queued.raise_for_status()
            t_queued = time.perf_counter()
            self.wait_done(ws, prompt_id)
            return t_post, t_queued, time.perf_counter()
        finally:
            ws.close()

    def wait_done(self, ws: Any, prompt_id: str) -> None:
        """Read messages until `executing` null for our prompt (an execution_error fails the job)."""
        for _ in range(1_000_000):  # bounded: a 128x128x5 run sends a few hundred messages
            message = ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                data = event.get("data") or {}
                if event.get("type") == "execution_error" and data.get("prompt_id") == prompt_id:
                    raise RuntimeError(f"execution error: {data.get('exception_message')}")
                if (event.get("type") == "executing" and data.get("node") is None
                        and data.get("prompt_id") == prompt_id):
                    return
        raise RuntimeError("no end of execution")

    def outputs(self, prompt_id: str) -> list[dict[str, Any]]:
        entry = self.session.get(f"{self.base}/history/{prompt_id}", timeout=30).json()[prompt_id]
        return [item for node_out in entry["outputs"].values() for item in node_out.get("images", [])
                if item.get("type") == "output"]


class FloorSide(ProtocolFloor):
    """The same job through nothing but ComfyUI's protocol (and boto3 for S3)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.mode, self.size = cfg["mode"], cfg["size"]
        graph = json.loads(Path(cfg["workflow"]).read_text())
        self.template = json.dumps(graph)
        self.ids = {node["_meta"]["title"]: node_id for node_id, node in graph.items()}
        self.tmp = Path(cfg["tmp"])  # inside the bench's temporary folder, removed with it
        self.tmp.mkdir(parents=True, exist_ok=True)
        if self.mode == "s3":
            import boto3
            from botocore.config import Config

            s3 = cfg["s3"]
            self.bucket = s3["bucket"]
            self.s3 = boto3.session.Session().client(
                "s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key"],
                aws_secret_access_key=s3["secret_key"], region_name="us-east-1",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))

    def graph(self, image_name: str, prefix: str) -> dict[str, Any]:
        g = json.loads(self.template)
        node = lambda title: g[self.ids[title]]["inputs"]  # noqa: E731
        node("Start Image")["image"] = image_name
        node("Positive Prompt")["text"] = PROMPT
        node("Image To Video").update(width=832, height=480)
        seed = random.randrange(2**63)
        node("High Noise Sampler")["noise_seed"] = seed
        node("Low Noise Sampler")["noise_seed"] = seed
        node("Save Video")["filename_prefix"] = prefix
        return g

    def job(self, n: int) -> dict[str, Any]:
        prompt_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        uploaded = self.upload(f"floor_{n}.jpg", "image/jpeg")
        graph = self.graph(uploaded, f"bench-floor/{prompt_id}/floor")
        _, t_queued, t_done = self.execute(graph, prompt_id, 30)
        out = next(item for item in self.outputs(prompt_id) if item["filename"].endswith(".mp4"))
        params = {"filename": out["filename"], "subfolder": out["subfolder"], "type": out["type"]}
        t_transfer = time.perf_counter()
        if self.mode == "base64":
            view = self.session.get(f"{self.base}/view", params=params, timeout=30)
            view.raise_for_status()
            video = base64.b64encode(view.content).decode("ascii")
            del view
            got = len(video)
            del video
            expected = 4 * math.ceil(self.size / 3)
        else:
            dest = self.tmp / out["filename"]
            with self.session.get(f"{self.base}/view", params=params, stream=True, timeout=30) as view, \
                    dest.open("wb") as fh:
                view.raise_for_status()
                for chunk in view.iter_content(1024 * 1024):
                    fh.write(chunk)
            key = f"bench-floor/{prompt_id}/{out['filename']}"
            self.s3.upload_file(str(dest), self.bucket, key, ExtraArgs={"ContentType": "video/mp4"})
            self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                           ExpiresIn=604800)
            got, expected = None, None
        t_end = time.perf_counter()
        answer = {"ok": True, "wall_ms": (t_end - t0) * 1000, "execute_ms": (t_done - t_queued) * 1000,
                  "transfer_ms": (t_end - t_transfer) * 1000}
        # untimed: check, then leave ComfyUI's folders and the bucket as they were
        if self.mode == "s3":
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            if head["ContentLength"] != self.size:
                answer = {"ok": False, "error": f"floor S3 object has {head['ContentLength']} bytes"}
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            dest.unlink()
        elif got != expected:
            answer = {"ok": False, "error": "floor base64 has the wrong length"}
        remove_job_files(self.comfy_dir, [out], uploaded)
        return answer


def remove_job_files(comfy_dir: Path, outs: list[dict[str, Any]], uploaded: str) -> None:
    """Untimed: a bare client keeps no folders tidy, but the bench leaves ComfyUI's as they were."""
    for out in outs:
        saved = comfy_dir / "output" / out["subfolder"] / out["filename"]
        saved.unlink(missing_ok=True)
        for folder in (saved.parent, saved.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                pass
    (comfy_dir / "input" / uploaded).unlink(missing_ok=True)


# -- readiness ----------------------------------------------------------------------------------

class ReadySide:
    """A fresh ComfyClient per trial, waiting for a stand-in that is still booting."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from wan_worker.comfy import ComfyClient
        from wan_worker.settings import load_settings

        self.client_class, self.settings = ComfyClient, load_settings()

    def wait(self, host: str, pid_file: str) -> dict[str, Any]:
        from dataclasses import replace

        client = self.client_class(replace(self.settings, comfy_host=host, comfy_pid_file=pid_file))
        started = time.monotonic()
        client.wait_until_ready()
        return {"ok": True, "ready_at": time.monotonic(), "waited_ms": (time.monotonic() - started) * 1000}


# -- the loop -----------------------------------------------------------------------------------

def serve(side: str, cfg: dict[str, Any], impls: dict[str, Any] | None = None) -> int:
    """Answer the bench's commands; `impls` maps side names to classes (bench.realsides has its own),
    and a side's `commands()`, when it has one, adds commands of its own."""
    proto = procs.protocol_stdout()

    def answer(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")

    try:
        impl: Any = (impls or {"worker": WorkerSide, "floor": FloorSide, "ready": ReadySide})[side](cfg)
    except Exception:  # noqa: BLE001 - reported to the bench
        answer({"fatal": traceback.format_exc()})
        return 1
    answer({"ready": True, "memory": procs.memory()})
    commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "job": lambda m: impl.job(m["n"], **({"sdk_send": True} if m.get("sdk_send") else {})),
        "memory": lambda m: {"memory": procs.memory()},
        "wait_ready": lambda m: impl.wait(m["host"], m["pid_file"]),
        **(impl.commands() if hasattr(impl, "commands") else {}),
    }
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("cmd") == "exit":
            break
        try:
            answer(commands[message["cmd"]](message))
        except Exception:  # noqa: BLE001 - the bench shows it and stops
            answer({"ok": False, "error": traceback.format_exc()})
    return 0


def main() -> int:
    procs.die_with_parent()
    side, cfg = sys.argv[1], json.loads(sys.argv[2])
    return serve(side, cfg)


if __name__ == "__main__":
    sys.exit(main())
