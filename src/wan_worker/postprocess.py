"""Upscaling and frame interpolation inside the job's own graph, for every family.

Every bundled graph ends in a `Create Video` node; a job that asks for post-processing gets a block
inserted in front of it, whatever fed its frames before (a Decode, S2V's Cut To Audio, Animate's Cut
To Video, a story's joined segments): ComfyUI's core UpscaleModelLoader + ImageUpscaleWithModel
(spandrel; tiled at 512 pixels, smaller tiles when memory runs out), then the worker's RIFE node
(comfyui_nodes/wan_worker_nodes). The frames stay on the GPU the job holds and the MP4 is encoded
once. Upscaling runs first: an ESRGAN costs far more a pixel than RIFE (bench --postprocess), so it
sees the N rendered frames rather than the (N-1)*factor+1 interpolated ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .delivery import MB
from .errors import MODEL_DAMAGED, MODELS_MISSING, OUTPUT_TOO_LARGE, WorkerError, invalid
from .models import ESRGAN_X2, MANIFEST, RIFE49, check_volume, file_problem, model_dirs
from .request import MAX_SIDE, VideoRequest
from .settings import Settings

Graph = dict[str, dict[str, Any]]

# node ids of the block (ComfyUI takes any string id); titles say what each does in the UI
UPSCALE_MODEL, UPSCALE, RESIZE = "post_upscale_model", "post_upscale", "post_resize"
RIFE_MODEL, INTERPOLATE = "post_rife_model", "post_interpolate"
PHASES = {UPSCALE: "upscaling", RESIZE: "upscaling", INTERPOLATE: "interpolating"}
# The least an MP4 of these frames can weigh: x264 at ComfyUI's settings (CRF 23, yuv420p) spends
# several times more than 0.016 bits a pixel on moving pictures, so a video this estimate puts
# over the inline limit is certain not to fit.
MIN_BYTES_PER_PIXEL = 0.002
_SCALE_IN_NAME = re.compile(r"(?<![a-z0-9])(?:x([1-8])|([1-8])x)(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Post:
    """What a job's post-processing does: the frames and size it renders, those it delivers."""

    rendered: tuple[int, int, int, float]  # width, height, frames, fps as sampled
    factor: int = 1  # frames out per frame in (RIFE); 1: no interpolation
    rife: str | None = None
    upscaler: str | None = None  # a file of the upscale_models folders
    size: tuple[int, int] | None = None  # the upscaled size (None: no upscaling)
    resize: bool = False  # the upscaler's own scale is not the size asked for: scale to `size`
    adjust_fps: bool = True

    @property
    def frames(self) -> int:
        return (self.rendered[2] - 1) * self.factor + 1

    @property
    def fps(self) -> float:
        return self.rendered[3] * (self.factor if self.adjust_fps else 1)

    @property
    def width_height(self) -> tuple[int, int]:
        return self.size or self.rendered[:2]

    def model_names(self) -> set[str]:
        """The manifest files this block loads (checked before queueing, as the graph's own)."""
        return {n for n in (self.rife, self.upscaler) if n} & {m.name for m in MANIFEST}

    def check_files(self, settings: Settings, dry_run: bool = False) -> dict[str, Any]:
        """The block's files where ComfyUI will look, before anything is queued: MODELS_MISSING naming
        the file and `--set postprocess`, or the job's own upscaler and the folders searched; a dry
        run only reports them."""
        report = check_volume(settings, self.model_names(), model_set="postprocess")
        if not dry_run:
            report.raise_for_problems()
            if self.upscaler and self.upscaler not in self.model_names():
                find_upscaler(settings, self.upscaler)
        return report.to_dict()

    def fields(self) -> dict[str, Any]:
        """The result's account of it: what was rendered, what each step made."""
        width, height, frames, fps = self.rendered
        out: dict[str, Any] = {"rendered": {"width": width, "height": height, "length": frames, "fps": fps}}
        if self.factor > 1:
            out["interpolation"] = {"model": "rife", "file": self.rife, "factor": self.factor,
                                    "num_interpolated_frames": self.factor - 1}
        if self.upscaler:
            out["upscale"] = {"file": self.upscaler, "width": self.width_height[0], "height": self.width_height[1]}
        return out

    def insert(self, g: Graph, create_video: str) -> None:
        """Put the block between `create_video` and whatever feeds its frames; set the fps it plays at."""
        inputs = g[create_video]["inputs"]
        frames = inputs["images"]
        if self.upscaler:
            _node(g, UPSCALE_MODEL, "UpscaleModelLoader", "Upscale Model", model_name=self.upscaler)
            frames = _node(g, UPSCALE, "ImageUpscaleWithModel", "Upscale", upscale_model=[UPSCALE_MODEL, 0],
                           image=frames)
            if self.resize and self.size:
                frames = _node(g, RESIZE, "ImageScale", "Upscale To Size", image=frames, upscale_method="lanczos",
                               width=self.size[0], height=self.size[1], crop="disabled")
        if self.factor > 1:
            _node(g, RIFE_MODEL, "WanWorkerLoadRIFE", "Interpolation Model", model_name=self.rife)
            frames = _node(g, INTERPOLATE, "WanWorkerRIFEInterpolate", "Interpolate", rife_model=[RIFE_MODEL, 0],
                           images=frames, multiplier=self.factor)
        inputs["images"] = frames
        inputs["fps"] = self.fps


