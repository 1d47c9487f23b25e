"""The processes the bench starts: `python -m bench.sides SIDE CONFIG_JSON`.

* `worker`: the real handler(job) in a warm process, as a deployed worker runs it; `run` takes any
  job from the bench (soak, segments) and answers with the result and what the process holds.
* `floor`: a bare protocol client doing the same job with nothing but ComfyUI's protocol
  (requests, websocket-client, boto3): the least any client must do.
* `ready`: ComfyClient.wait_until_ready() against booting stand-ins; `volume`: the volume check
  cold and warm; `standin`: the stand-in ComfyUI (bench/standin.py).

Commands arrive as JSON lines on stdin, answers leave as JSON lines on stdout; log lines go to the
bench's log file. Each side times itself with perf_counter, so talking to the bench is never timed.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import mimetypes
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable

from . import harness

SEED0 = 1000


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def b64_len(n_bytes: int) -> int:
    """Length of the base64 text of n bytes (padding included)."""
    return 4 * math.ceil(n_bytes / 3)


def job_name(cfg: dict[str, Any], who: str, n: int) -> str:
    """Job n's upload name on one side: its own, so ComfyUI redoes the work for each job."""
    return f"wb{who}_{n}{Path(cfg['image']).suffix}"


def workflow_for(cfg: dict[str, Any], name: str, folder: str = "") -> dict[str, Any]:
    """cfg's workflow with this job's upload loaded (and, for the floor, saved under `folder`)."""
    graph = copy.deepcopy(cfg["graph"])
    graph[cfg["load_node"]]["inputs"][cfg["load_input"]] = name
    for node in graph.values() if folder else ():
        if isinstance(node["inputs"].get("filename_prefix"), str):
            node["inputs"]["filename_prefix"] = f"{folder}/{node['inputs']['filename_prefix']}"
    return graph


# -- the worker -----------------------------------------------------------------------------------

class WorkerSide:
    """handler(job) exactly as RunPod calls it, in a warm process (settings + workflow loaded).

    cfg: `image` (a file sent as base64 with every job) and either `input` (a bundled-graph job
    without its image) or `graph`, `load_node`, `load_input` (a workflow-mode job); `size`, when
    set, is the MP4 size the stand-in serves."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from wan_worker import handler, logs

        logs.setup("INFO")  # the container's default level; lines go to the bench's log file
        self.handler, self.cfg = handler, cfg
        self.image = base64.b64encode(Path(cfg["image"]).read_bytes()).decode("ascii") if cfg.get("image") else ""
        self.w = handler.worker()  # what the first job would build; part of the warm process
        if cfg.get("input", {}).get("output") == "s3":
            from wan_worker import s3  # noqa: F401 - loaded as a warm worker that delivered to S3 has it

    def job_input(self, n: int) -> dict[str, Any]:
        if "input" in self.cfg:
            return {**self.cfg["input"], "image": self.image, "seed": SEED0 + n}
        name = job_name(self.cfg, "w", n)
        return {"workflow": workflow_for(self.cfg, name), "images": [{"name": name, "image": self.image}],
                "output": "base64"}

    def job(self, n: int, sdk_send: bool = False) -> dict[str, Any]:
        job = {"id": f"bench-{self.cfg.get('tag', 'job')}-{n}", "input": self.job_input(n)}
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
        problem, size = self.check(job["id"], result)
        timings = result["timings_ms"]
        del result
        if problem:
            return {"ok": False, "error": problem}
        return {"ok": True, "wall_ms": wall, "timings_ms": timings, "bytes": size}

    def check(self, job_id: str, result: dict[str, Any]) -> tuple[str, int]:
        """Untimed: (what is wrong or '', the bytes delivered); an S3 object is removed again."""
        if "images" in result:  # workflow mode: every saved file as base64
            texts = [item["data"] for item in result["images"]]
            size = sum(len(t) * 3 // 4 - t[-2:].count("=") for t in texts)  # the bytes the text decodes to
            return ("" if len(texts) == 1 else f"{len(texts)} outputs"), size
        size = result["bytes"]
        if self.cfg.get("size") and size != self.cfg["size"]:
            return f"got {size} bytes, expected {self.cfg['size']}", size
        if "video" in result:
            return ("" if len(result["video"]) == b64_len(size) else "base64 video has the wrong length"), size
        from wan_worker import s3

        conn = s3.connection(self.w.settings)  # the worker's own client: no extra memory
        key = s3.object_key(job_id, result["filename"])
        head = conn.client.head_object(Bucket=conn.bucket.name, Key=key)
        conn.client.delete_object(Bucket=conn.bucket.name, Key=key)
        ok = head["ContentLength"] == size and head.get("ContentType") == "video/mp4"
        return ("" if ok else f"S3 object {key} is wrong: {head['ContentLength']} bytes"), size

    def commands(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"job": lambda m: self.job(m["n"], m.get("sdk_send", False)), "graph": lambda m: self.graph(),
                "run": lambda m: self.run(m["job"])}

    def graph(self) -> dict[str, Any]:
        """The graph this worker queues for job 0 (its own dry run), for the floor."""
        result = self.handler.handler({"id": "bench-graph", "input": {**self.job_input(0), "dry_run": True}})
        return {"ok": "error" not in result, "error": result.get("error"), "graph": result.get("workflow")}

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Any job as the bench sends it; the answer once the worker's background clean-up is done."""
        from wan_worker import background

        t0 = time.perf_counter()
        result = self.handler.handler(job)
        wall_ms = _ms(t0)
        background.wait_idle(5.0)
        return {"result": result, "wall_ms": wall_ms, **harness.snapshot()}


