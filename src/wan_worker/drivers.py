"""The inputs that drive a video's length: S2V's sound and Animate's videos, read and checked
before anything is queued. Each family's `drive` hook (GraphSpec.drive) lives here.

A graph with `timing` (GraphSpec) takes its length and parts from the duration of its driving
input. `drive_sound` reads `audio` and the part of it the video covers; `drive_animate` reads
Animate's `video` and its control videos (pose, face; for replace also background and mask), and
`control_videos` is the one place that decides where those come from: sent by the client
(resampled to 16 fps when they are not), or made by the worker from `video` (`make_controls`,
wan_worker.preprocess).

This module sits below request.py and graphs.py (graphs.py names these hooks in its specs): it
reads the request through the `SoundJob` and `AnimateJob` protocols, not by importing it, and
imports the media room (avmedia: PyAV, HTTP fetches) where a job needs it, so the graph table
loads without them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from .errors import INVALID_INPUT, WorkerError, invalid
from .progress import Progress, Timed
from .settings import Settings
from .workflow import Driven, JobContext

if TYPE_CHECKING:
    from .avmedia import AVInput, Span

ANIMATE_FPS = 16  # Animate makes 16 frames a second; driving and control videos are read at this rate


class SoundJob(Protocol):
    """The fields of a sound-to-video request the hook reads (request.VideoRequest)."""

    audio: str | None
    audio_start_s: float | None
    duration_s: float | None


class AnimateJob(Protocol):
    """The fields of an Animate request the hook reads (request.VideoRequest)."""

    video: str | None
    mode: str
    pose_video: str | None
    face_video: str | None
    background_video: str | None
    mask_video: str | None
    relight: bool | None
    person: int | None
    return_preprocessed: bool
    dry_run: bool


@dataclass(frozen=True)
class Sound:
    """A sound-to-video job's `audio`: the checked file and the part of it the video covers."""

    input: AVInput
    span: Span


def load_sound(req: SoundJob, settings: Settings, timings: Timed) -> Sound:
    """`audio` read and measured, and the part of it the video covers (`audio_start_s`,
    `duration_s`) checked against its length and MAX_AUDIO_S."""
    from .avmedia import load_av, pick_span  # noqa: PLC0415 - see the module's docstring

    with timings.phase("audio"):
        found = load_av(req.audio, settings, "audio", "audio")
        return Sound(found, pick_span(found, req.audio_start_s, req.duration_s, settings.max_audio_s,
                                      "MAX_AUDIO_S", "audio_start_s", "duration_s"))


# Animate's control videos: job field -> the graph role that loads it
CONTROLS = {"pose_video": "Pose Video", "face_video": "Face Video", "background_video": "Background Video",
            "mask_video": "Mask Video"}
WHAT = {"pose_video": "the pose skeletons drawn per frame", "face_video": "the driver's face, cropped per frame",
        "background_video": "the video with the person removed", "mask_video": "the person's mask per frame"}


def control_fields(mode: str) -> tuple[str, ...]:
    """The control videos WanAnimateToVideo reads in `mode`."""
    return ("pose_video", "face_video") + (("background_video", "mask_video") if mode == "replace" else ())


@dataclass(frozen=True)
class Driving:
    """An Animate job's videos: the driving video (its length, its sound) and the control videos
    the graph loads, each at 16 fps (resampled when it was not) and at least as long as the driver."""

    video: AVInput
    frames: int  # the driving video's frames at 16 fps: the result's length
    controls: dict[str, tuple[AVInput, bytes]]  # field -> (what was sent, the bytes to upload)
    made: bool = False  # the controls were made by the worker from `video` (wan_worker.preprocess)

    def uploads(self, names: dict[str, str]) -> list[tuple[str, bytes, str]]:
        """(name, bytes, MIME type) in the order of `names` (graph role -> upload name), as
        VideoParams.video_names keeps it."""
        by_role = {CONTROLS[f]: data for f, (_found, data) in self.controls.items()}
        return [(name, self.video.data, self.video.mime_type) if role == "Driving Video"
                else (name, by_role[role], "video/mp4") for role, name in names.items()]

    def checks(self) -> dict[str, Any]:
        out: dict[str, Any] = {"video": {**self.video.check(), "frames_at_16fps": self.frames}}
        for f, (found, data) in self.controls.items():
            out[f] = ({"made_from": "video", "bytes": len(data)} if self.made
                      else {**found.check(), "resampled": data is not found.data})
        return out


