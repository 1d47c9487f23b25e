"""`wan-video --jobs FILE.jsonl`: many jobs, N in flight, one file each, a table at the end.

A line is either a job input as the worker takes it, or an envelope like RunPod's own request
body, with the worker's fields under `input` and the client's beside it:

    {"input": {"image": "cat.png", "prompt": "the cat blinks"}, "output": "cat.mp4", "last_frame": "cat.png"}

The envelope exists because `output` inside a job input already means the worker's delivery mode
(base64/s3/auto); the file name belongs to the client, so it sits outside. Image paths are read
relative to the jobs file (so are `audio` and the Animate videos); output paths relative to --out-dir.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .api import Api, ApiError
from .fields import EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, UsageError, common_fields, image_value
from .display import JobDisplay
from .results import SaveError, save_result, summary
from .runner import Interrupted, WaitExpired, WaitOptions, run_job

log = logging.getLogger("wan_worker.client")

ENVELOPE_KEYS = {"input", "output", "last_frame", "name"}
# a local path here is sent as base64
FILE_FIELDS = ("image", "end_image", "audio", "video", "pose_video", "face_video", "background_video", "mask_video")


@dataclass
class BatchJob:
    line: int
    name: str
    input: dict[str, Any]
    video_path: Path
    last_frame_path: Path | None = None


@dataclass
class Row:
    job: BatchJob
    status: str  # ok, failed, cancelled, error, not sent
    seconds: float = 0.0
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def read_jobs(path: Path, defaults: dict[str, Any], out_dir: Path) -> list[BatchJob]:
    """Parse every line first, so a typo on line 9 stops the batch before line 1 costs anything."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"--jobs {path}: {exc.strerror or exc}") from None
    jobs = [parse_line(n, text, path, defaults, out_dir) for n, text in enumerate(lines, 1)
            if text.strip() and not text.lstrip().startswith("#")]
    if not jobs:
        raise UsageError(f"--jobs {path}: no jobs in the file")
    seen: dict[Path, int] = {}
    for job in jobs:
        if job.video_path in seen:
            raise UsageError(f"{path}:{job.line}: output {job.video_path} is also line {seen[job.video_path]}'s")
        seen[job.video_path] = job.line
    return jobs


def parse_line(n: int, text: str, path: Path, defaults: dict[str, Any], out_dir: Path) -> BatchJob:
    where = f"{path}:{n}"
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: a line must be a JSON object")
    if isinstance(obj.get("input"), dict):
        unknown = set(obj) - ENVELOPE_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown envelope key(s) {', '.join(sorted(unknown))}; "
                             "job fields go under \"input\"")
        job_input, client = dict(obj["input"]), obj
    else:
        job_input, client = dict(obj), {}
    name = str(client.get("name") or Path(str(client.get("output") or f"{path.stem}-{n}")).stem)
    for key in FILE_FIELDS:
        if isinstance(job_input.get(key), str):
            job_input[key] = image_value(job_input[key], path.parent, must_exist=False, what=key)
    merged = {**defaults, **job_input}
    last_frame = out_dir / client["last_frame"] if client.get("last_frame") else None
    if last_frame is not None:
        merged["return_last_frame"] = True
    return BatchJob(n, name, merged, out_dir / str(client.get("output") or f"{name}.mp4"), last_frame)


