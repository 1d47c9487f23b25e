"""handler(job): the whole job, top to bottom. Every failure becomes one clear error result."""
from __future__ import annotations

import functools
import logging
import re
import secrets
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import runpod

from . import delivery, logs
from .comfy import ComfyClient, Run
from .errors import COMFY_UNAVAILABLE, INTERNAL_ERROR, NO_OUTPUT, OUT_OF_MEMORY, WorkerError
from .images import PreparedImage, load_image
from .models import check_volume
from .progress import Progress
from .request import I2VRequest, WorkflowRequest, parse_input, resolve_size
from .settings import Settings, load_settings
from .workflow import I2VParams, Workflow, build_i2v, isolate_outputs, load_workflow

log = logging.getLogger("wan_worker")

# After these, ComfyUI may be dead or its GPU memory fragmented: ask RunPod for a fresh worker.
REFRESH_AFTER = {COMFY_UNAVAILABLE, OUT_OF_MEMORY}
# Under ComfyUI's output/, one folder per run, `wan-worker-<prompt id>`, removed after delivery. One
# level, not wan-worker/<prompt id>/: each removed folder is an rmdir, ~3.5 ms on an ext4 disk
# mounted with `discard` (measured; a file's unlink is 0.01 ms), paid on every job.
OUTPUT_FOLDER = "wan-worker"


@dataclass(frozen=True)
class Worker:
    """What is built once per process and kept warm between jobs."""

    settings: Settings
    workflow: Workflow
    comfy: ComfyClient


@functools.cache
def worker() -> Worker:
    """Read settings and the bundled workflow once. A failure is not cached: every job gets the
    clear error (instead of a crash loop) until the environment is fixed."""
    settings = load_settings()
    return Worker(settings, load_workflow(settings.workflow_file), ComfyClient(settings))


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
    j = Job(raw=job, id=safe_id(job.get("id")))
    logs.job_id.set(j.id)
    w: Worker | None = None
    try:
        w = worker()
        with j.timings.phase("validate"):
            req = parse_input(job.get("input"), max_timeout_s=w.settings.job_timeout_s,
                              s3_configured=w.settings.s3_configured)
        j.deadline = time.monotonic() + (req.timeout_s or w.settings.job_timeout_s)
        result = (run_workflow if isinstance(req, WorkflowRequest) else run_i2v)(w, j, req)  # type: ignore[arg-type]
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
    if w is not None and (w.settings.refresh_worker or result.get("error_code") in REFRESH_AFTER):
        result["refresh_worker"] = True  # the SDK takes it out of the output and recycles the worker
    return result


def run_i2v(w: Worker, j: Job, req: I2VRequest) -> dict[str, Any]:
    with j.timings.phase("validate"):
        volume = check_volume(w.settings)
        if not req.dry_run:
            volume.raise_for_problems()
    with j.timings.phase("image"):
        image = load_image(req.image, w.settings)
    params = i2v_params(j, req, image)
    log.info("I2V %dx%d, %d frames at %g fps, %d steps, seed %d, prompt %r (%d chars)", params.width,
             params.height, params.length, params.fps, params.steps, params.seed, req.prompt[:40], len(req.prompt))
    if req.dry_run:
        checks = {"image": {"width": image.width, "height": image.height, "format": image.format},
                  "models": volume.to_dict()}
        return dry_run_result(build_i2v(w.workflow, params), j.timings, checks, **video_fields(params))
    with Progress(progress_sender(w, j.raw), phases=w.workflow.phases()) as progress:
        progress.phase("loading_models")
        uploaded = upload(w, j, [(params.image_name, image)])[0]
        run_prompt(w, j, build_i2v(w.workflow, replace(params, image_name=uploaded)), progress)
        video = next((o for o in j.run.outputs if o.is_video), None)
        if video is None:
            raise WorkerError(NO_OUTPUT, "ComfyUI finished but saved no video; check that the workflow's "
                                         "Save Video node is connected.", {"prompt_id": j.run.prompt_id})
        progress.phase("uploading")
        with j.timings.phase("deliver"), scratch_dir() as tmp:
            result = delivery.deliver_video(w.comfy.fetch(video, tmp), video.filename, j.id,
                                            req.output, w.settings)
    return {**result, **video_fields(params), "prompt_id": j.run.prompt_id, "timings_ms": j.timings.done()}


def run_workflow(w: Worker, j: Job, req: WorkflowRequest) -> dict[str, Any]:
    with j.timings.phase("image"):
        images = [(i.name, load_image(i.image, w.settings, field=f"images[{n}].image"))
                  for n, i in enumerate(req.images)]
    if req.dry_run:
        checks = {"images": [{"name": name, "width": im.width, "height": im.height} for name, im in images]}
        return dry_run_result(req.workflow, j.timings, checks)
    with Progress(progress_sender(w, j.raw), default_phase="running") as progress:
        upload(w, j, images)
        run_prompt(w, j, isolate_outputs(req.workflow, j.output_folder), progress)
        if not j.run.outputs:
            raise WorkerError(NO_OUTPUT, "ComfyUI finished but the workflow saved no image or video; add "
                                         "a SaveImage or SaveVideo node.", {"prompt_id": j.run.prompt_id})
        progress.phase("uploading")
        with j.timings.phase("deliver"), scratch_dir() as tmp:
            files = [(w.comfy.fetch(o, tmp), o.filename) for o in j.run.outputs]
            images_out = delivery.deliver_files(files, j.id, req.output, w.settings)
    return {"images": images_out, "prompt_id": j.run.prompt_id, "timings_ms": j.timings.done()}


def upload(w: Worker, j: Job, images: list[tuple[str, PreparedImage]]) -> list[str]:
    w.comfy.wait_until_ready()
    j.queued = True  # from here on, ComfyUI's folders may hold files of this job
    with j.timings.phase("upload"):
        names = [w.comfy.upload_image(name, image.data, image.mime_type) for name, image in images]
    j.inputs.extend(names)
    return names


def run_prompt(w: Worker, j: Job, graph: dict[str, Any], progress: Progress) -> None:
    j.queued = True
    w.comfy.run(j.run, graph, j.deadline, on_event=progress.on_event)
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


def i2v_params(j: Job, req: I2VRequest, image: PreparedImage) -> I2VParams:
    width, height = resolve_size(req, image.width, image.height)
    return I2VParams(
        image_name=f"wan_{j.id}.{image.extension}", prompt=req.prompt, negative_prompt=req.negative_prompt,
        seed=req.seed if req.seed is not None else secrets.randbelow(2**63),
        width=width, height=height, length=req.length, fps=req.fps, steps=req.steps,  # type: ignore[arg-type]
        cfg=req.cfg, shift=req.shift, lora_strength=req.effective_lora_strength,  # type: ignore[arg-type]
        switch_step=req.switch_step, sampler=req.sampler, scheduler=req.scheduler,  # type: ignore[arg-type]
        filename_prefix=f"{j.output_folder}/wan_{j.id}",
    )


def video_fields(p: I2VParams) -> dict[str, Any]:
    return {"seed": p.seed, "width": p.width, "height": p.height, "length": p.length, "fps": p.fps,
            "duration_s": round(p.length / p.fps, 3)}


def dry_run_result(graph: dict[str, Any], timings: Timings, checks: dict[str, Any],
                   **fields: Any) -> dict[str, Any]:
    return {"dry_run": True, **fields, "checks": checks, "workflow": graph, "timings_ms": timings.done()}
