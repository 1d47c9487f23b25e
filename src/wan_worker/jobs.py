"""A validated request -> a `Plan`: the graph to queue, the files to upload, and what the result
and a dry run show. Everything that can be checked without the GPU is checked here: the model
files the graph loads, the LoRAs (downloaded if given by URL), every input image or media file.

Video jobs (I2V, first-last-frame, text-to-video, sound-to-video, Animate; model 14b or 5b) run the
bundled graph of `VideoRequest.spec`; a graph with `timing` (S2V, Animate) takes its length and parts
from the duration of its driving input (the sound, the driving video), read before anything is
queued by wan_worker.drivers (which also decides where Animate's control videos come from).
Workflow mode brings its own graph. Either way the handler runs the same pipeline on the plan.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Protocol

from . import loras as lora_files
from .drivers import CONTROLS, Driving, Sound, load_driving, load_sound, make_controls, worker_makes_controls
from .errors import INVALID_INPUT, WorkerError
from .graphs import VideoParams
from .images import PreparedImage, load_image
from .media import Media, load_media
from .models import PREPROCESS_FILES, check_volume, sets_report
from .progress import Progress
from .request import Request, VideoRequest, WorkflowRequest, invalid, resolve_size
from .settings import Settings
from .workflow import Graph, Workflow

log = logging.getLogger(__name__)


class Timed(Protocol):
    """The handler's timings: `with timings.phase("image"): ...` adds to the result's timings_ms."""

    def phase(self, name: str) -> ContextManager[None]: ...


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
    """Check the files of the job's own graph (its model set) and its inputs; nothing else."""
    wf = workflows[req.spec.name]
    with timings.phase("validate"):
        names = wf.model_names() | ({m.name for m in PREPROCESS_FILES} if worker_makes_controls(req) else set())
        volume = check_volume(settings, names, model_set=wf.spec.model_set)
        if not req.dry_run:
            volume.raise_for_problems()
    with timings.phase("image"):
        start = load_image(req.image, settings) if req.image else None
        end = load_image(req.end_image, settings, field="end_image") if req.end_image else None
    sound = load_sound(req, settings, timings) if req.audio else None
    driving = load_driving(req, settings, timings) if req.video else None
    if driving is not None and start is not None and worker_makes_controls(req):
        driving = make_controls(driving, req, settings, resolve_size(req, start.width, start.height), progress,
                                timings)
    loras = resolve_loras(req, settings, progress, timings, one_model="low" not in wf.spec.lora_after)
    params = video_params(job_id, req, start, end, sound, wf, driving)
    log.info("%s (model %s) %dx%d, %d frames at %g fps in %d part(s), %d steps, seed %d, %d LoRA(s), prompt %r "
             "(%d chars)", wf.spec.name, req.model, params.width, params.height, params.length, params.fps,
             params.parts, params.steps, params.seed, len(loras), req.prompt[:40], len(req.prompt))
    uploads = []
    if start is not None and params.image_name:
        uploads.append(Upload(params.image_name, start.data, start.mime_type))
    if end is not None and params.end_image_name:
        uploads.append(Upload(params.end_image_name, end.data, end.mime_type))
    if sound is not None and params.audio_name:
        uploads.append(Upload(params.audio_name, sound.input.data, sound.input.mime_type))
    if driving is not None:
        uploads.extend(Upload(*u) for u in driving.uploads(params.video_names))
    nodes = [lo.node() for lo in loras]

    def build(names: list[str]) -> Graph:
        return wf.build(_with_names(params, names), nodes)

    fields = video_fields(params, wf.spec.name, req.model)
    if wf.spec.repeat is not None:
        fields[f"{wf.spec.repeat.unit}s"] = params.parts
    if sound is not None:
        fields.update(audio=True, audio_start_s=round(params.audio_start_s, 3), audio_s=round(params.audio_s, 3))
    if driving is not None:
        fields.update(mode=params.mode, frames=params.length, audio=driving.video.audio is not None)
        if params.mode == "replace":
            fields["relight"] = params.relight
    if loras:
        fields["loras"] = [lo.to_dict() for lo in loras]
    checks = video_checks(start, end, params, volume.to_dict(), loras)
    if sound is not None:
        checks["audio"] = {**sound.input.check(), "start_s": round(params.audio_start_s, 3),
                           "used_s": round(params.audio_s, 3)}
    if driving is not None:
        checks.update(driving.checks())
    if req.dry_run:
        checks["model_sets"] = sets_report(settings)
    beside = ({f: driving.controls[f][1] for f in ("pose_video", "face_video")}
              if driving is not None and driving.made and req.return_preprocessed and not req.dry_run else {})
    return Plan(kind="video", uploads=uploads, build=build, phases=wf.phases(params.parts), default_phase="loading_models",
                checks=checks, fields=fields, last_frame=req.return_last_frame, beside=beside)


