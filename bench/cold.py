"""`python -m bench --cold`: the first job of a fresh worker on a slow network volume (bench/
fusevol.py: 2 ms a read request, 400 MB/s), the i2v-14b set's tiny models padded to 2 GB, the whole
container start (`bash entrypoint.sh`) with the page cache dropped: cold, with PREFETCH_MODELS,
with WARMUP, and hot. A loading job (the I2V graph's loader nodes) measures reading apart from the
CPU-bound sampling; then one I2V job. Method and runs: bench/results/cold-start.md."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import requests

from . import REPO, fusevol
from .harness import BenchError, Mode, log, markdown

LATENCY_S = 0.002
BANDWIDTH = 400 * fusevol.MB
PAD_TOTAL = 2 * 1000**3
JOB_TIMEOUT_S = 900
SCENARIOS = ("cold", "prefetch", "warm-up", "hot")
BUDGET = 1.3  # prefetch: the read part of model_load within 1.3x the floor


def pad_safetensors(path: Path, extra: int) -> None:
    """Append one tensor of about `extra` bytes (a hole: no disk used) in the file's dominant dtype,
    so ComfyUI reads it like a weight and takes the file's dtype from the real ones as before."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    sizes = {"F8_E4M3": 1, "F8_E5M2": 1, "U8": 1, "I8": 1, "BF16": 2, "F16": 2, "F32": 4, "I64": 8, "I32": 4}
    weight: dict[str, int] = {}
    for name, entry in header.items():
        if name != "__metadata__":
            count = (entry["data_offsets"][1] - entry["data_offsets"][0]) // sizes.get(entry["dtype"], 1)
            weight[entry["dtype"]] = weight.get(entry["dtype"], 0) + count
    dtype = max(weight, key=weight.__getitem__)
    count = extra // sizes[dtype]
    end = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
    header["bench_padding"] = {"dtype": dtype, "shape": [count], "data_offsets": [end, end + count * sizes[dtype]]}
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    tmp = path.with_name(path.name + ".pad")
    with tmp.open("wb") as fh:
        fh.write(struct.pack("<Q", len(new)) + new + data[:end])
        fh.truncate(8 + len(new) + end + count * sizes[dtype])
    tmp.replace(path)


LOADERS = ("UNETLoader", "LoraLoaderModelOnly", "CLIPLoader", "VAELoader")


