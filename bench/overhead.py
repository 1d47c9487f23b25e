"""`python -m bench`: the worker's cost per job against a bare protocol client (the floor), on the
stand-in ComfyUI (instant), for MP4s of 1, 10 and 50 MB delivered as base64 and to S3; S3's memory
at a larger size; the volume check cold and warm; readiness after ComfyUI answers. Method and
figures: docs/performance.md."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from . import procs, report
from .harness import Bench, Mode, log
from .procs import BenchError, clean_env
from .report import MB, summarize, summary

SIZES_MB = (1, 10, 50)
MODES = ("base64", "s3")


def run(b: Bench, args: argparse.Namespace) -> None:
    jobs, warmup, sizes = counts(args)
    b.setup()
    for size_mb in sizes:
        log(f"{size_mb:g} MB: {warmup} warm-up + {jobs} measured jobs per side, base64 then s3")
        run_jobs(b, size_mb, warmup, jobs)
    # S3 once more at a size with more parts than upload threads, to see memory stay flat
    run_memory_only(b, max(100.0, 2 * max(sizes)), "s3", jobs=2 if args.quick else 4)
    run_volume(b, cold_runs=2 if args.quick else 5, warm_runs=50 if args.quick else 200)
    run_ready(b, trials=3 if args.quick else 10)


def counts(args: argparse.Namespace) -> tuple[int, int, tuple[float, ...]]:
    return args.jobs or (5 if args.quick else 20), 1 if args.quick else 3, args.sizes or SIZES_MB


# -- jobs -------------------------------------------------------------------------------
def run_jobs(b: Bench, size_mb: float, warmup: int, jobs: int) -> None:
    size = int(size_mb * MB)
    standin, port, root, pid_file = b.standin(f"comfy-{size_mb:g}MB", size)
    float(standin.expect("LISTENING", 60))
    got = int(standin.expect("MP4", 10))
    if got != size:
        raise BenchError(f"the stand-in serves {got} bytes, not {size}")
    try:
        for mode in MODES:
            b.results["jobs"].append(run_config(b, size_mb, size, mode, port, root, pid_file, warmup, jobs))
    finally:
        standin.stop()

def run_config(b: Bench, size_mb: float, size: int, mode: str, port: int, root: Path, pid_file: Path,
               warmup: int, jobs: int) -> dict[str, Any]:
    host = f"127.0.0.1:{port}"
    assert b.s3 is not None
    from wan_worker.graphs import I2V
    from wan_worker.settings import bundled_workflows_dir
    from wan_worker.workflow import load_workflow

    # the bundled graph as a job without segments builds on (the file holds a second segment)
    plain = root / "wan22_i2v_one_part.json"
    plain.write_text(json.dumps(load_workflow(I2V, bundled_workflows_dir()).one_part()))
    cfg = {"mode": mode, "size": size, "image": str(b.image), "comfy_host": host, "comfy_dir": str(root),
           "workflow": str(plain),
           "s3": {"endpoint": b.s3.endpoint, "access_key": b.s3.access_key,
                  "secret_key": b.s3.secret_key, "bucket": b.s3.bucket}}
    tag = f"{size_mb:g}MB-{mode}"
    cfg["tmp"] = str(b.tmp / f"floor-{tag}")
    worker = procs.python_child(f"worker-{tag}", "bench.sides", ["worker", json.dumps({**cfg, "s3": None})],
                                b.worker_env(host, root, pid_file, mode == "s3"), b.logs)
    floor = procs.python_child(f"floor-{tag}", "bench.sides", ["floor", json.dumps(cfg)], clean_env(), b.logs)
    try:
        baseline = worker.recv(120)["memory"]
        floor_baseline = floor.recv(120)["memory"]
        samples = procs.alternate(worker, floor, warmup, jobs, timeout=120)
        memory = worker.call({"cmd": "memory"})["memory"]
        floor_memory = floor.call({"cmd": "memory"})["memory"]
        # One more job, then the result serialized as the RunPod SDK does before sending it.
        answer = worker.call({"cmd": "job", "n": warmup + jobs, "sdk_send": True}, timeout=120)
        if not answer.get("ok"):
            raise BenchError(f"{worker.name} job with SDK send failed: {answer.get('error')}")
        sdk_memory = worker.call({"cmd": "memory"})["memory"]
    finally:
        worker.stop()
        floor.stop()
    result = summarize(size_mb, size, mode, samples, baseline, memory, floor_baseline, floor_memory)
    result["worker_memory"]["peak_with_sdk_send"] = sdk_memory["hwm"]
    result["worker_memory"]["peak_with_sdk_send_minus_baseline"] = sdk_memory["hwm"] - baseline["rss"]
    log(f"{tag}: worker overhead {result['worker']['overhead_ms']['median']:.1f} ms, floor "
        f"{result['floor']['overhead_ms']['median']:.1f} ms, ratio {result['ratio']:.2f}, peak "
        f"+{result['worker_memory']['peak_minus_baseline'] / MB:.1f} MB")
    return result

def run_memory_only(b: Bench, size_mb: float, mode: str, jobs: int) -> None:
    """The worker alone at a larger size, to see whether S3 delivery's memory stays flat."""
    size = int(size_mb * MB)
    standin, port, root, pid_file = b.standin(f"comfy-{size_mb:g}MB", size)
    try:
        standin.expect("LISTENING", 60)
        host = f"127.0.0.1:{port}"
        cfg = {"mode": mode, "size": size, "image": str(b.image), "comfy_host": host, "comfy_dir": str(root)}
        worker = procs.python_child(f"worker-{size_mb:g}MB-{mode}-memory", "bench.sides",
                                    ["worker", json.dumps(cfg)], b.worker_env(host, root, pid_file, mode == "s3"),
                                    b.logs)
        try:
            baseline = worker.recv(120)["memory"]
            for n in range(jobs):
                answer = worker.call({"cmd": "job", "n": n}, timeout=180)
                if not answer.get("ok"):
                    raise BenchError(f"{worker.name} job {n} failed: {answer.get('error')}")
            memory = worker.call({"cmd": "memory"})["memory"]
        finally:
            worker.stop()
    finally:
        standin.stop()
    grown = memory["hwm"] - baseline["rss"]
    b.results["memory_only"].append({"size_mb": size_mb, "size": size, "mode": mode, "jobs": jobs,
                                        "worker_memory": {"baseline_rss": baseline["rss"], "peak": memory["hwm"],
                                                          "peak_minus_baseline": grown}})
    log(f"{size_mb:g}MB-{mode} (memory only, {jobs} jobs): peak +{grown / MB:.1f} MB")