def resolve_loras(req: VideoRequest, settings: Settings, progress: Progress, timings: Timed,
                  one_model: bool = False) -> list[lora_files.ResolvedLora]:
    """The job's LoRAs, found or downloaded (a dry run never downloads), progress while downloading.
    A one-model graph (Animate) takes each `name` entry once, on its one model ("high")."""
    if not req.loras:
        return []
    choices = [c for c in lora_files.choices(req.loras) if not one_model or c.expert == "high"]

    def report(done: int, _total: int | None) -> None:
        progress.phase("downloading_loras", bytes=done)

    with timings.phase("loras"):
        return lora_files.resolve(choices, settings, download=not req.dry_run,
                                  progress=report)


def video_params(job_id: str, req: VideoRequest, start: PreparedImage | None, end: PreparedImage | None,
                 sound: Sound | None = None, wf: Workflow | None = None,
                 driving: Driving | None = None) -> VideoParams:
    width, height = resolve_size(req, *((start.width, start.height) if start else (None, None)))
    length, parts = req.length, 1
    names: dict[str, str] = {}
    if driving is not None and wf is not None and wf.spec.timing is not None:
        try:
            length, parts = wf.spec.timing(wf, driving.video.duration_s)
        except ValueError as exc:
            raise invalid("video", f"is too long for one video: {exc}") from None
        if driving.video.audio is not None:
            names["Driving Video"] = f"wan_{job_id}_video{driving.video.extension}"
        names.update({CONTROLS[f]: f"wan_{job_id}_{f.removesuffix('_video')}.mp4"
                      if data is not found.data else f"wan_{job_id}_{f.removesuffix('_video')}{found.extension}"
                      for f, (found, data) in driving.controls.items()})
    if sound is not None and wf is not None and wf.spec.timing is not None:
        try:
            length, parts = wf.spec.timing(wf, sound.span.duration_s)
        except ValueError as exc:
            raise WorkerError(INVALID_INPUT, f"Invalid input: `audio` is too long for one video: {exc}; "
                                             "send a shorter part with `duration_s`.",
                              {"errors": [{"field": "duration_s", "message": str(exc)}]}) from None
    return VideoParams(
        image_name=f"wan_{job_id}.{start.extension}" if start is not None else None,
        prompt=req.prompt, negative_prompt=req.negative_prompt,
        seed=req.seed if req.seed is not None else secrets.randbelow(2**63),
        width=width, height=height, length=length, fps=req.fps, steps=req.steps,  # type: ignore[arg-type]
        cfg=req.cfg, shift=req.shift, lora_strength=req.effective_lora_strength,  # type: ignore[arg-type]
        switch_step=req.switch_step, sampler=req.sampler, scheduler=req.scheduler,  # type: ignore[arg-type]
        filename_prefix=f"wan_{job_id}",
        end_image_name=f"wan_{job_id}_end.{end.extension}" if end is not None else None,
        parts=parts,
        audio_name=f"wan_{job_id}_audio{sound.input.extension}" if sound is not None else None,
        audio_start_s=sound.span.start_s if sound is not None else 0.0,
        audio_s=sound.span.duration_s if sound is not None else 0.0,
        video_names=names, mode=req.mode,
        relight=req.mode == "replace" and req.relight is not False,
    )


UPLOADED = ("image_name", "end_image_name", "audio_name")  # the params naming uploads, in upload order


def _with_names(p: VideoParams, names: list[str]) -> VideoParams:
    """The params with the names ComfyUI stored the uploads under (in the order of UPLOADED, then
    Animate's videos in the order of `video_names`)."""
    present = [key for key in UPLOADED if getattr(p, key)]
    stored = dict(zip(present, names))
    rest = names[len(present):]
    return replace(p, **stored, video_names=dict(zip(p.video_names, rest)) if p.video_names else {})


def video_fields(p: VideoParams, graph: str, model: str) -> dict[str, Any]:
    return {"model": model, "graph": graph, "seed": p.seed, "width": p.width, "height": p.height,
            "length": p.length, "fps": p.fps, "duration_s": round(p.length / p.fps, 3)}


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
