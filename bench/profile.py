"""`python -m bench --profile [--quick]`: where a job's milliseconds and megabytes go inside
handler(), run in THIS process (so cProfile and tracemalloc see it) against stand-in ComfyUIs and
rclone's S3: per case, jobs timed bare, under cProfile (the pipeline's parts, the top functions)
and under tracemalloc (the peak and the blocks alive at it, in payloads). Method:
bench/results/profile.md."""
from __future__ import annotations

import base64
import cProfile
import functools
import logging
import linecache
import pstats
import statistics
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .harness import MB, BenchError, Mode, log, memory
from .real import video_graph

PROMPT = "the dragon turns its head slowly toward the camera, cinematic light"
PAYLOAD_MB = 10


@dataclass(frozen=True)
class Case:
    label: str
    standin: str  # which stand-in: "small" (the fixture MP4) or "big" (a 10 MB MP4)
    output: str  # base64 | s3
    payload: str  # what the copies are counted in: "jpeg" (the start image) or "mp4" (10 MB)


CASES = (Case("I2V small", "small", "base64", "jpeg"),
         Case("MP4 10 MB base64", "big", "base64", "mp4"),
         Case("MP4 10 MB s3", "big", "s3", "mp4"))

# The pipeline's parts, in the order a job meets them: (label, [(file suffix, function, caller
# function or None)]). A part's time is the cumulative time of its entry points (from that caller
# only, when one is given); the parts are sequential, so they do not overlap. `logging` and
# `progress` are counted again separately: they happen inside the parts.
PARTS: tuple[tuple[str, tuple[tuple[str, str, str | None], ...]], ...] = (
    ("validation (parse_input, pydantic)", (("request.py", "parse_input", None),)),
    ("base64 decode of the input", (("~", "<built-in method binascii.a2b_base64>", None),
                                    ("base64.py", "b64decode", None))),
    ("checks: image decode, signatures, volume", (("jobs.py", "plan", None),)),  # minus base64 decode
    ("upload (POST /upload/image)", (("comfy.py", "upload_image", None),)),
    ("queue (POST /prompt)", (("comfy.py", "queue", "run"),)),
    ("websocket (open, messages, close)", (("comfy.py", "__init__", "run"), ("comfy.py", "until_done", None),
                                           ("comfy.py", "close", "run"))),
    ("history (GET /history)", (("comfy.py", "history", "run"),)),
    ("reading the output", (("pathlib.py", "read_bytes", "b64_file"), ("comfy.py", "fetch", None))),
    ("base64 encode (b64encode)", (("base64.py", "b64encode", "b64_file"),)),
    ("base64 bytes -> str (decode)", (("~", "<method 'decode' of 'bytes' objects>", "b64_file"),)),
    ("S3 upload (boto3, presign)", (("s3.py", "upload_file", None),)),
    ("cleanup (unlink job files)", (("comfy.py", "cleanup", None),)),
)
ACROSS = (("logging (all lines)", (("logging/__init__.py", "_log", None),)),
          ("progress (all updates)", (("progress.py", "on_event", None), ("progress.py", "phase", None),
                                      ("progress.py", "follow", None), ("progress.py", "__exit__", None))))
HANDLER = ("handler.py", "handle", None)
DECODE_PART = "base64 decode of the input"
CHECKS_PART = "checks: image decode, signatures, volume"


# -- the jobs -------------------------------------------------------------------------------------

def job_for(case: Case, n: int, text: str) -> dict[str, Any]:
    """Job n of a case; `text` is the input's base64 (made once, as the SDK hands each job its own)."""
    if case.payload == "jpeg":
        body: dict[str, Any] = {"image": text, "prompt": PROMPT, "output": case.output}
    else:
        name = f"wbp_{n}.mp4"
        body = {"workflow": video_graph(name), "images": [{"name": name, "image": text}], "output": case.output}
    return {"id": f"profile-{case.standin}-{case.output}-{n}", "input": body}


