"""`python -m bench --soak [N]`: N mixed jobs (default 200) through one warm worker on the real
ComfyUI, ComfyUI killed mid-job and restarted half-way: does anything grow or stay behind? After
every job: the worker's memory, file descriptors and threads, ComfyUI's folders, queue, history
and memory, the job's overhead; every video decoded and looked at. Method: bench/results/soak.md."""
from __future__ import annotations

import base64
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .harness import BenchError, Child, Mode, RealComfyUI, log, markdown, side, vm

SIDE, LENGTH, STEPS = 128, 5, 2
KILL_STEPS = 12  # the killed job samples long enough to be killed mid-way
JOB_TIMEOUT_S = 900  # a job after ComfyUI's restart pays the cold text encode again
USER_LORA = "user/soak_style.safetensors"
NOISE_MB = 4.0  # resident memory may move this much between windows (allocator, caches)
OVERHEAD_NOISE = 1.25  # overhead may move this much between windows on a shared machine
VIDEO_KINDS = ("i2v", "t2v", "flf", "lora", "kill")
MIX = ("i2v", "dry i2v", "t2v", "bad", "flf", "instant", "lora", "dry t2v", "bad", "exec error")


@dataclass(frozen=True)
class Assets:
    image: str  # base64 PNG, 128x128
    end_image: str
    prompt: str
    negative: str

    def i2v(self, n: int, **extra: Any) -> dict[str, Any]:
        return {"image": self.image, "prompt": self.prompt, "negative_prompt": self.negative, "width": SIDE,
                "height": SIDE, "length": LENGTH, "steps": STEPS, "seed": n, "output": "base64", **extra}

    def t2v(self, n: int, **extra: Any) -> dict[str, Any]:
        job = self.i2v(n, **extra)
        del job["image"]
        return job


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bad_inputs(a: Assets) -> list[tuple[str, dict[str, Any], str]]:
    """(what is wrong, the job input, the error code it must end with), in rotation."""
    png = base64.b64decode(a.image)
    unknown_node = {"1": {"class_type": "NoSuchNodeAnywhere", "inputs": {}}}
    return [
        ("empty prompt", a.i2v(0, prompt=""), "INVALID_INPUT"),
        ("image is not base64", a.i2v(0, image="this is not base64!"), "INVALID_INPUT"),
        ("image is text", a.i2v(0, image=b64(b"plain text, not a picture " * 8)), "IMAGE_UNREADABLE"),
        ("image is a truncated PNG", a.i2v(0, image=b64(png[: len(png) // 2])), "IMAGE_UNREADABLE"),
        ("width not a multiple of 16", a.i2v(0, width=100), "INVALID_INPUT"),
        ("unknown field", a.i2v(0, colour="red"), "INVALID_INPUT"),
        ("LoRA not on the volume", a.i2v(0, loras=[{"name": "user/nowhere.safetensors"}]), "MODELS_MISSING"),
        ("S3 output without a bucket", a.i2v(0, output="s3"), "INVALID_INPUT"),
        ("workflow with an unknown node", {"workflow": unknown_node}, "WORKFLOW_REJECTED"),
    ]


def instant_input(a: Assets, n: int) -> dict[str, Any]:
    name = f"soak_{n}.png"
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "soak"}}}
    return {"workflow": graph, "images": [{"name": name, "image": a.image}], "output": "base64"}


def exec_error_input() -> dict[str, Any]:
    """A valid safetensors file that is no diffusion model: ComfyUI accepts the name, then fails."""
    graph = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "not_a_diffusion_model.safetensors",
                                                          "weight_dtype": "default"}},
             "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "never"}}}
    return {"workflow": graph}


def mixed_job(kind: str, n: int, a: Assets) -> tuple[dict[str, Any], str]:
    """Job n of a kind of MIX other than "bad": (input, expected outcome)."""
    if kind == "instant":
        return instant_input(a, n), "images"
    if kind == "exec error":
        return exec_error_input(), "EXECUTION_FAILED"
    make = a.t2v if kind.endswith("t2v") else a.i2v
    extra: dict[str, Any] = {"flf": {"end_image": a.end_image, "return_last_frame": True},
                             "lora": {"loras": [{"name": USER_LORA, "strength": 0.8}]}}.get(kind, {})
    if kind.startswith("dry"):
        return make(n, dry_run=True), "dry run"
    return make(n, **extra), "video"


