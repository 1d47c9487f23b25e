"""`python -m bench`: the worker's cost per job against a bare protocol client (the floor), on the
stand-in ComfyUI (instant), for MP4s of 1, 10 and 50 MB delivered as base64 and to S3; S3's memory
at a larger size; the volume check cold and warm; readiness after ComfyUI answers. Method and
figures: docs/performance.md."""
from __future__ import annotations

import argparse
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .harness import (MB, RATIO, Bench, BenchError, Mode, Row, breakdown, compare, log, render, side, stat_row,
                      summary, verdict)

SIZES_MB = (1, 10, 50)
OVERHEAD_MS = 50.0  # plus the output's transfer, for a 10 MB MP4 (../shared/DESIGN.md, "Budgets")
MEM_BASE64 = 2.5  # peak worker memory, multiples of the output size
S3_FLAT_SLOPE = 0.10  # "flat": peak grows by at most 10 % of the output's growth
VOLUME_WARM_MS = 20.0
READY_MS = 100.0
BUDGET_SIZE_MB = 10  # the size the overhead and ratio budgets are stated for
PROMPT = "the dragon turns its head slowly toward the camera, cinematic light"


def counts(args: argparse.Namespace) -> tuple[int, int, tuple[float, ...]]:
    return args.jobs or (5 if args.quick else 20), 1 if args.quick else 3, args.sizes or SIZES_MB


def run(b: Bench, args: argparse.Namespace) -> None:
    jobs, warmup, sizes = counts(args)
    b.setup()
    for size_mb in sizes:
        log(f"{size_mb:g} MB: {warmup} warm-up + {jobs} measured jobs per side, base64 then s3")
        with standin(b, size_mb) as where:
            for mode in ("base64", "s3"):
                run_config(b, size_mb, mode, where, warmup, jobs)
    # S3 once more at a size with more parts than upload threads, to see memory stay flat
    size_mb = max(100.0, 2 * max(sizes))
    with standin(b, size_mb) as where:
        run_memory_only(b, size_mb, where, jobs=2 if args.quick else 4)
    run_volume(b, cold_runs=2 if args.quick else 5, warm_runs=50 if args.quick else 200)
    run_ready(b, trials=3 if args.quick else 10)


@contextmanager
def standin(b: Bench, size_mb: float) -> Iterator[tuple[str, Path, Path]]:
    """A stand-in serving MP4s of `size_mb` while the block runs: (its host, its folder, its pid file)."""
    child, port, root, pid_file = b.standin(f"comfy-{size_mb:g}MB", int(size_mb * MB))
    try:
        child.expect("LISTENING", 60)
        if int(child.expect("MP4", 10)) != int(size_mb * MB):
            raise BenchError(f"the stand-in does not serve {size_mb:g} MB")
        yield f"127.0.0.1:{port}", root, pid_file
    finally:
        child.stop()


