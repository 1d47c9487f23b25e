"""A validated request -> a `Plan`: the graph to queue, the files to upload, and what the result
and a dry run show. Everything that can be checked without the GPU is checked here: the model
files the graph loads, the LoRAs (downloaded if given by URL), every input image or media file.

Video jobs (I2V, first-last-frame, text-to-video, sound-to-video, Animate; model 14b or 5b) run the
bundled graph of `VideoRequest.spec`; what decides the video's length and parts is read by the
spec's `drive` hook before anything is queued: S2V's sound and Animate's videos (wan_worker.drivers),
a story's segments (wan_worker.segments).
Workflow mode brings its own graph. Either way the handler runs the same pipeline on the plan.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import loras as lora_files
from .graphs import VideoParams
from .images import PreparedImage, load_image
from .media import Media, load_media
from .models import check_volume, sets_report
from .postprocess import PHASES as POST_PHASES, Post, plan_post
from .progress import Progress, Timed
from .request import Request, VideoRequest, WorkflowRequest, resolve_size
from .settings import Settings
from .workflow import Driven, Graph, JobContext, Workflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One file for ComfyUI's input folder."""

    name: str
    data: bytes
    mime_type: str


@dataclass
class Plan:
    """One job, resolved: what to upload, the graph to queue, and how to report it."""

    kind: str  # "video": one MP4 and its metadata; "files": every output, as worker-comfyui returns them
    uploads: list[Upload]
    build: Callable[[list[str]], Graph]  # the graph, given the names ComfyUI stored the uploads under
    phases: dict[str, str] = field(default_factory=dict)  # node id -> progress phase
    default_phase: str = "running"
    checks: dict[str, Any] = field(default_factory=dict)  # what a dry run reports
    fields: dict[str, Any] = field(default_factory=dict)  # extra result fields (seed, size, loras...)
    last_frame: bool = False
    beside: dict[str, bytes] = field(default_factory=dict)  # result key -> MP4 (return_preprocessed)

    @property
    def upload_names(self) -> list[str]:
        return [u.name for u in self.uploads]

    def take_uploads(self) -> list[Upload]:
        """The files to upload, handed over once: the plan stops holding them, so a large input's
        decoded bytes are freed after the upload instead of living on through delivery, where the
        job's memory peaks (one copy of the payload less there: bench --profile)."""
        uploads, self.uploads = self.uploads, []
        return uploads


def plan(settings: Settings, workflows: dict[str, Workflow], job_id: str, req: Request,
         progress: Progress, timings: Timed) -> Plan:
    if isinstance(req, WorkflowRequest):
        return plan_workflow(settings, req, timings)
    return plan_video(settings, workflows, job_id, req, progress, timings)


def plan_workflow(settings: Settings, req: WorkflowRequest, timings: Timed) -> Plan:
    """The client's own graph and files; the graph brings its own models, which ComfyUI validates."""
    with timings.phase("image"):
        media: list[Media] = [load_media(i.name, i.image, settings, f"images[{n}].image")
                              for n, i in enumerate(req.images)]
    return Plan(kind="files", uploads=[Upload(m.name, m.data, m.mime_type) for m in media],
                build=lambda _names: req.workflow, checks={"images": [m.check() for m in media]})


def plan_video(settings: Settings, workflows: dict[str, Workflow], job_id: str, req: VideoRequest,
               progress: Progress, timings: Timed) -> Plan:
    """Check the files of the job's own graph (its model set) and its inputs; nothing else. What one
    family reads beyond the images (S2V's sound, Animate's videos, a story's segments) is its spec's
    `drive` hook."""
    wf = workflows[req.spec.name]
    spec = wf.spec
    with timings.phase("validate"):
        names = wf.model_names() | (spec.job_models(req) if spec.job_models else frozenset())
        volume = check_volume(settings, names, model_set=spec.model_set)
        if not req.dry_run:
            volume.raise_for_problems()
    with timings.phase("image"):
        start = load_image(req.image, settings) if req.image else None
        end = load_image(req.end_image, settings, field="end_image") if req.end_image else None
    size = resolve_size(req, *((start.width, start.height) if start else (None, None)))
    seed = req.seed if req.seed is not None else secrets.randbelow(2**63)
    ctx = JobContext(job_id, settings, wf, progress, timings, size, seed)
    driven = spec.drive(req, ctx) if spec.drive else Driven(length=req.length or 0)
    params = video_params(job_id, req, start, end, size, seed, driven)
    post = plan_post(req, params.width, params.height, params.length, params.fps, settings)
    post_files = post.check_files(settings, req.dry_run) if post else None  # before any LoRA download
    one_model = "low" not in spec.lora_after
    loras = resolve_loras(req.loras, req, settings, progress, timings, one_model)
    own = {part: resolve_loras(entries, req, settings, progress, timings, one_model)
           for part, entries in driven.part_loras.items()}
    log.info("%s (model %s) %dx%d, %d frames at %g fps in %d part(s), %d steps, seed %d, %d LoRA(s), prompt %r "
             "(%d chars)", spec.name, req.model, params.width, params.height, params.length, params.fps,
             params.parts, params.steps, params.seed, len(loras), params.prompt[:40], len(params.prompt))
    uploads = []
    if start is not None and params.image_name:
        uploads.append(Upload(params.image_name, start.data, start.mime_type))
    if end is not None and params.end_image_name:
        uploads.append(Upload(params.end_image_name, end.data, end.mime_type))
    uploads.extend(Upload(*u) for u in driven.uploads)
    nodes = [lo.node() for lo in loras]
    part_nodes = {part: [lo.node() for lo in found] for part, found in own.items()}

    def build(names: list[str]) -> Graph:
        g = wf.build(_with_names(params, names), nodes, part_nodes)
        if post is not None:
            post.insert(g, wf.roles["Create Video"])
        return g

    fields = video_fields(params, spec.name, req.model, post)
    if spec.repeat is not None and not spec.repeat.optional:
        fields[f"{spec.repeat.unit}s"] = params.parts
    fields.update(driven.fields)
    if loras:
        fields["loras"] = [lo.to_dict() for lo in loras]
    checks = {**video_checks(start, end, params, volume.to_dict(), [*loras, *(lo for f in own.values() for lo in f)]),
              **driven.checks}
    if post_files is not None:
        checks["postprocess_models"] = post_files
    if req.dry_run:
        checks["model_sets"] = sets_report(settings)
    phases = {**wf.phases(params.parts), **(POST_PHASES if post else {})}
    return Plan(kind="video", uploads=uploads, build=build, phases=phases,
                default_phase="loading_models", checks=checks, fields=fields, last_frame=req.return_last_frame,
                beside=dict(driven.beside))