def plan(n_jobs: int, a: Assets) -> list[tuple[str, dict[str, Any], str]]:
    """Every job of the run: (kind, input, expected outcome: video, images, dry run or an error code)."""
    bad = bad_inputs(a)
    jobs: list[tuple[str, dict[str, Any], str]] = []
    bad_n = 0
    for n in range(n_jobs):
        kind = "kill" if n == n_jobs // 2 else MIX[n % len(MIX)]
        if kind == "kill":
            jobs.append((kind, a.i2v(n, steps=KILL_STEPS), "COMFY_UNAVAILABLE"))
        elif kind == "bad":
            what, job, code = bad[bad_n % len(bad)]
            bad_n += 1
            jobs.append((f"bad: {what}", job, code))
        else:
            jobs.append((kind, *mixed_job(kind, n, a)))
    return jobs


# -- judging one job ------------------------------------------------------------------------------

def judge(kind: str, expected: str, result: dict[str, Any]) -> str:
    """'' when the job ended as it must, else what was wrong."""
    code = result.get("error_code")
    if expected in ("video", "images", "dry run"):
        if code:
            return f"expected {expected}, got {code}: {result.get('error')}"
        if expected == "dry run":
            return "" if result.get("dry_run") and result.get("workflow") else "no dry-run workflow"
        if expected == "images":
            return "" if len(result.get("images") or []) == 1 else "expected one image"
        return look_at_video(result, kind)
    if code != expected:
        return f"expected {expected}, got {code or 'no error'}: {result.get('error', '')[:200]}"
    if not result.get("error") or "Traceback" in result["error"]:
        return "error without a clear message"
    if expected == "COMFY_UNAVAILABLE" and not result.get("refresh_worker"):
        return "COMFY_UNAVAILABLE without refresh_worker"
    return ""


def look_at_video(result: dict[str, Any], kind: str) -> str:
    from tests.video import decode

    video = decode(base64.b64decode(result["video"]))
    if len(video.frames) != LENGTH or (video.width, video.height) != (SIDE, SIDE):
        return f"video has {len(video.frames)} frames of {video.width}x{video.height}"
    if video.is_blank():
        return "video is blank"
    if kind == "flf" and not result.get("last_frame"):
        return "no last_frame"
    return ""


# -- what ComfyUI holds ---------------------------------------------------------------------------

def paths_under(comfy_dir: Path) -> set[str]:
    """Every file and folder in ComfyUI's input/, output/ and temp/."""
    found: set[str] = set()
    for top in ("input", "output", "temp"):
        root = comfy_dir / top
        if root.is_dir():
            found.update(str(p.relative_to(comfy_dir)) for p in root.rglob("*"))
    return found


def comfy_state(comfy: RealComfyUI) -> dict[str, Any]:
    base = f"http://{comfy.host}"
    queue = requests.get(f"{base}/queue", timeout=30).json()
    history_resp = requests.get(f"{base}/history", timeout=30)
    history = history_resp.json()
    try:
        rss = vm(comfy.proc.pid)["VmRSS"]
    except (OSError, KeyError):
        rss = 0
    return {"queue": len(queue.get("queue_running", [])) + len(queue.get("queue_pending", [])),
            "history": len(history), "history_bytes": len(history_resp.content), "comfy_rss": rss}