def worker_makes_controls(req: AnimateJob) -> bool:
    """An Animate job without `pose_video`/`face_video`: the worker makes them from `video`
    (request.py refuses one without the other)."""
    return req.video is not None and req.pose_video is None and req.face_video is None


def require_controls(req: AnimateJob) -> tuple[str, ...]:
    """The control fields the client must send: none when the worker makes them from `video`, else
    the mode's (the official Wan2.2 Animate preprocessing's); a missing one is refused by name."""
    if worker_makes_controls(req):
        return ()
    needed = control_fields(req.mode)
    missing = [f for f in needed if getattr(req, f) is None]
    if missing:
        listed = ", ".join(f"`{f}` ({WHAT[f]})" for f in missing)
        raise invalid(missing[0], f"is missing: {req.mode} mode needs {listed}, made from `video` by the "
                                  "official Wan2.2 Animate preprocessing (see docs/job-contract.md); send "
                                  f"{'them' if len(missing) > 1 else 'it'}")
    return needed


def control_videos(req: AnimateJob, settings: Settings, frames: int) -> dict[str, tuple[AVInput, bytes]]:
    """The pose, face (and for replace, background and mask) videos WanAnimateToVideo reads, each
    checked to cover the driving video's `frames` and resampled to 16 fps when it is not."""
    from .avmedia import frames_at, load_av, resample_video  # noqa: PLC0415 - see the module's docstring

    out = {}
    for f in require_controls(req):
        found = load_av(getattr(req, f), settings, f, "video")
        have = frames_at(found, ANIMATE_FPS)
        if have < frames:
            raise invalid(f, f"lasts {found.duration_s:.2f} s ({have} frames at {ANIMATE_FPS} fps), shorter than "
                             f"`video` ({frames} frames); make it from the same driving video")
        assert found.video is not None
        same = abs(found.video.fps - ANIMATE_FPS) < 0.01
        out[f] = (found, found.data if same else resample_video(found, ANIMATE_FPS, frames))
    return out


def load_driving(req: AnimateJob, settings: Settings, timings: Timed) -> Driving:
    """`video` read and measured (at most MAX_VIDEO_S), then its control videos."""
    from .avmedia import frames_at, load_av  # noqa: PLC0415 - see the module's docstring

    with timings.phase("video"):
        require_controls(req)  # before reading megabytes
        found = load_av(req.video, settings, "video", "video")
        if found.duration_s > settings.max_video_s + 1e-6:
            raise invalid("video", f"lasts {found.duration_s:.2f} s, more than this worker's limit of "
                                   f"{settings.max_video_s:g} s (MAX_VIDEO_S); send a shorter clip")
        frames = frames_at(found, ANIMATE_FPS)
        return Driving(found, frames, control_videos(req, settings, frames))


def make_controls(driving: Driving, req: AnimateJob, settings: Settings, size: tuple[int, int],
                  progress: Progress, timings: Timed) -> Driving:
    """The pose, face (and for replace, background and mask) videos made from `video` at the job's
    size, before anything is queued; a dry run reports them without running the models."""
    from .avmedia import rgb_frames  # noqa: PLC0415 - see the module's docstring

    fields = control_fields(req.mode)
    if req.dry_run:
        return replace(driving, controls={f: (driving.video, b"") for f in fields}, made=True)
    from .preprocess import preprocess, volume_models  # noqa: PLC0415 - onnxruntime, numpy: Animate only

    width, height = size
    with timings.phase("preprocessing"):
        result = preprocess(rgb_frames(driving.video, ANIMATE_FPS, driving.frames), width=width, height=height,
                            mode=req.mode, person=req.person, models=volume_models(settings),
                            progress=progress.preprocessing)
        videos = result.videos(ANIMATE_FPS)
    return replace(driving, controls={f: (driving.video, videos[f]) for f in fields}, made=True)


