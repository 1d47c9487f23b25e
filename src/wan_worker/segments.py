"""A story told prompt by prompt in one job (`segments`): each segment starts from the last frame of
the one before, in one graph, so the models load once and one MP4 comes out.

The bundled I2V, first-last-frame, T2V and 5B graphs hold one segment block (workflow.Repeat,
unit "segment"); `drive_segments` is their `drive` hook: it resolves each segment's values (a
segment without a field takes the job's; its seed is the job's plus its index), checks the caps,
and says where each segment's frames sit in the whole video. Without `segments` the job is one
plain part and the graph is the one it always was.

Frames: segment 1 makes `length` frames; every later one starts from the frame before it (its
first frame is that frame again, dropped when the segments' latents are joined), so it adds
`length - 1`. Segment k's first frame in the video is the sum of what the ones before it added.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from .errors import invalid
from .workflow import Driven, JobContext

SEED_LIMIT = 2**64


class SegmentEntry(Protocol):
    """One entry of the job's `segments` (request.SegmentEntry)."""

    prompt: str | None
    length: int | None
    negative_prompt: str | None
    seed: int | None
    loras: list[Any] | None


class SegmentsJob(Protocol):
    """The fields of a video request the hook reads (request.VideoRequest)."""

    segments: list[Any] | None
    prompt: str | None
    negative_prompt: str | None
    length: int | None


@dataclass(frozen=True)
class Segment:
    """One segment, resolved: its own prompt, seed and length, and where its frames sit."""

    prompt: str
    negative_prompt: str | None  # None: the graph's own negative prompt
    seed: int
    length: int  # frames the segment makes (4n+1), its start frame included after the first
    first_frame: int  # index in the whole video of the first frame it adds

    @property
    def adds(self) -> int:
        return self.length if self.first_frame == 0 else self.length - 1

    def to_dict(self, number: int) -> dict[str, Any]:
        return {"segment": number, "first_frame": self.first_frame, "frames": self.adds, "length": self.length,
                "seed": self.seed}


def total_frames(lengths: Sequence[int]) -> int:
    """The whole video's frames: the first segment's, and each later one's less its start frame."""
    return lengths[0] + sum(n - 1 for n in lengths[1:]) if lengths else 0


def resolve(req: SegmentsJob, seed: int, max_segments: int, max_total_frames: int) -> tuple[Segment, ...]:
    """Each segment with the job's values where it has none, checked against the caps."""
    entries = req.segments or []
    if len(entries) > max_segments:
        raise invalid("segments", f"has {len(entries)} segments, more than this worker's limit of {max_segments} "
                                  "(MAX_SEGMENTS); tell the story in fewer parts, or raise the setting")
    out: list[Segment] = []
    first = 0
    for n, entry in enumerate(entries):
        prompt = entry.prompt if entry.prompt is not None else req.prompt
        if prompt is None:
            raise invalid(f"segments[{n}].prompt", "is required: the job has no `prompt` for it to take; give "
                                                   "the segment a prompt, or the job one")
        length = entry.length if entry.length is not None else req.length
        assert length is not None
        out.append(Segment(prompt=prompt,
                           negative_prompt=entry.negative_prompt if entry.negative_prompt is not None
                           else req.negative_prompt,
                           seed=entry.seed if entry.seed is not None else (seed + n) % SEED_LIMIT,
                           length=length, first_frame=first))
        first += out[-1].adds
    if first > max_total_frames:
        over = next(n for n, s in enumerate(out) if s.first_frame + s.adds > max_total_frames)
        raise invalid(f"segments[{over}].length", f"takes the video to {first} frames in all, more than this "
                                                  f"worker's limit of {max_total_frames} (MAX_TOTAL_FRAMES); "
                                                  "send shorter or fewer segments")
    return tuple(out)


def drive_segments(req: SegmentsJob, ctx: JobContext) -> Driven:
    """The `drive` hook of the graphs that tell a story: one plain part without `segments`."""
    if not req.segments:
        assert req.length is not None
        return Driven(length=req.length)
    segments = resolve(req, ctx.seed, ctx.settings.max_segments, ctx.settings.max_total_frames)
    first = segments[0]
    listed = [s.to_dict(n) for n, s in enumerate(segments, 1)]
    own = {n: entry.loras for n, entry in enumerate(req.segments, 1) if entry.loras is not None}
    return Driven(length=total_frames([s.length for s in segments]), parts=len(segments),
                  params={"segments": segments, "prompt": first.prompt, "negative_prompt": first.negative_prompt,
                          "seed": first.seed},
                  fields={"segments": listed}, checks={"segments": listed}, part_loras=own)