@dataclass
class Side:
    """The worker of one stand-in, in this process: handle(job) with its own settings."""

    worker: Any
    handle: Callable[..., dict[str, Any]]
    s3: Any = None

    def job(self, job: dict[str, Any]) -> dict[str, Any]:
        result = self.handle(job, lambda: self.worker)
        if "error" in result:
            raise BenchError(f"job {job['id']} failed: {result.get('error_code')}: {result['error']}")
        return result

    def tidy(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        """Untimed: the S3 object goes, so the bucket stays as it was."""
        url_items = [i for i in result.get("images", []) if i.get("type") == "s3_url"]
        if not url_items or self.s3 is None:
            return
        conn = self.s3.connection(self.worker.settings)
        for item in url_items:
            key = self.s3.object_key(job["id"], item["filename"])
            conn.client.delete_object(Bucket=conn.bucket.name, Key=key)


def make_side(bench: Any, host: str, root: Path, pid_file: Path) -> Side:
    from wan_worker import handler
    from wan_worker.settings import load_settings

    return Side(handler.build_worker(load_settings(bench.worker_env(host, root, pid_file, True))), handler.handle)


# -- measuring --------------------------------------------------------------------------------------

def rss_peak_reset() -> int:
    """Reset this process's VmHWM to its VmRSS (Linux: clear_refs 5); returns VmRSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return memory()["rss"]


def timed(side: Side, case: Case, text: str, jobs: int, start: int) -> dict[str, Any]:
    """Jobs with nothing attached: wall ms and peak RSS above the RSS before each job."""
    walls, rss = [], []
    for n in range(start, start + jobs):
        job = job_for(case, n, text)
        before = rss_peak_reset()
        t0 = time.perf_counter()
        result = side.job(job)
        walls.append((time.perf_counter() - t0) * 1000)
        rss.append(memory()["hwm"] - before)
        side.tidy(job, result)
        del result
    return {"wall_ms": statistics.median(walls), "wall_min_ms": min(walls),
            "rss_peak_mb": statistics.median(rss) / MB, "rss_peak_max_mb": max(rss) / MB}


def profiled(side: Side, case: Case, text: str, jobs: int, start: int) -> pstats.Stats:
    prof = cProfile.Profile()
    for n in range(start, start + jobs):
        job = job_for(case, n, text)
        prof.enable()
        result = side.job(job)
        prof.disable()
        side.tidy(job, result)
        del result
    return pstats.Stats(prof)


def _matches(key: tuple[str, int, str], file_suffix: str, func: str) -> bool:
    return key[2] == func and (key[0] == file_suffix if file_suffix == "~" else key[0].endswith(file_suffix))


def cumulative(stats: pstats.Stats, entries: tuple[tuple[str, str, str | None], ...]) -> float:
    """Seconds spent in the entry points (from the given caller only, when one is given)."""
    total = 0.0
    for key, (_cc, _nc, _tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        for file_suffix, func, caller in entries:
            if not _matches(key, file_suffix, func):
                continue
            if caller is None:
                total += ct
            else:
                total += sum(edge[3] for ck, edge in callers.items() if ck[2] == caller)
    return total


def parts(stats: pstats.Stats, jobs: int) -> dict[str, float]:
    """ms per job for each part of the pipeline, the cross-cutting ones, the rest and the total."""
    out = {label: cumulative(stats, entries) * 1000 / jobs for label, entries in PARTS}
    out[CHECKS_PART] -= out[DECODE_PART]  # plan() contains the decode: count it once
    total = cumulative(stats, (HANDLER,)) * 1000 / jobs
    out["other (handler glue, timings, result)"] = total - sum(out.values())
    for label, entries in ACROSS:
        out[label] = cumulative(stats, entries) * 1000 / jobs
    out["total (handler, profiled)"] = total
    return out


def _short(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    path = Path(file)
    where = f"{path.parent.name}/{path.name}" if path.parent.name in ("wan_worker", "bench") else path.name
    return f"{where}:{line}({func})"


def top(stats: pstats.Stats, jobs: int, column: int, count: int) -> list[tuple[str, float, int]]:
    """(function, ms per job, calls per job) by own time (column 2) or cumulative time (column 3)."""
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][column], reverse=True)  # type: ignore[attr-defined]
    return [(_short(key), value[column] * 1000 / jobs, round(value[1] / jobs)) for key, value in rows[:count]]


class PeakCatcher:
    """A profile hook that keeps the big blocks alive at the traced memory's highest point.

    At each function return it compares the traced memory with the highest seen; above it (by
    `step`), it takes a snapshot and keeps only blocks of at least `big` bytes with their
    tracebacks, so the snapshot's own memory is gone before the job goes on."""

    def __init__(self, big: int, step: int) -> None:
        self.big, self.step = big, step
        self.best = 0
        self.blocks: list[tuple[int, tracemalloc.Traceback]] = []
        self.at = 0  # traced memory at the snapshot
        self._busy = threading.Lock()

    def hook(self, _frame: Any, event: str, _arg: Any) -> None:
        if event not in ("return", "c_return"):
            return
        current = tracemalloc.get_traced_memory()[0]
        if current <= self.best + self.step or not self._busy.acquire(blocking=False):
            return
        try:
            self.best = current
            snapshot = tracemalloc.take_snapshot()
            self.blocks = [(t.size, t.traceback) for t in snapshot.traces if t.size >= self.big]
            self.at = current
            del snapshot
        finally:
            self._busy.release()


def traced(side: Side, case: Case, make_text: Callable[[], str], jobs: int, start: int,
           payload: int) -> dict[str, Any]:
    """Jobs under tracemalloc: the traced peak per job and the big blocks alive at the highest one."""
    tracemalloc.start(30)
    peaks, biggest, text = [], None, ""
    try:
        text = make_text()  # traced, so the job's own base64 (the SDK's) shows among the blocks
        for n in range(start, start + jobs):
            job = job_for(case, n, text)
            catcher = PeakCatcher(big=max(payload // 2, 32 * 1024), step=max(payload // 50, 64 * 1024))
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            catcher.best = base
            threading.setprofile(catcher.hook)
            sys.setprofile(catcher.hook)
            try:
                result = side.job(job)
            finally:
                sys.setprofile(None)
                threading.setprofile(None)  # type: ignore[arg-type]
            peak = tracemalloc.get_traced_memory()[1] - base
            peaks.append(peak)
            if biggest is None or catcher.at - base >= biggest["at"]:
                biggest = {"at": catcher.at - base, "base": base, "blocks": describe(catcher.blocks, payload)}
            side.tidy(job, result)
            del result, job
    finally:
        del text
        tracemalloc.stop()
    assert biggest is not None
    return {"peak_mb": statistics.median(peaks) / MB, "peak_max_mb": max(peaks) / MB,
            "at_snapshot_mb": biggest["at"] / MB, "blocks": biggest["blocks"]}


def describe(blocks: list[tuple[int, tracemalloc.Traceback]], payload: int) -> list[dict[str, Any]]:
    """Each big block: its size (MB and in payloads) and where it was made (the source lines)."""
    out = []
    for size, tb in sorted(blocks, key=lambda b: -b[0]):
        frames = list(tb)  # oldest first
        ours = [f for f in frames if "/wan_worker/" in f.filename or "/bench/" in f.filename]
        where = [_frame_line(frames[-1])]
        if ours and ours[-1] is not frames[-1]:
            where.append(_frame_line(ours[-1]))
        out.append({"mb": size / MB, "payloads": size / payload, "where": where})
    return out


def _frame_line(frame: tracemalloc.Frame) -> str:
    path = Path(frame.filename)
    name = f"{path.parent.name}/{path.name}" if path.parent.name in ("wan_worker", "bench") else path.name
    return f"{name}:{frame.lineno} `{linecache.getline(frame.filename, frame.lineno).strip()[:70]}`"


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Counts:
    warmup: int
    timed: int
    profiled: int
    traced: int


def counts(quick: bool, jobs: int | None) -> Counts:
    n = jobs or (5 if quick else 20)
    return Counts(warmup=2, timed=n, profiled=n, traced=2 if quick else 3)


def run(bench: Any, quick: bool, jobs: int | None) -> None:
    """Start the stand-ins, profile every case in this process; results in bench.results['profile']."""
    from wan_worker import logs

    bench.setup()
    try:
        with (bench.logs / "worker.log").open("a") as log_file:
            logs.setup("INFO")  # as in the container; the lines go to a file, not the terminal
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler):
                    h.setStream(log_file)
            try:
                run_cases(bench, counts(quick, jobs))
            finally:
                logging.getLogger().handlers.clear()
    finally:
        if bench.s3 is not None:
            bench.s3.stop()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def run_cases(bench: Any, n: Counts) -> None:
    from .standin import mp4_payload

    jpeg = bench.image.read_bytes()
    mp4 = mp4_payload(PAYLOAD_MB * MB)
    sides: dict[str, Side] = {}
    for name, size in (("small", 0), ("big", PAYLOAD_MB * MB)):
        standin, port, root, pid_file = bench.standin(f"comfy-{name}", size)
        standin.expect("LISTENING", 60)
        sides[name] = make_side(bench, f"127.0.0.1:{port}", root, pid_file)
    from wan_worker import s3

    bench.results["profile"] = {"counts": n.__dict__, "payload_bytes": {"jpeg": len(jpeg), "mp4": len(mp4)},
                                "cases": []}
    for case in CASES:
        side = sides[case.standin]
        side.s3 = s3
        raw = jpeg if case.payload == "jpeg" else mp4
        make_text = functools.partial(b64, raw)
        text = make_text()
        log(f"{case.label}: {n.warmup} warm-up, {n.timed} timed, {n.profiled} profiled, {n.traced} traced jobs")
        for k in range(n.warmup):
            job = job_for(case, k, text)
            side.tidy(job, side.job(job))
        first = n.warmup
        bare = timed(side, case, text, n.timed, first)
        stats = profiled(side, case, text, n.profiled, first + n.timed)
        stats.dump_stats(str(bench.logs / f"{case.label.replace(' ', '_')}.pstats"))  # kept with --keep
        del text
        memory = traced(side, case, make_text, n.traced, first + n.timed + n.profiled, len(raw))
        bench.results["profile"]["cases"].append({
            "label": case.label, "payload": case.payload, "payload_bytes": len(raw), "bare": bare,
            "parts_ms": parts(stats, n.profiled), "top_own": top(stats, n.profiled, 2, 12),
            "top_cumulative": top(stats, n.profiled, 3, 12), "memory": memory})
        log(f"{case.label}: {bare['wall_ms']:.1f} ms a job bare, traced peak {memory['peak_mb']:.1f} MB")


# -- the report -------------------------------------------------------------------------------------

def report(results: dict[str, Any]) -> str:
    prof = results.get("profile", {})
    lines: list[str] = []
    for case in prof.get("cases", []):
        lines += case_report(case)
    return "\n".join(lines)


def case_report(case: dict[str, Any]) -> list[str]:
    unit = "the 10 MB MP4" if case["payload"] == "mp4" else f"the {case['payload_bytes'] / 1000:.0f} kB JPEG"
    bare, mem = case["bare"], case["memory"]
    lines = [f"### {case['label']}", "",
             f"Bare: {bare['wall_ms']:.1f} ms a job (min {bare['wall_min_ms']:.1f}); peak RSS above the job's "
             f"start {bare['rss_peak_mb']:.1f} MB (max {bare['rss_peak_max_mb']:.1f}).", "",
             "| part (cProfile, per job) | ms |", "| --- | ---: |"]
    lines += [f"| {label} | {ms:.2f} |" for label, ms in case["parts_ms"].items()]
    lines += ["", "| top own time | ms/job | calls/job |", "| --- | ---: | ---: |"]
    lines += [f"| `{name}` | {ms:.2f} | {calls} |" for name, ms, calls in case["top_own"]]
    lines += ["", "| top cumulative time | ms/job | calls/job |", "| --- | ---: | ---: |"]
    lines += [f"| `{name}` | {ms:.2f} | {calls} |" for name, ms, calls in case["top_cumulative"]]
    total = sum(b["payloads"] for b in mem["blocks"])
    lines += ["", f"tracemalloc: peak {mem['peak_mb']:.1f} MB above the job's start (max {mem['peak_max_mb']:.1f}); "
              f"at the highest snapshot {mem['at_snapshot_mb']:.1f} MB; blocks alive then, in units of {unit} "
              f"({total:.2f} in all, the job's own input text included):", "",
              "| MB | x payload | made at |", "| ---: | ---: | --- |"]
    lines += [f"| {b['mb']:.2f} | {b['payloads']:.2f} | {'; '.join(b['where'])} |" for b in mem["blocks"]]
    return lines + [""]


MODE = Mode(
    title="profile", quick_label=False, run=lambda b, a: run(b, a.quick, a.jobs),
    sections=lambda r: [report(r)],
    detail=lambda a, r: f"jobs per case: {r.get('profile', {}).get('counts', {})}; ",
)