def drive_sound(req: SoundJob, ctx: JobContext) -> Driven:
    """S2V's hook: the sound, the part of it the video covers, and the chunks that takes."""
    sound = load_sound(req, ctx.settings, ctx.timings)
    spec = ctx.workflow.spec
    assert spec.timing is not None
    try:
        length, parts = spec.timing(ctx.workflow, sound.span.duration_s)
    except ValueError as exc:
        raise WorkerError(INVALID_INPUT, f"Invalid input: `audio` is too long for one video: {exc}; "
                                         "send a shorter part with `duration_s`.",
                          {"errors": [{"field": "duration_s", "message": str(exc)}]}) from None
    name = f"wan_{ctx.job_id}_audio{sound.input.extension}"
    start, used = round(sound.span.start_s, 3), round(sound.span.duration_s, 3)
    return Driven(length=length, parts=parts,
                  params={"audio_name": name, "audio_start_s": sound.span.start_s, "audio_s": sound.span.duration_s},
                  uploads=((name, sound.input.data, sound.input.mime_type),),
                  fields={"audio": True, "audio_start_s": start, "audio_s": used},
                  checks={"audio": {**sound.input.check(), "start_s": start, "used_s": used}})


def animate_models(req: AnimateJob) -> frozenset[str]:
    """The preprocessing models, when the worker makes the control videos from `video`."""
    from .models import PREPROCESS_FILES  # noqa: PLC0415 - yaml, only for Animate

    return frozenset(m.name for m in PREPROCESS_FILES) if worker_makes_controls(req) else frozenset()


def drive_animate(req: AnimateJob, ctx: JobContext) -> Driven:
    """Animate's hook: the driving video, its control videos (made here from `video` when the job
    sent none), the windows its length takes, and the names the graph loads them by."""
    driving = load_driving(req, ctx.settings, ctx.timings)
    if worker_makes_controls(req):
        driving = make_controls(driving, req, ctx.settings, ctx.size, ctx.progress, ctx.timings)
    spec = ctx.workflow.spec
    assert spec.timing is not None
    try:
        length, parts = spec.timing(ctx.workflow, driving.video.duration_s)
    except ValueError as exc:
        raise invalid("video", f"is too long for one video: {exc}") from None
    names = video_names(driving, ctx.job_id)
    relight = req.mode == "replace" and req.relight is not False
    fields: dict[str, Any] = {"mode": req.mode, "frames": length, "audio": driving.video.audio is not None}
    if req.mode == "replace":
        fields["relight"] = relight
    beside = ({f: driving.controls[f][1] for f in ("pose_video", "face_video")}
              if driving.made and req.return_preprocessed and not req.dry_run else {})
    return Driven(length=length, parts=parts, params={"video_names": names, "mode": req.mode, "relight": relight},
                  uploads=tuple(driving.uploads(names)), fields=fields, checks=driving.checks(), beside=beside)


def video_names(driving: Driving, job_id: str) -> dict[str, str]:
    """Graph role -> upload name: the driving video (for its sound, when it has one) and each control
    video (.mp4 when the worker resampled or made it, else the file's own extension)."""
    names: dict[str, str] = {}
    if driving.video.audio is not None:
        names["Driving Video"] = f"wan_{job_id}_video{driving.video.extension}"
    for f, (found, data) in driving.controls.items():
        stem = f"wan_{job_id}_{f.removesuffix('_video')}"
        names[CONTROLS[f]] = f"{stem}.mp4" if data is not found.data else f"{stem}{found.extension}"
    return names
