"""handler(job): the whole job, top to bottom. Every failure becomes one clear error result."""
from __future__ import annotations

import functools
import logging
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import runpod

from . import delivery, jobs, logs
from .comfy import ComfyClient, Run
from .errors import COMFY_UNAVAILABLE, INTERNAL_ERROR, NO_OUTPUT, OUT_OF_MEMORY, WorkerError
from .frames import last_frame_png
from .graphs import GRAPHS
from .progress import Progress
from .request import Request, parse_input
from .settings import Settings, load_settings
from .workflow import Workflow, isolate_outputs, load_workflow

log = logging.getLogger("wan_worker")

# After these, ComfyUI may be dead or its GPU memory fragmented: ask RunPod for a fresh worker.
REFRESH_AFTER = {COMFY_UNAVAILABLE, OUT_OF_MEMORY}
# Under ComfyUI's output/, one folder per run, `wan-worker-<prompt id>`, removed after delivery. One
# level, not wan-worker/<prompt id>/: each removed folder is an rmdir, ~3.5 ms on an ext4 disk
# mounted with `discard` (measured; a file's unlink is 0.01 ms), paid on every job.
OUTPUT_FOLDER = "wan-worker"
# Bundled graphs that ran to the end on this ComfyUI (a job or the warm-up): their models are
# loaded, so the next job of the same graph is `warm`.
FINISHED_GRAPHS: set[str] = set()


@dataclass(frozen=True)
class Worker:
    """What is built once per process and kept warm between jobs."""

    settings: Settings
    workflows: dict[str, Workflow]  # GraphSpec.name -> the loaded bundled graph
    comfy: ComfyClient


@functools.cache
def worker() -> Worker:
    """Read settings and the bundled graphs once. A failure is not cached: every job gets the
    clear error (instead of a crash loop) until the environment is fixed."""
    return build_worker(load_settings())


def build_worker(settings: Settings) -> Worker:
    """The settings' bundled graphs and a ComfyUI client: what a worker keeps between jobs."""
    workflows = {spec.name: load_workflow(spec, settings.workflows_path) for spec in GRAPHS}
    return Worker(settings, workflows, ComfyClient(settings))


@dataclass
class Timings:
    ms: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent = (time.perf_counter() - t0) * 1000
            self.ms[name] = round(self.ms.get(name, 0.0) + spent, 1)
            log.info("%s: %.1f ms", name, spent)

    def add_run(self, run: Run) -> None:
        self.ms["queue"], self.ms["execute"] = round(run.queue_ms, 1), round(run.execute_ms, 1)
        log.info("queue: %.1f ms, execute: %.1f ms", run.queue_ms, run.execute_ms)

    def done(self) -> dict[str, float]:
        return {**self.ms, "total": round((time.perf_counter() - self.start) * 1000, 1)}


@dataclass
class Job:
    """One job's state: what it sent to ComfyUI is what gets cleaned up afterwards."""

    raw: dict[str, Any]
    id: str
    timings: Timings = field(default_factory=Timings)
    deadline: float = 0.0
    run: Run = field(default_factory=Run)
    inputs: list[str] = field(default_factory=list)  # names uploaded to ComfyUI's input folder
    queued: bool = False

    @property
    def output_folder(self) -> str:
        """The run's own folder under ComfyUI's output/ (see workflow.isolate_outputs)."""
        return f"{OUTPUT_FOLDER}-{self.run.prompt_id}"


def handler(job: dict[str, Any]) -> dict[str, Any]:
    return handle(job, worker)


def handle(job: dict[str, Any], get_worker: Callable[[], Worker]) -> dict[str, Any]:
    """One job on the worker `get_worker` gives (the warm-up runs on a copy with its own ComfyUI
    client, so its websocket never takes a job's events)."""
    j = Job(raw=job, id=safe_id(job.get("id")))
    logs.job_id.set(j.id)
    w: Worker | None = None
    try:
        w = get_worker()
        with j.timings.phase("validate"):
            req = parse_input(job.get("input"), max_timeout_s=w.settings.job_timeout_s,
                              s3_configured=w.settings.s3_configured)
        j.deadline = time.monotonic() + (req.timeout_s or w.settings.job_timeout_s)
        result = run(w, j, req)
        log.info("done in %.0f ms", result["timings_ms"]["total"])
    except WorkerError as err:
        log.warning("failed: %s", err)
        result = err.to_result()
    except Exception:  # noqa: BLE001 - the job must end with a clear error, never a crash
        log.exception("unexpected error")
        result = WorkerError(INTERNAL_ERROR, "The worker hit an unexpected error; the log has the details. "
                                             "Send the job again, and report it if it repeats.").to_result()
    finally:
        if w is not None and j.queued:
            clean_up(w, j)
    if result.get("error_code") in REFRESH_AFTER:
        FINISHED_GRAPHS.clear()  # a ComfyUI that crashed or ran out of memory has lost its models
    if w is not None and (w.settings.refresh_worker or result.get("error_code") in REFRESH_AFTER):
        result["refresh_worker"] = True  # the SDK takes it out of the output and recycles the worker
    return result