def load_graph() -> dict[str, Any]:
    """The bundled I2V graph's loader nodes alone, each into a PreviewAny (plus a tiny saved image, so
    the job has an output): ComfyUI reads every file of the set and builds the models, nothing more.
    Its `execute` is model loading without the text encode and sampling that the CPU makes slow here."""
    bundled = json.loads((REPO / "workflows" / "wan22_i2v.json").read_text())
    graph = {k: {"class_type": n["class_type"], "inputs": n["inputs"]} for k, n in bundled.items()
             if n["class_type"] in LOADERS}
    used = {v[0] for n in graph.values() for v in n["inputs"].values() if isinstance(v, list)}
    for k in [k for k in graph if k not in used]:
        graph[f"p{k}"] = {"class_type": "PreviewAny", "inputs": {"source": [k, 0]}}
    graph["img"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    graph["save"] = {"class_type": "SaveImage", "inputs": {"images": ["img", 0], "filename_prefix": "load"}}
    return graph


def served_bytes(pid: int) -> int:
    """What the FUSE server has read from the real files (rchar of its process)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Cold:
    def __init__(self, tmp: Path, i2v: bool = True) -> None:
        from tests.comfyui.conftest import comfy_python, comfyui_dir

        self.tmp, self.log = tmp / "cold", log
        self.python, self.src = comfy_python(), comfyui_dir()
        why = fusevol.unavailable()
        if why:
            raise BenchError(f"--cold needs the FUSE simulation: {why}")
        if os.geteuid() != 0:
            raise BenchError("--cold drops the page cache (/proc/sys/vm/drop_caches): run it as root")
        if not (self.src / "main.py").is_file() or not self.python.is_file():
            raise BenchError(f"--cold needs ComfyUI ({self.src}) and its interpreter ({self.python}): "
                             "set COMFYUI_DIR and COMFY_PYTHON")
        self.volume: fusevol.SlowVolume | None = None
        self.i2v = i2v

    def setup(self) -> dict[str, Any]:
        from tests.comfyui.conftest import copy_comfyui, make_tiny_models, volume_yaml
        from wan_worker.models import MODEL_SETS

        store = self.tmp / "store"
        models = store / "runpod-slim" / "ComfyUI" / "models"
        make_tiny_models(self.python, models)
        files = MODEL_SETS["i2v-14b"].files
        real_total = sum(m.approx_bytes for m in files)
        for m in files:
            pad_safetensors(models / m.folder / m.name, int(PAD_TOTAL * m.approx_bytes / real_total))
        self.set_bytes = sum((models / m.folder / m.name).stat().st_size for m in files)
        mount = self.tmp / "runpod-volume"
        self.volume = fusevol.SlowVolume(store, mount, LATENCY_S, BANDWIDTH, log=self.tmp / "fusevol.log")
        self.volume.mount()
        self.yaml = volume_yaml(self.tmp / "extra_model_paths.yaml", mount, self.tmp / "workspace")
        self.comfy_dir = copy_comfyui(self.src, self.tmp / "comfyui")
        self.log(f"i2v-14b set padded to {self.set_bytes / 1e9:.2f} GB behind a FUSE volume at {mount} "
                 f"({LATENCY_S * 1000:g} ms a request, {BANDWIDTH / fusevol.MB:g} MB/s)")
        return {"set_bytes": self.set_bytes, "latency_ms": LATENCY_S * 1000, "bandwidth_mb_s": BANDWIDTH / fusevol.MB,
                "floor_s": round(self.set_bytes / BANDWIDTH, 2)}

    def stop(self) -> None:
        if self.volume is not None:
            self.volume.unmount()
            self.volume = None

    def scenario(self, name: str) -> dict[str, Any]:
        from tests.comfyui.conftest import COMFY_FLAGS, NEGATIVE, PROMPT, start_image
        from tests.conftest import free_port

        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "COMFY_", "PREFETCH", "WARMUP"))}
        comfy_port, api_port = free_port(), free_port()
        env.update({"COMFY_DIR": str(self.comfy_dir), "COMFY_PYTHON": str(self.python),
                    "WORKER_PYTHON": sys.executable, "COMFY_PORT": str(comfy_port),
                    "COMFY_PID_FILE": str(self.tmp / "comfyui.pid"), "EXTRA_MODEL_PATHS": str(self.yaml),
                    "COMFY_ARGS": " ".join([*COMFY_FLAGS[3:], "--disable-mmap"]), "COMFY_START_TIMEOUT_S": "300",
                    "JOB_TIMEOUT_S": str(JOB_TIMEOUT_S), "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src")})
        if name == "prefetch":
            env["PREFETCH_MODELS"] = "i2v-14b"
        if name == "warm-up":
            env["WARMUP"] = "i2v"
        drop_caches()  # every scenario starts with the libraries (torch, ComfyUI) out of the cache too
        if name == "hot":
            for m in self._set_paths():
                with open(m, "rb") as fh:
                    while fh.read(16 << 20):
                        pass
        log_path = self.tmp / f"entrypoint-{name}.log"
        out: dict[str, Any] = {"scenario": name}
        with log_path.open("wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(["bash", str(REPO / "entrypoint.sh"), "--rp_serve_api", "--rp_api_host",
                                     "127.0.0.1", "--rp_api_port", str(api_port)], cwd=self.tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            api = f"http://127.0.0.1:{api_port}"
            self._wait(lambda: requests.get(f"{api}/docs", timeout=1).ok, proc, log_path, 300)
            out["api_ready_s"] = round(time.monotonic() - started, 1)
            self._wait(lambda: requests.get(f"http://127.0.0.1:{comfy_port}/system_stats", timeout=1).ok, proc,
                       log_path, 300)
            out["comfy_ready_s"] = round(time.monotonic() - started, 1)
            if name == "warm-up":
                self._wait(lambda: "warm-up i2v " in log_path.read_text(errors="replace"), proc, log_path,
                           JOB_TIMEOUT_S)
                out["warmup_done_s"] = round(time.monotonic() - started, 1)
            fuse_pid = self.volume.proc.pid if self.volume and self.volume.proc else 0
            served = served_bytes(fuse_pid)
            result = self.runsync(api, {"workflow": load_graph()}, started, log_path)
            out.update(load_sent_s=result["sent_s"], load_s=round(result["timings_ms"]["execute"] / 1000, 2),
                       load_volume_gb=round((served_bytes(fuse_pid) - served) / 1e9, 2))
            if self.i2v:
                import base64

                job = {"image": base64.b64encode(start_image(128, 128)).decode(), "prompt": PROMPT, "seed": 5,
                       "negative_prompt": NEGATIVE, "width": 128, "height": 128, "length": 5, "steps": 2,
                       "output": "base64"}
                result = self.runsync(api, job, started, log_path)
                out.update(job_sent_s=result["sent_s"], job_done_s=round(time.monotonic() - started, 1),
                           model_load_s=round(result["timings_ms"].get("model_load", float("nan")) / 1000, 2),
                           execute_s=round(result["timings_ms"]["execute"] / 1000, 2), warm=result.get("warm"))
            text = log_path.read_text(errors="replace")
            done = [ln for ln in text.splitlines() if ln.startswith("[prefetch] done:")]
            if done:
                out["prefetch"] = done[0].removeprefix("[prefetch] ")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.log(f"{name}: {out}")
        return out

    @staticmethod
    def runsync(api: str, job_input: dict[str, Any], started: float, log_path: Path) -> dict[str, Any]:
        """One job through the worker's local API; its output, with when it was sent (s after the start)."""
        sent = round(time.monotonic() - started, 1)
        body = requests.post(f"{api}/runsync", json={"input": job_input}, timeout=JOB_TIMEOUT_S).json()
        result = body.get("output") or {}
        if body.get("status") != "COMPLETED" or "timings_ms" not in result:
            raise BenchError(f"a job failed: {str(body)[:500]} (log {log_path})")
        return {**result, "sent_s": sent}

    def _set_paths(self) -> list[Path]:
        from wan_worker.models import MODEL_SETS

        root = self.tmp / "runpod-volume" / "runpod-slim" / "ComfyUI" / "models"
        return [root / m.folder / m.name for m in MODEL_SETS["i2v-14b"].files]

    @staticmethod
    def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"entrypoint exited ({proc.returncode}); log {log_path}")
            with contextlib.suppress(requests.RequestException, OSError):
                if check():
                    return
            time.sleep(0.2)
        raise BenchError(f"timed out after {timeout:.0f} s; log {log_path}")