def wait_running(comfy: RealComfyUI, timeout: float) -> bool:
    """True once ComfyUI is executing a prompt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{comfy.host}/queue", timeout=5).json().get("queue_running"):
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


# -- the run --------------------------------------------------------------------------------------

def run(bench: Any, n_jobs: int) -> None:
    """Start ComfyUI and the worker, run the jobs, record everything in bench.results['soak']."""
    from tests.comfyui.conftest import NEGATIVE, PROMPT, run_tinywan, start_image

    if n_jobs < 2 * len(MIX):
        raise BenchError(f"--soak needs at least {2 * len(MIX)} jobs (two rounds of the mix)")
    assets = Assets(b64(start_image(SIDE, SIDE)), b64(start_image(96, 160)), PROMPT, NEGATIVE)
    comfy = RealComfyUI(bench.tmp)
    records: list[dict[str, Any]] = []
    bench.results["soak"] = {"jobs": n_jobs, "records": records}
    try:
        comfy.start()
        (comfy.models / "diffusion_models" / "not_a_diffusion_model.safetensors").write_bytes(
            (comfy.models / "loras" / "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors").read_bytes())
        run_tinywan(comfy.python, f"tw.write_lora(__import__('pathlib').Path({str(comfy.models / 'loras' / USER_LORA)!r}), "
                                  "seed=4242)")
        baseline_paths = paths_under(comfy.comfy_dir)
        worker = side("soak-worker", "worker", {}, comfy.worker_env(JOB_TIMEOUT_S), bench.logs)
        ready = worker.recv(120)
        bench.results["soak"]["worker_start"] = ready
        for n, (kind, job_input, expected) in enumerate(plan(n_jobs, assets)):
            record = one_job(worker, comfy, n, kind, job_input, expected)
            left = sorted(paths_under(comfy.comfy_dir) ^ baseline_paths)
            record.update(comfy_state(comfy), left_behind=left[:5], n_left=len(left))
            records.append(record)
            if record["problem"] or record["n_left"] or record["queue"]:
                log(f"job {n} ({kind}): {record['problem'] or ''} left {left[:5]} queue {record['queue']}")
            if n % 10 == 9 or kind == "kill":
                log(f"{n + 1}/{n_jobs} jobs; worker rss {record['rss'] / 2**20:.1f} MiB, fds {record['fds']}, "
                    f"threads {record['threads']}; ComfyUI rss {record['comfy_rss'] / 2**20:.0f} MiB, "
                    f"history {record['history']}")
        worker.stop()
    finally:
        comfy.stop()


def one_job(worker: Child, comfy: RealComfyUI, n: int, kind: str, job_input: dict[str, Any],
            expected: str) -> dict[str, Any]:
    job = {"id": f"soak-{n}", "input": job_input}
    if kind != "kill":
        answer = worker.call({"cmd": "run", "job": job}, timeout=JOB_TIMEOUT_S)
    else:
        worker.send({"cmd": "run", "job": job})
        if not wait_running(comfy, 300):
            raise BenchError("the job to kill never started running")
        time.sleep(1.0)
        comfy.kill()
        answer = worker.recv(300)
        comfy.launch()
    result = answer.pop("result")
    timings = result.get("timings_ms") or {}
    execute = timings.get("execute")
    return {"n": n, "kind": kind, "expected": expected, "problem": judge(kind, expected, result),
            "outcome": result.get("error_code") or ("dry run" if result.get("dry_run") else "ok"),
            "wall_ms": answer["wall_ms"], "execute_ms": execute,
            "overhead_ms": answer["wall_ms"] - (execute or 0.0), **answer}


# -- the report -----------------------------------------------------------------------------------

def group(kind: str) -> str:
    if kind in VIDEO_KINDS:
        return "video jobs (I2V, T2V, FLF, LoRA)"
    if kind.startswith("dry"):
        return "dry runs"
    if kind.startswith("bad"):
        return "bad inputs"
    return "workflow jobs"


def windows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The start window (after the first round of the mix) and an end window of the same size."""
    size = max(len(MIX), (len(records) - len(MIX)) // 4)
    return records[len(MIX):len(MIX) + size], records[-size:]


def summarize(soak: dict[str, Any]) -> dict[str, Any]:
    records = [r for r in soak["records"] if r["kind"] != "kill"]
    start, end = windows(records)
    out: dict[str, Any] = {"start_jobs": (start[0]["n"], start[-1]["n"]), "end_jobs": (end[0]["n"], end[-1]["n"])}

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rs)

    for key in ("rss", "comfy_rss"):
        out[key] = (med(start, key), med(end, key))
    for key in ("fds", "threads"):
        out[key] = (max(r[key] for r in start), max(r[key] for r in end))
    out["history"] = (start[-1]["history"], end[-1]["history"])
    out["overhead"] = {}
    for name in sorted({group(r["kind"]) for r in records}):
        s = [r["overhead_ms"] for r in start if group(r["kind"]) == name and r["kind"] != "exec error"]
        e = [r["overhead_ms"] for r in end if group(r["kind"]) == name and r["kind"] != "exec error"]
        if s and e:
            out["overhead"][name] = (statistics.median(s), statistics.median(e))
    out["problems"] = [(r["n"], r["kind"], r["problem"]) for r in soak["records"] if r["problem"]]
    out["left"] = [(r["n"], r["kind"], r["left_behind"]) for r in soak["records"] if r["n_left"]]
    out["queued"] = [(r["n"], r["kind"]) for r in soak["records"] if r["queue"]]
    out["outcomes"] = {}
    for r in soak["records"]:
        out["outcomes"][r["outcome"]] = out["outcomes"].get(r["outcome"], 0) + 1
    return out


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    if "soak" not in results or not results["soak"]["records"]:
        return [("soak ran", False)]
    s = summarize(results["soak"])
    checks = [
        (f"every job a checked video, dry run or its clear error ({len(s['problems'])} not)", not s["problems"]),
        (f"nothing left in ComfyUI's folders ({len(s['left'])} jobs left files)", not s["left"]),
        (f"ComfyUI's queue empty after every job ({len(s['queued'])} not)", not s["queued"]),
        ("worker memory: no growth beyond noise", s["rss"][1] - s["rss"][0] <= NOISE_MB * 2**20),
        ("open file descriptors: no growth", s["fds"][1] <= s["fds"][0]),
        ("threads: no growth", s["threads"][1] <= s["threads"][0]),
    ]
    for name, (a, b) in s["overhead"].items():
        checks.append((f"overhead of {name}: no growth beyond noise", b <= a * OVERHEAD_NOISE))
    if results["soak"]["jobs"] != len(results["soak"]["records"]):
        checks.append(("every job ran", False))
    return checks