# -- the floor ------------------------------------------------------------------------------------

class FloorSide:
    """The same job through nothing but ComfyUI's protocol: decode the job's base64 image, upload it,
    open the websocket, POST /prompt, read until `executing` null, GET /history, GET /view, then
    base64 of every output, or /view streamed to a file, a boto3 upload and a presigned URL (s3).
    Checks and clean-up are untimed: a bare client keeps no folders tidy."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import requests
        import websocket

        self.websocket, self.cfg = websocket, cfg
        self.image = base64.b64encode(Path(cfg["image"]).read_bytes()).decode("ascii")
        self.mime = mimetypes.guess_type(cfg["image"])[0] or "application/octet-stream"
        self.base, self.ws_url = f"http://{cfg['comfy_host']}", f"ws://{cfg['comfy_host']}/ws"
        self.comfy_dir = Path(cfg["comfy_dir"])
        self.session = requests.Session()
        self.client_id = str(uuid.uuid4())
        self.template = json.dumps(cfg["graph"])
        self.titles = {node.get("_meta", {}).get("title"): node_id for node_id, node in cfg["graph"].items()}
        self.s3 = None
        if cfg.get("s3"):
            import boto3
            from botocore.config import Config

            self.bucket = cfg["s3"]["bucket"]
            self.tmp = Path(cfg["s3"]["tmp"])  # inside the bench's temporary folder, removed with it
            self.tmp.mkdir(parents=True, exist_ok=True)
            self.s3 = boto3.session.Session().client(
                "s3", endpoint_url=cfg["s3"]["endpoint"], aws_access_key_id=cfg["s3"]["access_key"],
                aws_secret_access_key=cfg["s3"]["secret_key"], region_name="us-east-1",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))

    def graph(self, n: int, image_name: str, folder: str) -> dict[str, Any]:
        """The worker's graph with this job's image, seed and a save folder of its own."""
        if "load_node" in self.cfg:  # a workflow-mode job
            return workflow_for(self.cfg, image_name, folder)
        g = json.loads(self.template)
        g[self.titles["Start Image"]]["inputs"]["image"] = image_name
        for title in ("High Noise Sampler", "Low Noise Sampler"):
            g[self.titles[title]]["inputs"]["noise_seed"] = SEED0 + n
        g[self.titles["Save Video"]]["inputs"]["filename_prefix"] = f"{folder}/floor"
        return g

    def job(self, n: int) -> dict[str, Any]:
        prompt_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        up = self.session.post(f"{self.base}/upload/image", data={"overwrite": "true"}, timeout=30,
                               files={"image": (job_name(self.cfg, "f", n), base64.b64decode(self.image), self.mime)})
        up.raise_for_status()
        uploaded = up.json()["name"]
        ws = self.websocket.create_connection(f"{self.ws_url}?clientId={self.client_id}", timeout=600)
        try:
            t_post = time.perf_counter()
            self.session.post(f"{self.base}/prompt", timeout=30, json={
                "prompt": self.graph(n, uploaded, f"bench-floor/{prompt_id}"), "client_id": self.client_id,
                "prompt_id": prompt_id}).raise_for_status()
            t_queued = time.perf_counter()
            self.wait_done(ws, prompt_id)
            t_done = time.perf_counter()
        finally:
            ws.close()
        entry = self.session.get(f"{self.base}/history/{prompt_id}", timeout=30).json()[prompt_id]
        outs = [item for node_out in entry["outputs"].values() for item in node_out.get("images", [])
                if item.get("type") == "output"]
        t_transfer = time.perf_counter()
        delivered = [self.deliver(out, prompt_id) for out in outs]
        t_end = time.perf_counter()
        answer = {"ok": True, "wall_ms": (t_end - t0) * 1000, "execute_ms": (t_done - t_queued) * 1000,
                  "transfer_ms": (t_end - t_transfer) * 1000, "queue_ms": (t_queued - t_post) * 1000,
                  "bytes": sum(self.stored_bytes(key) if key else size for size, key in delivered)}
        if len(outs) != 1 or answer["bytes"] != self.cfg.get("size", answer["bytes"]):  # the stand-in's MP4
            answer = {"ok": False, "error": f"the floor got {len(outs)} outputs, {answer['bytes']} bytes"}
        for out in outs:  # leave ComfyUI's folders as they were
            saved = self.comfy_dir / "output" / out["subfolder"] / out["filename"]
            saved.unlink(missing_ok=True)
            for folder in (saved.parent, saved.parent.parent):
                try:
                    folder.rmdir()
                except OSError:
                    pass
        (self.comfy_dir / "input" / uploaded).unlink(missing_ok=True)
        return answer

    def wait_done(self, ws: Any, prompt_id: str) -> None:
        """Read messages until `executing` null for our prompt (an execution_error fails the job)."""
        for _ in range(1_000_000):  # bounded: a 128x128x5 run sends a few hundred messages
            message = ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                data = event.get("data") or {}
                if event.get("type") == "execution_error" and data.get("prompt_id") == prompt_id:
                    raise RuntimeError(f"execution error: {data.get('exception_message')}")
                if event.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    return
        raise RuntimeError("no end of execution")

    def deliver(self, out: dict[str, Any], prompt_id: str) -> tuple[int, str]:
        """One output as a client delivers it, sent on as base64 text or uploaded to S3: (its bytes,
        its S3 key or '')."""
        params = {k: out[k] for k in ("filename", "subfolder", "type")}
        if self.s3 is None:
            view = self.session.get(f"{self.base}/view", params=params, timeout=30)
            view.raise_for_status()
            base64.b64encode(view.content).decode("ascii")  # the text a client sends on: its cost is the point
            return len(view.content), ""
        dest = self.tmp / out["filename"]
        with self.session.get(f"{self.base}/view", params=params, stream=True, timeout=30) as view, \
                dest.open("wb") as fh:
            view.raise_for_status()
            for chunk in view.iter_content(1024 * 1024):
                fh.write(chunk)
        key = f"bench-floor/{prompt_id}/{out['filename']}"
        self.s3.upload_file(str(dest), self.bucket, key, ExtraArgs={"ContentType": "video/mp4"})
        self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=604800)
        return dest.stat().st_size, key

    def stored_bytes(self, key: str) -> int:
        """Untimed: the size of what reached the bucket; the object and the local copy are removed."""
        (self.tmp / key.rsplit("/", 1)[-1]).unlink()
        size = self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return size

    def commands(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"job": lambda m: self.job(m["n"])}


# -- readiness and the volume check ----------------------------------------------------------------

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

    def commands(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"wait_ready": lambda m: self.wait(m["host"], m["pid_file"])}


class VolumeSide:
    """check_volume() of the set an I2V job checks: the first call in this fresh process (cold: YAML
    not parsed, no header cached), N more (warm), and one after a file's mtime changed."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from wan_worker.models import DEFAULT_SET, MODEL_SETS, check_volume
        from wan_worker.settings import load_settings

        self.settings, self.check_volume, self.set = load_settings(), check_volume, MODEL_SETS[DEFAULT_SET]

    def check(self) -> Any:
        report = self.check_volume(self.settings, self.set.names, self.set.name)
        if not report.ok:
            raise RuntimeError(f"volume check failed: {report.to_dict()}")
        return report

    def timed(self) -> tuple[float, Any]:
        t0 = time.perf_counter()
        report = self.check()
        return _ms(t0), report

    def run(self, runs: int) -> dict[str, Any]:
        cold, report = self.timed()
        warm = [self.timed()[0] for _ in range(runs)]
        path = Path(report.files[0].path or "")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # its header is read again
        changed = self.timed()[0]
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return {"cold_ms": cold, "warm_ms": warm, "changed_ms": changed, "files": [f.path for f in report.files]}

    def commands(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"check": lambda m: self.run(m["runs"])}


# -- the loop -------------------------------------------------------------------------------------

SIDES: dict[str, Any] = {"worker": WorkerSide, "floor": FloorSide, "ready": ReadySide, "volume": VolumeSide}


def serve(kind: str, cfg: dict[str, Any]) -> int:
    """Answer the bench's commands, one JSON line each, until `exit` or the end of stdin."""
    proto = harness.protocol_stdout()

    def answer(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")

    try:
        impl = SIDES[kind](cfg)
    except Exception:  # noqa: BLE001 - reported to the bench
        answer({"fatal": traceback.format_exc()})
        return 1
    answer({"ready": True, "memory": harness.memory(), **harness.snapshot()})
    commands = {"memory": lambda m: {"memory": harness.memory()}, **impl.commands()}
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
    harness.die_with_parent()
    kind, cfg = sys.argv[1], json.loads(sys.argv[2])
    if kind == "standin":
        from .standin import serve_standin

        return serve_standin(cfg)
    return serve(kind, cfg)


if __name__ == "__main__":
    sys.exit(main())