def run(bench: Any, scenarios: tuple[str, ...], i2v: bool = True) -> None:
    cold = Cold(bench.tmp, i2v)
    try:
        bench.results["cold"] = {"volume": cold.setup(), "runs": []}
        for name in scenarios:
            bench.results["cold"]["runs"].append(cold.scenario(name))
    finally:
        cold.stop()


def table(results: dict[str, Any]) -> str:
    cold = results.get("cold") or {}
    vol, runs = cold.get("volume") or {}, {r["scenario"]: r for r in cold.get("runs", [])}
    floor = vol.get("floor_s", float("nan"))
    hot = runs.get("hot", {}).get("load_s")
    head = ["scenario", "worker API up, s", "ComfyUI up, s", "loading job sent, s", "its model loading, s", "x floor",
            "read from the volume meanwhile, GB", "I2V job: model_load, s", "I2V job done, s", "warm"]
    rows = [[name, *(str(r.get(k, "")) for k in ("api_ready_s", "comfy_ready_s", "load_sent_s", "load_s")),
             f"{r.get('load_s', float('nan')) / floor:.2f}",
             *(str(r.get(k, "")) for k in ("load_volume_gb", "model_load_s", "job_done_s", "warm"))]
            for name, r in ((n, runs[n]) for n in SCENARIOS if n in runs)]
    lines = [f"Volume: the i2v-14b set padded to {vol.get('set_bytes', 0) / 1e9:.2f} GB, {vol.get('latency_ms')} ms a "
             f"read request, {vol.get('bandwidth_mb_s')} MB/s: floor (size / bandwidth) {floor:.2f} s", "",
             markdown(head, rows, pad=False)]
    if hot is not None:
        lines.append(f"\nhot (every file in the page cache): {hot} s of loading is CPU (building the models, "
                     "copying the tensors), not reading")
    for name in SCENARIOS:
        if runs.get(name, {}).get("prefetch"):
            lines.append(f"prefetch ({name}): {runs[name]['prefetch']}: "
                         f"{prefetch_seconds(runs[name]['prefetch']) / floor:.2f}x floor")
        if runs.get(name, {}).get("warmup_done_s"):
            lines.append(f"warm-up done {runs[name]['warmup_done_s']} s after the container started")
    return "\n".join(lines)


def prefetch_seconds(line: str) -> float:
    """The seconds of a `done: 2.30 GB of 6 files in 6.2 s (371 MB/s)` line."""
    return float(line.split(" in ", 1)[1].split(" s", 1)[0])


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """Prefetch reads the set within 1.3x the floor, and the first job's model loading with it costs
    at most 1.3x the floor more than with every file already cached (hot)."""
    cold = results.get("cold") or {}
    runs = {r["scenario"]: r for r in cold.get("runs", [])}
    floor = cold.get("volume", {}).get("floor_s", 0)
    out = []
    if "prefetch" in runs and runs["prefetch"].get("prefetch"):
        out.append((f"prefetch reads the set in <= {BUDGET}x floor",
                    prefetch_seconds(runs["prefetch"]["prefetch"]) <= BUDGET * floor))
    if "prefetch" in runs and "hot" in runs:
        out.append((f"first job's model loading with prefetch - hot <= {BUDGET}x floor",
                    runs["prefetch"]["load_s"] - runs["hot"]["load_s"] <= BUDGET * floor))
    return out


MODE = Mode(
    title="cold-start bench", quick_label=False, sections=lambda r: [table(r)], verdicts=verdicts,
    run=lambda b, a: run(b, tuple(s for s in a.scenarios.split(",") if s), i2v=not a.load_only),
)