def table(results: dict[str, Any]) -> str:
    soak = results.get("soak")
    if not soak or not soak["records"]:
        return "(no soak results)"
    s = summarize(soak)
    mib = 2**20
    rows = [("measure", f"start (jobs {s['start_jobs'][0]}-{s['start_jobs'][1]})",
             f"end (jobs {s['end_jobs'][0]}-{s['end_jobs'][1]})", "budget")]
    rows.append(("worker resident memory (median), MiB", f"{s['rss'][0] / mib:.1f}", f"{s['rss'][1] / mib:.1f}",
                 f"end - start <= {NOISE_MB:g} MiB"))
    rows.append(("worker open file descriptors (max)", str(s["fds"][0]), str(s["fds"][1]), "no growth"))
    rows.append(("worker threads (max)", str(s["threads"][0]), str(s["threads"][1]), "no growth"))
    for name, (a, b) in s["overhead"].items():
        rows.append((f"overhead (median), ms: {name}", f"{a:.1f}", f"{b:.1f}", f"end <= {OVERHEAD_NOISE:g} x start"))
    rows.append(("ComfyUI resident memory (median), MiB", f"{s['comfy_rss'][0] / mib:.0f}",
                 f"{s['comfy_rss'][1] / mib:.0f}", "(info)"))
    rows.append(("ComfyUI history entries (at window end)", str(s["history"][0]), str(s["history"][1]), "(info)"))
    lines = [markdown(list(rows[0]), [list(r) for r in rows[1:]])]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
    extra = [f"outcomes of {soak['jobs']} jobs: {outcomes}"]
    extra += [f"  job {n} ({kind}): {problem}" for n, kind, problem in s["problems"]]
    extra += [f"  job {n} ({kind}) left {left}" for n, kind, left in s["left"]]
    return "\n".join(lines + [""] + extra)


MODE = Mode(
    title="soak on the real ComfyUI", quick_label=False, strict=True,
    run=lambda b, a: run(b, a.soak), sections=lambda r: [table(r)], verdicts=verdicts,
    detail=lambda a, r: f"{a.soak} jobs; ", note=RealComfyUI.note,
)