# -- volume -----------------------------------------------------------------------------
def run_volume(b: Bench, cold_runs: int, warm_runs: int) -> None:
    comfy = b.tmp / "comfy-volume"
    (comfy / "models").mkdir(parents=True, exist_ok=True)
    env = b.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False)
    cold, warm, changed = [], [], []
    for k in range(cold_runs):
        child = procs.python_child(f"volume-{k}", "bench.volume", [str(warm_runs)], env, b.logs)
        try:
            answer = child.recv(120)
        finally:
            child.stop()
        cold.append(answer["cold_ms"])
        warm.extend(answer["warm_ms"])
        changed.append(answer["changed_ms"])
    b.results["volume"] = {"cold_ms": summary(cold), "warm_ms": summary(warm), "changed_ms": summary(changed),
                              "files": answer["files"], "apparent_gb": 38}
    log(f"volume check: cold {summary(cold)['median']:.2f} ms, warm {summary(warm)['median']:.3f} ms")


# -- readiness --------------------------------------------------------------------------
def run_ready(b: Bench, trials: int) -> None:
    comfy = b.tmp / "comfy-ready"
    env = b.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False)
    ready = procs.python_child("ready", "bench.sides", ["ready", "{}"], env, b.logs)
    rng = random.Random(11)
    gaps, waited = [], []
    try:
        ready.recv(120)
        for trial in range(trials):
            delay = rng.uniform(0.4, 0.8)  # so the start falls anywhere in the worker's poll cycle
            standin, port, _root, pid_file = b.standin(f"comfy-boot-{trial}", 0, boot_delay=delay)
            try:
                ready.send({"cmd": "wait_ready", "host": f"127.0.0.1:{port}", "pid_file": str(pid_file)})
                listening = float(standin.expect("LISTENING", 60))
                answer = ready.recv(60)
                if not answer.get("ok"):
                    raise BenchError(f"wait_until_ready failed: {answer.get('error')}")
                started = answer["ready_at"] - answer["waited_ms"] / 1000
                if started >= listening:
                    log(f"readiness trial {trial}: the worker started polling after the stand-in "
                        "listened; trial ignored")
                    continue
                gaps.append((answer["ready_at"] - listening) * 1000)
                waited.append(answer["waited_ms"])
            finally:
                standin.stop()
    finally:
        ready.stop()
    if not gaps:
        raise BenchError("no valid readiness trial")
    b.results["ready"] = {"gap_ms": summary(gaps), "waited_ms": summary(waited), "samples_ms": gaps}
    log(f"ready: {summary(gaps)['median']:.1f} ms after the stand-in listens (max {max(gaps):.1f})")


MODE = Mode(
    title="bench", run=run, verdicts=report.verdicts,
    sections=lambda r: [report.table(r), "Median ms per handler phase (timings_ms; unaccounted = wall - phases), "
                                         "and the floor's transfer:\n" + report.breakdown(r)],
    detail=lambda args, r: (f"{counts(args)[0]} jobs per side and configuration after {counts(args)[1]} warm-up; "),
    note=lambda r: f"start image: 832x480 JPEG, {r.get('input_image', {}).get('bytes', 0) / 1000:.0f} kB",
)
