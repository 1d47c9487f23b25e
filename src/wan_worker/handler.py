"""handler(job): the whole job, top to bottom. Every failure becomes one clear error result."""
from __future__ import annotations

import functools
import logging
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from . import delivery, logs
from .comfy import ComfyClient, Run
from .errors import INTERNAL_ERROR, NO_OUTPUT, WorkerError
from .images import load_image
from .models import check_volume
from .request import I2VRequest, WorkflowRequest, parse_input, resolve_size
from .settings import Settings, load_settings
from .workflow import I2VParams, Workflow, build_i2v, load_workflow

log = logging.getLogger("wan_worker")


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
            self.ms[name] = round(self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000, 1)

    def add_run(self, run: Run) -> None:
        self.ms["queue"], self.ms["execute"] = round(run.queue_ms, 1), round(run.execute_ms, 1)

    def done(self) -> dict[str, float]:
        return {**self.ms, "total": round((time.perf_counter() - self.start) * 1000, 1)}


def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_id = safe_id(job.get("id"))
    logs.job_id.set(job_id)
    timings = Timings()
    try:
        w = worker()
        with timings.phase("validate"):
            req = parse_input(job.get("input"), max_timeout_s=w.settings.job_timeout_s)
        deadline = time.monotonic() + (req.timeout_s or w.settings.job_timeout_s)
        run = run_workflow if isinstance(req, WorkflowRequest) else run_i2v
        result = run(w, job_id, req, timings, deadline)  # type: ignore[arg-type]
        log.info("done in %.0f ms", result["timings_ms"]["total"])
        return result
    except WorkerError as err:
        log.warning("failed: %s", err)
        return err.to_result()
    except Exception:  # noqa: BLE001 - the job must end with a clear error, never a crash
        log.exception("unexpected error")
        return WorkerError(INTERNAL_ERROR, "The worker hit an unexpected error; the log has the details. "
                                           "Send the job again, and report it if it repeats.").to_result()


def run_i2v(w: Worker, job_id: str, req: I2VRequest, timings: Timings, deadline: float) -> dict[str, Any]:
    with timings.phase("validate"):
        volume = check_volume(w.settings)
        if not req.dry_run:
            volume.raise_for_problems()
    with timings.phase("image"):
        image = load_image(req.image, w.settings)
    params = i2v_params(w, job_id, req, image.width, image.height)
    if req.dry_run:
        checks = {"image": {"width": image.width, "height": image.height, "format": image.format},
                  "models": volume.to_dict()}
        return dry_run_result(build_i2v(w.workflow, params), timings, checks, **video_fields(params))
    w.comfy.wait_until_ready()
    with timings.phase("upload"):
        uploaded = w.comfy.upload_image(params.image_name, image.png)
    run = w.comfy.run(build_i2v(w.workflow, replace_image(params, uploaded)), deadline)
    timings.add_run(run)
    video = next((o for o in run.outputs if o.is_video), None)
    if video is None:
        raise WorkerError(NO_OUTPUT, "ComfyUI finished but saved no video; check that the workflow's "
                                     "Save Video node is connected.", {"prompt_id": run.prompt_id})
    with timings.phase("deliver"):
        result = delivery.inline_video(w.comfy.fetch(video), video.filename)
    return {**result, **video_fields(params), "prompt_id": run.prompt_id, "timings_ms": timings.done()}


def run_workflow(w: Worker, job_id: str, req: WorkflowRequest, timings: Timings,
                 deadline: float) -> dict[str, Any]:
    with timings.phase("image"):
        images = [(i.name, load_image(i.image, w.settings, field=f"images[{n}].image"))
                  for n, i in enumerate(req.images)]
    if req.dry_run:
        checks = {"images": [{"name": name, "width": im.width, "height": im.height} for name, im in images]}
        return dry_run_result(req.workflow, timings, checks)
    w.comfy.wait_until_ready()
    with timings.phase("upload"):
        for name, image in images:
            w.comfy.upload_image(name, image.png)
    run = w.comfy.run(req.workflow, deadline)
    timings.add_run(run)
    if not run.outputs:
        raise WorkerError(NO_OUTPUT, "ComfyUI finished but the workflow saved no image or video; add a "
                                     "SaveImage or SaveVideo node.", {"prompt_id": run.prompt_id})
    with timings.phase("deliver"):
        files = [delivery.inline_file(w.comfy.fetch(o), o.filename) for o in run.outputs]
    return {"images": files, "prompt_id": run.prompt_id, "timings_ms": timings.done()}


# -- small pieces of the pipeline ------------------------------------------------------------

def safe_id(job_id: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(job_id or "local"))[:64]


def i2v_params(w: Worker, job_id: str, req: I2VRequest, image_w: int, image_h: int) -> I2VParams:
    width, height = resolve_size(req, image_w, image_h)
    return I2VParams(
        image_name=f"wan_{job_id}.png", prompt=req.prompt, negative_prompt=req.negative_prompt,
        seed=req.seed if req.seed is not None else secrets.randbelow(2**63),
        width=width, height=height, length=req.length, fps=req.fps, steps=req.steps,  # type: ignore[arg-type]
        cfg=req.cfg, shift=req.shift, lora_strength=req.effective_lora_strength,  # type: ignore[arg-type]
        switch_step=req.switch_step, sampler=req.sampler, scheduler=req.scheduler,  # type: ignore[arg-type]
        filename_prefix=f"video/wan_{job_id}",
    )


def replace_image(params: I2VParams, name: str) -> I2VParams:
    return params if name == params.image_name else replace(params, image_name=name)


def video_fields(p: I2VParams) -> dict[str, Any]:
    return {"seed": p.seed, "width": p.width, "height": p.height, "length": p.length, "fps": p.fps,
            "duration_s": round(p.length / p.fps, 3)}


def dry_run_result(graph: dict[str, Any], timings: Timings, checks: dict[str, Any],
                   **fields: Any) -> dict[str, Any]:
    return {"dry_run": True, **fields, "checks": checks, "workflow": graph, "timings_ms": timings.done()}
