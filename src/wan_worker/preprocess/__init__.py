"""Animate preprocessing: a plain driving video -> the pose, face (and, for replace, mask and
background) videos the Animate graph needs, in the worker's own process before anything is queued.

One entry point, `preprocess()`; its rooms: sessions (ONNX Runtime), detect (YOLOX-L people),
track (which person), pose (DWPose whole-body keypoints), draw (the pose frames in Wan2.2-Animate's
style), face (512x512 crops), mask (grown, blocky), geometry (letterbox), video (MP4 bytes).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import numpy as np

from ..errors import WorkerError, invalid
from .draw import draw_pose
from .face import face_frames
from .geometry import Fit
from .mask import person_mask
from .pose import Pose
from .sessions import PoseModels, default_providers, open_session, volume_models
from .video import FPS, encode_mp4

__all__ = ["PoseModels", "Preprocessed", "default_providers", "encode_mp4", "preprocess", "volume_models"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class Preprocessed:
    """What the Animate graph is given instead of client-made videos; frames are HxWx3 uint8 RGB."""

    pose: list[np.ndarray]  # width x height, the skeletons on black
    face: list[np.ndarray]  # 512 x 512
    mask: list[np.ndarray] | None  # replace: width x height, HxW uint8, 255 = the character
    background: list[np.ndarray] | None  # replace: the driving frames letterboxed to width x height
    found: int  # frames where the followed person was detected
    seconds: float  # time spent

    @property
    def frames(self) -> int:
        return len(self.pose)

    def mp4(self, which: Literal["pose", "face", "mask", "background"], fps: int = FPS) -> bytes:
        """One of the videos as MP4 bytes (H.264, `fps`)."""
        frames = getattr(self, which)
        if frames is None:
            raise ValueError(f"no {which} frames: they are made in replace mode only")
        return encode_mp4(frames, fps)

    def videos(self, fps: int = FPS) -> dict[str, bytes]:
        """MP4 bytes under the Animate job fields they stand in for: pose_video, face_video and, in
        replace mode, background_video and mask_video (the background letterboxed like the mask, so
        the two line up)."""
        kinds = ("pose", "face") + (("background", "mask") if self.mask is not None else ())
        return {f"{kind}_video": self.mp4(kind, fps) for kind in kinds}


def preprocess(frames: Iterable[np.ndarray], *, width: int, height: int,
               mode: Literal["move", "replace"] = "move", person: int | None = None,
               models: PoseModels, providers: Sequence[str] | None = None,
               progress: Progress | None = None) -> Preprocessed:
    """Detect and follow one person in `frames` (already at 16 fps), estimate the whole-body pose per
    frame, and draw the Animate inputs at width x height.

    A frame without the person reuses the last pose (frames before the first sighting: the first);
    no person in the whole video is INVALID_INPUT naming `video` (or `person` when the asked-for
    index was never reached). `progress(done, total)` is called after each frame's keypoints.
    """
    if mode not in ("move", "replace"):
        raise ValueError(f"mode must be move or replace, not {mode!r}")
    from .detect import detect  # noqa: PLC0415 - keeps the package import light
    from .pose import estimate  # noqa: PLC0415
    from .track import Follower  # noqa: PLC0415

    start = time.monotonic()
    frames = list(frames)
    if not frames:
        raise invalid("video", "has no frames; send a video with a person in it")
    providers = list(providers or default_providers())
    detector, estimator = open_session(models.detector, providers), open_session(models.pose, providers)
    follower = Follower(person or 0)
    poses: list[Pose | None] = []
    for done, frame in enumerate(frames, 1):
        box = follower.choose(detect(detector, frame))
        poses.append(estimate(estimator, frame, box) if box is not None else None)
        if progress is not None:
            progress(done, len(frames))
    found = sum(p is not None for p in poses)
    if not found:
        raise _nobody(person, follower.most_people, len(frames))
    filled = _fill(poses)
    fit = Fit.of(frames[0].shape[1], frames[0].shape[0], width, height)
    canvas_poses = [p.mapped(fit.points) for p in filled]
    # The drawing is CPU work per frame (Pillow and numpy release the GIL for most of it): threads.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pose = list(pool.map(lambda p: draw_pose(p, width, height), canvas_poses))
        face = face_frames(frames, poses, pool.map)
        mask = list(pool.map(lambda p: person_mask(p, width, height), canvas_poses)) if mode == "replace" else None
        background = list(pool.map(fit.image, frames)) if mode == "replace" else None
    result = Preprocessed(pose=pose, face=face, mask=mask, background=background, found=found,
                          seconds=time.monotonic() - start)
    log.info("preprocessed %d frames (person in %d) on %s in %.1f s", len(frames), found, providers[0],
             result.seconds)
    return result


def _fill(poses: list[Pose | None]) -> list[Pose]:
    """Each missing pose replaced by the last one seen (leading gaps by the first one seen)."""
    first = next(p for p in poses if p is not None)
    out, last = [], first
    for p in poses:
        last = p if p is not None else last
        out.append(last)
    return out


def _nobody(person: int | None, most: int, frames: int) -> WorkerError:
    if person and most:
        return invalid("person", f"{person} asks for the {_nth(person + 1)} largest person, but at most "
                                 f"{most} {'person was' if most == 1 else 'people were'} found in a frame; "
                                 f"use a `person` from 0 to {most - 1}")
    return invalid("video", f"shows no person in any of its {frames} frames; send a video where a person is "
                            "clearly visible (the whole body or the upper body)")


def _nth(n: int) -> str:
    return f"{n}{'tsnrhtdd'[(n // 10 % 10 != 1) * (n % 10 < 4) * n % 10::4]}"