def _node(g: Graph, node_id: str, class_type: str, title: str, **inputs: Any) -> list[Any]:
    g[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
    return [node_id, 0]


def upscaler_scale(name: str) -> int | None:
    """An upscaler's own scale, as its file name says it (RealESRGAN_x2plus, 4x-UltraSharp), or None."""
    found = _SCALE_IN_NAME.search(name.rsplit("/", 1)[-1])
    return int(found.group(1) or found.group(2)) if found else None


def plan_post(req: VideoRequest, width: int, height: int, frames: int, fps: float,
              settings: Settings) -> Post | None:
    """The job's post-processing, checked against the sizes it makes and the delivery it will have;
    None when it asks for none."""
    wants_upscale = req.upscaler is not None or req.upscale_factor is not None
    if req.interpolation_factor == 1 and not wants_upscale:
        return None
    rendered = (width, height, frames, fps)
    adjust = req.adjust_fps_for_interpolation is not False
    post = Post(rendered, req.interpolation_factor, RIFE49.name if req.interpolation_factor > 1 else None,
                adjust_fps=adjust)
    if wants_upscale:
        post = _with_upscale(post, req)
    _check_delivery(post, req, settings)
    return post


def _with_upscale(post: Post, req: VideoRequest) -> Post:
    name = ESRGAN_X2.name if req.upscaler in (None, "default") else str(req.upscaler)
    native = upscaler_scale(name)
    field = "upscale_factor" if req.upscale_factor is not None else "upscaler"
    if req.upscale_factor is None and native is None:
        raise invalid("upscale_factor", f"is needed with upscaler {name!r}: its scale cannot be told from its name "
                                        "(x2, 4x, ...); send the scale you want the video at, e.g. 2")
    factor = req.upscale_factor or float(native or 1)
    width, height = (_even(side * factor) for side in post.rendered[:2])
    if max(width, height) > MAX_SIDE:
        most = MAX_SIDE / max(post.rendered[:2])
        raise invalid(field, f"would make the video {width}x{height}, more than the {MAX_SIDE} pixels a side the "
                             f"worker makes (MAX_SIDE); send an `upscale_factor` of at most {int(most * 100) / 100:g}, "
                             f"or a smaller size")
    exact = native is not None and (width, height) == tuple(s * native for s in post.rendered[:2])
    return replace(post, upscaler=name, size=(width, height), resize=not exact)


def _even(x: float) -> int:
    """A side H.264 (yuv420p) can take: even."""
    return max(2, int(round(x / 2)) * 2)


def _check_delivery(post: Post, req: VideoRequest, settings: Settings) -> None:
    """Refuse a job whose MP4 could only be returned inline and is certain to be too big for it."""
    if req.output == "s3" or (req.output == "auto" and settings.s3_configured):
        return
    width, height = post.width_height
    least = width * height * post.frames * MIN_BYTES_PER_PIXEL
    limit = settings.max_inline_output_mb * MB
    if least > limit:
        raise WorkerError(OUTPUT_TOO_LARGE,
                          f"The video would be {width}x{height} with {post.frames} frames: at least "
                          f"{least / MB:.0f} MB of MP4, more than the {limit / MB:g} MB that can be returned inline "
                          "(MAX_INLINE_OUTPUT_MB); "
                          "configure the BUCKET_* settings so it is delivered as an S3 URL, or lower "
                          "`num_interpolated_frames`, `upscale_factor` or `length`.",
                          {"least_bytes": int(least), "limit_bytes": int(limit)})


def find_upscaler(settings: Settings, name: str) -> str:
    """Where ComfyUI's upscale_models folders hold the job's own upscaler; MODELS_MISSING or
    MODEL_DAMAGED (by the file check the manifest's files get) before anything is queued."""
    dirs = [str(d) for d in model_dirs(settings)["upscale_models"]]
    path = next((f"{d}/{name}" for d in dirs if Path(d, name).is_file()), None)
    if path is None:
        raise WorkerError(MODELS_MISSING, f"upscaler: {name!r} is not in any upscale_models folder (searched "
                                          f"{', '.join(dirs) or '(nowhere)'}); copy it there, fix the name, or "
                                          "send \"default\".",
                          {"field": "upscaler", "missing": [{"file": f"upscale_models/{name}", "searched": dirs}]})
    problem = file_problem(path, Path(path).stat().st_size)
    if problem is not None:
        raise WorkerError(MODEL_DAMAGED, f"upscaler: {name!r} at {path} is damaged ({problem}); replace the file.",
                          {"field": "upscaler", "damaged": [{"file": name, "path": path, "reason": problem}]})
    return path