def run_one(job: BatchJob, make_api: Callable[[], Api], options: WaitOptions, stop: threading.Event,
            quiet: bool) -> Row:
    """One line of the batch; every way it can end becomes a row, none escapes."""
    if stop.is_set():
        return Row(job, "not sent", detail="the batch was stopped first")
    start = time.monotonic()

    def row(status: str, detail: str, result: dict[str, Any] | None = None) -> Row:
        return Row(job, status, time.monotonic() - start, detail, result or {})

    try:
        api = make_api()
        with JobDisplay(job.name, bar=False, quiet=quiet) as display:
            outcome = run_job(api, job.input, display, options, stop)
        if not outcome.ok:
            return row("failed", f"{outcome.error_code or outcome.status}: {outcome.error}", summary(outcome, None))
        output = outcome.output if isinstance(outcome.output, dict) else {}
        saved = save_result(output, job.video_path, job.last_frame_path, api.policy, quiet=True)
        shown = saved.paths.get("video") or (saved.images[0] if saved.images else None)
        detail = str(shown) if shown else ("dry run, nothing saved" if output.get("dry_run") else "no video")
        return row("ok" if shown or output.get("dry_run") else "error", detail, summary(outcome, saved))
    except Interrupted as exc:
        return row("cancelled", str(exc))
    except WaitExpired as exc:
        return row("cancelled", str(exc))
    except (ApiError, SaveError) as exc:
        return row("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - one line's surprise must not cost the others their row
        log.debug("job on line %d", job.line, exc_info=True)
        return row("error", f"{type(exc).__name__}: {exc}")


def run_batch(jobs: list[BatchJob], make_api: Callable[[], Api], options: WaitOptions, concurrency: int,
              quiet: bool = False) -> tuple[list[Row], bool]:
    """Run the jobs, `concurrency` at a time. Ctrl-C cancels the running ones (and sends no more).

    Daemon threads, not a pool: a second Ctrl-C must be able to leave even while a thread is
    blocked in a long request (a local server's /status), which a pool would wait for at exit."""
    stop = threading.Event()
    todo = deque(jobs)
    rows: dict[int, Row] = {}
    started: set[int] = set()
    lock = threading.Lock()

    workers = max(1, min(concurrency, len(jobs)))
    running = [workers]
    all_done = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with lock:
                if not todo:
                    break
                job = todo.popleft()
                started.add(job.line)
            row = run_one(job, make_api, options, stop, quiet)
            with lock:
                rows[job.line] = row
        with lock:
            running[0] -= 1
            if not running[0]:
                all_done.set()

    for n in range(workers):
        threading.Thread(target=work, name=f"wan-video-{n}", daemon=True).start()
    interrupted = False
    try:
        # An Event, not Thread.join: Ctrl-C inside join() can leave a live thread marked as ended.
        while not all_done.wait(0.5):
            pass
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        print("\nwan-video: interrupted; cancelling the running jobs (Ctrl-C again to leave at once)",
              file=sys.stderr, flush=True)
        all_done.wait(60)
    with lock:
        return [rows.get(j.line) or (Row(j, "stopped", detail="still being cancelled when the batch ended")
                                     if j.line in started else Row(j, "not sent", detail="the batch was stopped first"))
                for j in jobs], interrupted


def table(rows: list[Row]) -> str:
    """The summary: one row per job, then the counts."""
    width = max([len("job")] + [len(r.job.name) for r in rows])
    out = [f"{'line':>4}  {'job':<{width}}  {'status':<9} {'seconds':>8}  result"]
    for r in rows:
        out.append(f"{r.job.line:>4}  {r.job.name:<{width}}  {r.status:<9} {r.seconds:>8.1f}  {r.detail}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.append(f"{len(rows)} job(s): " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return "\n".join(out)


def run_batch_command(args: argparse.Namespace, make_api: Callable[[], Api]) -> int:
    if args.image is not None or args.prompt_arg is not None or args.prompt is not None:
        raise UsageError("--jobs takes its images and prompts from the file, not from IMAGE/PROMPT")
    if args.output is not None or args.last_frame is not None:
        raise UsageError("with --jobs, name outputs in the file (\"output\", \"last_frame\") and use --out-dir")
    jobs = read_jobs(args.jobs, common_fields(args), args.out_dir)
    make_api()  # fail fast on a missing key or target, before any thread starts
    rows, interrupted = run_batch(jobs, make_api, WaitOptions(args.poll, args.wait), args.concurrency,
                                  args.quiet)
    if args.json:
        for r in rows:
            print(json.dumps({"line": r.job.line, "name": r.job.name, "status": r.status,
                              "seconds": round(r.seconds, 2), "detail": r.detail, "result": r.result}))
        print(table(rows), file=sys.stderr)
    else:
        print(table(rows))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.status == "ok" for r in rows) else EXIT_JOB_FAILED