def worker_cfg(b: Bench, size_mb: float, mode: str, where: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    host, root, pid_file = where
    cfg = {"tag": f"{size_mb:g}MB-{mode}", "size": int(size_mb * MB), "image": str(b.image), "comfy_host": host,
           "comfy_dir": str(root), "input": {"prompt": PROMPT, "width": 832, "height": 480, "output": mode}}
    return cfg, b.worker_env(host, root, pid_file, mode == "s3")


def run_config(b: Bench, size_mb: float, mode: str, where: tuple[Any, ...], warmup: int, jobs: int) -> None:
    cfg, env = worker_cfg(b, size_mb, mode, where)
    cfg["graph"] = floor_graph()
    if mode == "s3":
        cfg["s3"] = {"endpoint": b.s3.endpoint, "access_key": b.s3.access_key, "secret_key": b.s3.secret_key,
                     "bucket": b.s3.bucket, "tmp": str(b.tmp / f"floor-{cfg['tag']}")}

    def sdk_send(worker: Any) -> dict[str, Any]:
        """One more job, its result serialized as the RunPod SDK does before sending it."""
        worker.job(warmup + jobs, 120, sdk_send=True)
        return {"sdk_hwm": worker.call({"cmd": "memory"})["memory"]["hwm"]}

    result = compare(b, cfg["tag"], cfg, env, warmup, jobs, 120, sdk_send) | {"size_mb": size_mb, "mode": mode}
    b.results["jobs"].append(result)
    mem = result["worker_memory"]
    mem["peak_with_sdk_send"] = result.pop("sdk_hwm")
    mem["peak_with_sdk_send_minus_baseline"] = mem["peak_with_sdk_send"] - mem["baseline_rss"]
    log(f"{cfg['tag']}: worker overhead {result['worker']['overhead_ms']['median']:.1f} ms, floor "
        f"{result['floor']['overhead_ms']['median']:.1f} ms, ratio {result['ratio']:.2f}, peak "
        f"+{mem['peak_minus_baseline'] / MB:.1f} MB")


def floor_graph() -> dict[str, Any]:
    """The bundled I2V graph (one part) with the job's prompt and size, for the floor to fill in."""
    from wan_worker.graphs import I2V
    from wan_worker.settings import bundled_workflows_dir
    from wan_worker.workflow import load_workflow

    graph = load_workflow(I2V, bundled_workflows_dir()).one_part()
    nodes = {node["_meta"]["title"]: node["inputs"] for node in graph.values()}
    nodes["Positive Prompt"]["text"] = PROMPT
    nodes["Image To Video"].update(width=832, height=480)
    return graph


def run_memory_only(b: Bench, size_mb: float, where: tuple[Any, ...], jobs: int) -> None:
    """The worker alone at a larger size, to see whether S3 delivery's memory stays flat."""
    cfg, env = worker_cfg(b, size_mb, "s3", where)
    worker = side(f"worker-{cfg['tag']}-memory", "worker", cfg, env, b.logs)
    try:
        baseline = worker.recv(120)["memory"]
        for n in range(jobs):
            worker.job(n, 180)
        memory = worker.call({"cmd": "memory"})["memory"]
    finally:
        worker.stop()
    grown = memory["hwm"] - baseline["rss"]
    b.results["memory_only"].append({"size_mb": size_mb, "size": cfg["size"], "mode": "s3", "jobs": jobs,
                                     "worker_memory": {"baseline_rss": baseline["rss"], "peak": memory["hwm"],
                                                       "peak_minus_baseline": grown}})
    log(f"{cfg['tag']} (memory only, {jobs} jobs): peak +{grown / MB:.1f} MB")


def run_volume(b: Bench, cold_runs: int, warm_runs: int) -> None:
    comfy = b.tmp / "comfy-volume"
    (comfy / "models").mkdir(parents=True, exist_ok=True)
    cold, warm, changed = [], [], []
    for k in range(cold_runs):
        child = side(f"volume-{k}", "volume", {}, b.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False), b.logs)
        try:
            child.recv(120)
            answer = child.call({"cmd": "check", "runs": warm_runs}, 120)
        finally:
            child.stop()
        cold.append(answer["cold_ms"])
        warm.extend(answer["warm_ms"])
        changed.append(answer["changed_ms"])
    b.results["volume"] = {"cold_ms": summary(cold), "warm_ms": summary(warm), "changed_ms": summary(changed),
                           "files": answer["files"], "apparent_gb": 38}
    log(f"volume check: cold {summary(cold)['median']:.2f} ms, warm {summary(warm)['median']:.3f} ms")


def run_ready(b: Bench, trials: int) -> None:
    comfy = b.tmp / "comfy-ready"
    ready = side("ready", "ready", {}, b.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False), b.logs)
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
                if answer["ready_at"] - answer["waited_ms"] / 1000 >= listening:
                    log(f"readiness trial {trial}: the worker started polling after the stand-in listened; ignored")
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


# -- the report -----------------------------------------------------------------------------------

def job_rows(config: dict[str, Any]) -> list[Row]:
    """The rows of one (size, delivery) configuration."""
    size_mb, mode = config["size_mb"], config["mode"]
    label, budget_row = f"{size_mb:g} MB {mode}", size_mb == BUDGET_SIZE_MB
    w, f, ratio = config["worker"], config["floor"], config["ratio"]
    transfer = f["transfer_ms"]["median"]
    rows = [stat_row("handler wall time, ms", label, w["wall_ms"]),
            stat_row("ComfyUI execute (timings_ms), ms", label, w["execute_ms"]),
            stat_row("worker overhead = wall - execute, ms", label, w["overhead_ms"], f"<= 50 + {transfer:.0f} transfer",
                     verdict(w["overhead_ms"]["median"] <= OVERHEAD_MS + transfer, budget_row)),
            stat_row("floor overhead (bare client), ms", label, f["overhead_ms"]),
            Row("ratio worker / floor overhead", label, f"{ratio:.2f}", "", "", f"<= {RATIO:.2f}",
                verdict(ratio <= RATIO, budget_row))]
    grown = config["worker_memory"]["peak_minus_baseline"]
    times = grown / config["size"]
    if mode != "base64":
        return rows + [Row("worker peak memory - baseline", label, f"{grown / MB:.1f} MB = {times:.2f}x", "", "",
                           "flat (see growth row)", "")]
    rows.append(Row("worker peak memory - baseline", label, f"{grown / MB:.1f} MB = {times:.2f}x", "", "",
                    f"<= {MEM_BASE64:g}x output", verdict(times <= MEM_BASE64)))
    sdk = config["worker_memory"].get("peak_with_sdk_send_minus_baseline")
    if sdk is not None:
        rows.append(Row("  worker + RunPod SDK's result send", label, f"{sdk / MB:.1f} MB = {sdk / config['size']:.2f}x",
                        "", "", "", "(info)"))
    floor_grown = config["floor_memory"]["peak_minus_baseline"]
    return rows + [Row("  floor (bare client), for comparison", label,
                       f"{floor_grown / MB:.1f} MB = {floor_grown / config['size']:.2f}x", "", "", "", "(info)")]