def run(w: Worker, j: Job, req: Request) -> dict[str, Any]:
    """The same pipeline for every kind of job: plan (all checks), upload, queue, follow, deliver."""
    with Progress(progress_sender(w, j.raw)) as progress:
        plan = jobs.plan(w.settings, w.workflows, j.id, req, progress, j.timings)
        if req.dry_run:
            graph = isolate_outputs(plan.build(plan.upload_names), j.output_folder)
            return {"dry_run": True, **plan.fields, "checks": plan.checks, "workflow": graph,
                    "timings_ms": j.timings.done()}
        progress.follow(plan.phases, plan.default_phase)
        progress.phase(plan.default_phase)
        names = upload(w, j, plan.take_uploads())
        graph_name = plan.fields.get("graph")
        warm = graph_name in FINISHED_GRAPHS
        run_prompt(w, j, isolate_outputs(plan.build(names), j.output_folder), progress, plan)
        if graph_name:
            FINISHED_GRAPHS.add(graph_name)
        progress.phase("uploading")
        with j.timings.phase("deliver"), scratch_dir() as tmp:
            result = deliver(w, j, req, plan, tmp)
    if graph_name:
        result["warm"] = warm
    return {**result, **plan.fields, "prompt_id": j.run.prompt_id, "timings_ms": j.timings.done()}


def deliver(w: Worker, j: Job, req: Request, plan: jobs.Plan, tmp: Callable[[], Path]) -> dict[str, Any]:
    """A video job's MP4 (and its last frame if asked), or every output as worker-comfyui returns them."""
    if plan.kind == "files":
        if not j.run.outputs:
            raise WorkerError(NO_OUTPUT, "ComfyUI finished but the workflow saved no image or video; add "
                                         "a SaveImage or SaveVideo node.", {"prompt_id": j.run.prompt_id})
        files = [(w.comfy.fetch(o, tmp), o.filename) for o in j.run.outputs]
        return {"images": delivery.deliver_files(files, j.id, req.output, w.settings)}
    video = next((o for o in j.run.outputs if o.is_video), None)
    if video is None:
        raise WorkerError(NO_OUTPUT, "ComfyUI finished but saved no video; check that the workflow's "
                                     "Save Video node is connected.", {"prompt_id": j.run.prompt_id})
    path = w.comfy.fetch(video, tmp)
    last = last_frame_png(path) if plan.last_frame else None
    beside = len(last or b"") + sum(len(data) for data in plan.beside.values())
    result = delivery.deliver_video(path, video.filename, j.id, req.output, w.settings, beside)
    if last is not None:
        result.update(delivery.deliver_last_frame(last, video.filename, j.id, as_url="video_url" in result,
                                                  settings=w.settings))
    stem = video.filename.rsplit(".", 1)[0]
    for key, data in plan.beside.items():  # Animate's own pose and face videos (return_preprocessed)
        result.update(delivery.deliver_beside(data, f"{stem}_{key.removesuffix('_video')}.mp4", key, j.id,
                                              as_url="video_url" in result, settings=w.settings))
    return result


def upload(w: Worker, j: Job, files: list[jobs.Upload]) -> list[str]:
    w.comfy.wait_until_ready()
    j.queued = True  # from here on, ComfyUI's folders may hold files of this job
    with j.timings.phase("upload"):
        names = [w.comfy.upload_image(f.name, f.data, f.mime_type) for f in files]
    j.inputs.extend(names)
    return names


def run_prompt(w: Worker, j: Job, graph: dict[str, Any], progress: Progress, plan: jobs.Plan) -> None:
    """Queue and follow the graph; `timings_ms.model_load` is from queueing to the first sampling
    step (the first step of any node in workflow mode): what a cold ComfyUI spends loading models."""
    j.queued = True
    samplers = {node for node, phase in plan.phases.items()
                if str(getattr(phase, "name", phase)).startswith("sampling")}
    queued = time.perf_counter()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "progress" and "model_load" not in j.timings.ms:
            node = str((event.get("data") or {}).get("node"))
            if not samplers or node in samplers:
                j.timings.ms["model_load"] = round((time.perf_counter() - queued) * 1000, 1)
                log.info("model_load: %.1f ms", j.timings.ms["model_load"])
        progress.on_event(event)

    w.comfy.run(j.run, graph, j.deadline, on_event=on_event)
    j.timings.add_run(j.run)


def clean_up(w: Worker, j: Job) -> None:
    """Leave ComfyUI's input and output folders as they were, whatever happened to the job."""
    try:
        w.comfy.cleanup(j.run.prompt_id, j.run.all_files, j.inputs)
    except Exception:  # noqa: BLE001 - cleaning up must never turn a result into an error
        log.warning("could not clean up the job's files", exc_info=True)


# -- small pieces of the pipeline ------------------------------------------------------------

@contextmanager
def scratch_dir() -> Iterator[Callable[[], Path]]:
    """A temporary folder for outputs fetched over `/view`, made on first use only: in the
    container the worker reads outputs in place from ComfyUI's folder and needs none, and making
    and removing a folder costs ~4 ms a job on some disks (rmdir; see OUTPUT_FOLDER)."""
    made: list[tempfile.TemporaryDirectory[str]] = []

    def get() -> Path:
        if not made:
            made.append(tempfile.TemporaryDirectory())
        return Path(made[0].name)

    try:
        yield get
    finally:
        for tmp in made:
            tmp.cleanup()


def safe_id(job_id: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(job_id or "local"))[:64]


def progress_sender(w: Worker, job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """RunPod's progress_update where RunPod is listening, else a debug log line."""
    if w.settings.runpod_webhook_post_output:
        return lambda update: runpod.serverless.progress_update(job, update)
    return lambda update: log.debug("progress %s", update)
