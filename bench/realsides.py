"""The two sides of the real-ComfyUI bench (`python -m bench --comfyui`), each in its own process.

    python -m bench.realsides worker CONFIG_JSON   handler(job), as a deployed worker runs it
    python -m bench.realsides floor CONFIG_JSON    a bare protocol client sending the identical graph

Two kinds of job (CONFIG_JSON's `kind`):

* `workflow`: a small PNG in, a workflow-mode graph (its LoadImage takes the upload, its save node
  writes under a folder of the run's own, as wan_worker.workflow.isolate_outputs does), every saved
  file out as base64. The bench's graphs are instant (LoadImage -> SaveImage) or make a ~10 MB PNG.
* `i2v`: the bundled Wan2.2 graph at 128x128x5 through handler() in I2V mode. The floor gets the
  graph the worker builds (wan_worker.workflow.build_i2v, made once by the bench) and sets the same
  four things per job the worker sets: start image, both seeds, the save prefix.

Both sides upload under a name of the job's own and use job n's seed, so ComfyUI does the same
work for both (its cache sees a new image each job). Timing and memory rules are bench.sides':
each side times itself with perf_counter; the floor's execute is from `POST /prompt` answered to
`executing` null, as the worker's timings_ms.execute. Checks and clean-up are untimed on the floor
(a bare client has no folders to keep tidy); the worker cleans up inside handler(), as it must.
"""
from __future__ import annotations

import base64
import copy
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from . import sides

SEED0 = 1000


def b64_len(n_bytes: int) -> int:
    """Length of the base64 text of n bytes (padding included)."""
    return 4 * ((n_bytes + 2) // 3)


class RealWorkerSide:
    """handler(job) in a warm process, against the real ComfyUI whose folders it shares."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from wan_worker import handler, logs

        logs.setup("INFO")
        self.handler, self.cfg = handler, cfg
        self.image = base64.b64encode(Path(cfg["image"]).read_bytes()).decode("ascii")
        self.w = handler.worker()

    def job_input(self, n: int) -> dict[str, Any]:
        """Job n's input: its own upload name and seed, so ComfyUI redoes the work for each job."""
        cfg = self.cfg
        if cfg["kind"] == "i2v":
            return {"image": self.image, "prompt": cfg["prompt"], "negative_prompt": cfg["negative"],
                    "width": 128, "height": 128, "length": 5, "seed": SEED0 + n, "output": "base64"}
        graph = copy.deepcopy(cfg["graph"])
        name = f"wbw_{n}.{cfg.get('ext', 'png')}"
        graph[cfg["load_node"]]["inputs"][cfg.get("load_input", "image")] = name
        return {"workflow": graph, "images": [{"name": name, "image": self.image}], "output": "base64"}

    def job(self, n: int) -> dict[str, Any]:
        job = {"id": f"bench-{self.cfg['kind']}-{n}", "input": self.job_input(n)}
        t0 = time.perf_counter()
        result = self.handler.handler(job)
        wall = sides._ms(t0)
        if "error" in result:
            return {"ok": False, "error": f"{result.get('error_code')}: {result['error']}"}
        timings = result["timings_ms"]
        if self.cfg["kind"] == "i2v":
            size = result["bytes"]
            ok = len(result["video"]) == b64_len(size)
        else:
            texts = [item["data"] for item in result["images"]]
            size = sum(len(t) * 3 // 4 - t[-2:].count("=") for t in texts)
            ok = len(texts) == 1
            del texts
        del result
        if not ok:
            return {"ok": False, "error": "the result's base64 is not what was expected"}
        return {"ok": True, "wall_ms": wall, "timings_ms": timings, "bytes": size}

    def commands(self) -> dict[str, Any]:
        """`graph`: the I2V graph this worker queues for job 0 (its own dry run), for the floor."""
        return {"graph": lambda m: self.dry_run_graph()}

    def dry_run_graph(self) -> dict[str, Any]:
        job_input = {**self.job_input(0), "dry_run": True}
        result = self.handler.handler({"id": "bench-graph", "input": job_input})
        if "error" in result:
            return {"ok": False, "error": result["error"]}
        return {"ok": True, "graph": result["workflow"]}


class RealFloorSide(sides.ProtocolFloor):
    """The same job through nothing but ComfyUI's protocol: upload, websocket, prompt, history, view."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.template = json.dumps(cfg["graph"])
        self.titles = {node.get("_meta", {}).get("title"): node_id for node_id, node in cfg["graph"].items()}

    def graph(self, n: int, image_name: str, prompt_id: str) -> dict[str, Any]:
        """The worker's graph with this job's image, seed and a save folder of the run's own."""
        g = json.loads(self.template)
        folder = f"bench-floor/{prompt_id}"
        if self.cfg["kind"] == "i2v":
            g[self.titles["Start Image"]]["inputs"]["image"] = image_name
            for title in ("High Noise Sampler", "Low Noise Sampler"):
                g[self.titles[title]]["inputs"]["noise_seed"] = SEED0 + n
            g[self.titles["Save Video"]]["inputs"]["filename_prefix"] = f"{folder}/floor"
            return g
        g[self.cfg["load_node"]]["inputs"][self.cfg.get("load_input", "image")] = image_name
        for node in g.values():
            prefix = node["inputs"].get("filename_prefix")
            if isinstance(prefix, str):
                node["inputs"]["filename_prefix"] = f"{folder}/{prefix}"
        return g

    def job(self, n: int) -> dict[str, Any]:
        prompt_id = str(uuid.uuid4())
        ext = self.cfg.get("ext", "png")
        name = f"wan_floor-{self.cfg['kind']}-{n}.png" if self.cfg["kind"] == "i2v" else f"wbf_{n}.{ext}"
        t0 = time.perf_counter()
        uploaded = self.upload(name, "video/mp4" if ext == "mp4" else "image/png")
        t_post, t_queued, t_done = self.execute(self.graph(n, uploaded, prompt_id), prompt_id, 600)
        outs = self.outputs(prompt_id)
        t_transfer = time.perf_counter()
        texts = []
        for out in outs:
            view = self.session.get(f"{self.base}/view", params={k: out[k] for k in ("filename", "subfolder", "type")},
                                    timeout=30)
            view.raise_for_status()
            texts.append(base64.b64encode(view.content).decode("ascii"))
            del view
        t_end = time.perf_counter()
        size = sum(len(t) * 3 // 4 - t[-2:].count("=") for t in texts)
        del texts
        answer = {"ok": len(outs) == 1, "wall_ms": (t_end - t0) * 1000, "execute_ms": (t_done - t_queued) * 1000,
                  "transfer_ms": (t_end - t_transfer) * 1000, "bytes": size,
                  "queue_ms": (t_queued - t_post) * 1000}
        if not answer["ok"]:
            answer["error"] = f"the floor got {len(outs)} outputs"
        sides.remove_job_files(self.comfy_dir, outs, uploaded)  # untimed
        return answer


def main() -> int:
    sides.procs.die_with_parent()
    side, cfg = sys.argv[1], json.loads(sys.argv[2])
    return sides.serve(side, cfg, {"worker": RealWorkerSide, "floor": RealFloorSide})


if __name__ == "__main__":
    sys.exit(main())