def s3_growth_row(results: dict[str, Any]) -> Row | None:
    """"Flat": between the two largest S3 outputs, peak memory grows by at most 10 % of the growth
    (from one PUT to multipart, boto3's upload threads add a fixed few MB)."""
    points = sorted((c for c in [*results.get("jobs", []), *results.get("memory_only", [])] if c["mode"] == "s3"),
                    key=lambda c: c["size"])
    if len(points) < 2:
        return None
    small, big = points[-2], points[-1]
    growth = big["worker_memory"]["peak_minus_baseline"] - small["worker_memory"]["peak_minus_baseline"]
    slope = growth / (big["size"] - small["size"])
    curve = " / ".join(f"{p['worker_memory']['peak_minus_baseline'] / MB:.1f}" for p in points)
    sizes = "/".join(f"{p['size_mb']:g}" for p in points)
    return Row(f"S3 peak - baseline at {sizes} MB", "s3", f"{curve} MB", "", "",
               f"{small['size_mb']:g}->{big['size_mb']:g} MB: {slope:+.2f}x <= {S3_FLAT_SLOPE:.2f}x",
               verdict(slope <= S3_FLAT_SLOPE))


def table(results: dict[str, Any]) -> str:
    rows = [row for config in results.get("jobs", []) for row in job_rows(config)]
    growth = s3_growth_row(results)
    rows += [growth] if growth else []
    vol, ready = results.get("volume"), results.get("ready")
    if vol:
        warm_ok = vol["warm_ms"]["median"] <= VOLUME_WARM_MS and vol["warm_ms"]["max"] <= VOLUME_WARM_MS
        rows += [stat_row("volume check, cold (fresh process), ms", "6 files, 38 GB", vol["cold_ms"]),
                 stat_row("volume check, warm, ms", "6 files, 38 GB", vol["warm_ms"], f"<= {VOLUME_WARM_MS:g} ms",
                          verdict(warm_ok)),
                 stat_row("volume check, one file changed, ms", "6 files, 38 GB", vol["changed_ms"])]
    if ready:
        rows.append(stat_row("ready after ComfyUI answers, ms", "wait_until_ready", ready["gap_ms"],
                             f"<= {READY_MS:g} ms", verdict(ready["gap_ms"]["max"] <= READY_MS)))
    return render(rows)


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """(budget, met) for the budgets of DESIGN.md, as stated (overhead and ratio at 10 MB)."""
    out: list[tuple[str, bool]] = []
    for c in results.get("jobs", []):
        label = f"{c['size_mb']:g} MB {c['mode']}"
        if c["size_mb"] == BUDGET_SIZE_MB:
            out.append((f"overhead {label}",
                        c["worker"]["overhead_ms"]["median"] <= OVERHEAD_MS + c["floor"]["transfer_ms"]["median"]))
            out.append((f"ratio {label}", c["ratio"] <= RATIO))
        if c["mode"] == "base64":
            out.append((f"memory {label}", c["worker_memory"]["peak_minus_baseline"] / c["size"] <= MEM_BASE64))
    growth = s3_growth_row(results)
    if growth:
        out.append(("memory s3 flat", growth.result == "pass"))
    if results.get("volume"):
        w = results["volume"]["warm_ms"]
        out.append(("volume check warm", w["median"] <= VOLUME_WARM_MS and w["max"] <= VOLUME_WARM_MS))
    if results.get("ready"):
        out.append(("ready", results["ready"]["gap_ms"]["max"] <= READY_MS))
    return out


MODE = Mode(
    title="bench", run=run, verdicts=verdicts,
    sections=lambda r: [table(r), breakdown(r.get("jobs", []), lambda c: f"{c['size_mb']:g} MB {c['mode']}")],
    detail=lambda args, r: f"{counts(args)[0]} jobs per side and configuration after {counts(args)[1]} warm-up; ",
    note=lambda r: f"start image: 832x480 JPEG, {r.get('input_image', {}).get('bytes', 0) / 1000:.0f} kB",
)