def resolve_loras(entries: list[Any] | None, req: VideoRequest, settings: Settings, progress: Progress,
                  timings: Timed, one_model: bool = False) -> list[lora_files.ResolvedLora]:
    """LoRA entries (the job's, or one segment's own) found or downloaded (a dry run never
    downloads), progress while downloading. A one-model graph (Animate) takes each `name` entry
    once, on its one model ("high")."""
    if not entries:
        return []
    choices = [c for c in lora_files.choices(entries) if not one_model or c.expert == "high"]

    def report(done: int, _total: int | None) -> None:
        progress.phase("downloading_loras", bytes=done)

    with timings.phase("loras"):
        return lora_files.resolve(choices, settings, download=not req.dry_run,
                                  progress=report)


def video_params(job_id: str, req: VideoRequest, start: PreparedImage | None, end: PreparedImage | None,
                 size: tuple[int, int], seed: int, driven: Driven) -> VideoParams:
    """Every value the graph takes: the request's, resolved, and what its driving inputs decided."""
    width, height = size
    values: dict[str, Any] = dict(
        image_name=f"wan_{job_id}.{start.extension}" if start is not None else None,
        prompt=req.prompt or "", negative_prompt=req.negative_prompt, seed=seed,
        width=width, height=height, length=driven.length, fps=req.fps, steps=req.steps,
        cfg=req.cfg, shift=req.shift, lora_strength=req.effective_lora_strength,
        switch_step=req.switch_step, sampler=req.sampler, scheduler=req.scheduler,
        filename_prefix=f"wan_{job_id}",
        end_image_name=f"wan_{job_id}_end.{end.extension}" if end is not None else None,
        parts=driven.parts, mode=req.mode,
    )
    return VideoParams(**{**values, **driven.params})


UPLOADED = ("image_name", "end_image_name", "audio_name")  # the params naming uploads, in upload order


def _with_names(p: VideoParams, names: list[str]) -> VideoParams:
    """The params with the names ComfyUI stored the uploads under (in the order of UPLOADED, then
    Animate's videos in the order of `video_names`)."""
    present = [key for key in UPLOADED if getattr(p, key)]
    stored = dict(zip(present, names))
    rest = names[len(present):]
    return replace(p, **stored, video_names=dict(zip(p.video_names, rest)) if p.video_names else {})


def video_fields(p: VideoParams, graph: str, model: str, post: Post | None = None) -> dict[str, Any]:
    """The MP4's size, frames and fps (after post-processing, which adds what was rendered)."""
    (width, height), length, fps = (post.width_height, post.frames, post.fps) if post else ((p.width, p.height),
                                                                                             p.length, p.fps)
    return {"model": model, "graph": graph, "seed": p.seed, "width": width, "height": height,
            "length": length, "fps": fps, "duration_s": round(length / fps, 3), **(post.fields() if post else {})}


def video_checks(start: PreparedImage | None, end: PreparedImage | None, p: VideoParams,
                 models: dict[str, Any], loras: list[lora_files.ResolvedLora]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if start is not None:
        checks["image"] = {"width": start.width, "height": start.height, "format": start.format}
    if end is not None:
        checks["end_image"] = {"width": end.width, "height": end.height, "format": end.format,
                               "fit": f"scaled to cover {p.width}x{p.height}, then center-cropped"}
    checks["models"] = models
    if loras:
        checks["loras"] = [{**lo.to_dict(), "path": lo.path} for lo in loras]
    return checks
