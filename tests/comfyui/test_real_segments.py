"""A story in one job (`segments`), executed by the real ComfyUI on the tiny models: a 3-segment
I2V job and a 2-segment 5B job. Every MP4 is decoded and compared frame by frame.

ComfyUI on CPU is not bit-exact between runs (about 0.3/255 mean) and each MP4 is encoded on its
own, so "the same" frames are compared with SAME (mean absolute difference per pixel, 0-255) and
"different" must be far above it (DIFFERENT). Jobs are 128x128 (the smallest size a job may ask
for) and 2 steps, and every segment has the session's PROMPT (its text encode comes from ComfyUI's
cache).

The tiny UMT5 stand-in stores no token embeddings (2 GB at full size), so every prompt encodes
the same here: a segment's own prompt is shown to reach its own nodes only on the stand-in tier
(tests/test_segments.py); here a segment's own seed shows what changing one segment changes.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from tests.comfyui.conftest import NEGATIVE, PROMPT, start_image
from tests.video import Video, decode_result
from wan_worker.handler import handler

IMAGE = base64.b64encode(start_image()).decode()
SAME = 1.5  # per pixel, 0-255: two encodes of the same frames (CPU noise and h264 included)
DIFFERENT = 4.0  # what a changed prompt, seed or start frame must exceed


def story(job_id: str, segments: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    fields = {"image": IMAGE, "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 128, "height": 128,
              "length": 5, "seed": 7, "steps": 2, "switch_step": 1, "segments": segments, **fields}
    return {"id": job_id, "input": {k: v for k, v in fields.items() if v is not None}}


def diff(a: list[np.ndarray], b: list[np.ndarray], block: int = 1) -> float:
    """Mean absolute difference per pixel (0-255), of `block`x`block` means where block > 1."""
    assert len(a) == len(b) and a
    x, y = np.stack(a).astype(np.float32), np.stack(b).astype(np.float32)
    if block > 1:
        n, h, w, c = x.shape
        x, y = (v.reshape(n, h // block, block, w // block, block, c).mean(axis=(2, 4)) for v in (x, y))
    return float(np.abs(x - y).mean())


# The tiny 5B model's frames are close to noise, which h264 quantises differently by what follows
# (the encoder picks frame types by looking ahead): the same frames measured 2-5 per pixel apart in
# a 5-frame and a 13-frame MP4, 0.4-0.8 as 16x16-pixel means; other frames 4.4-12 and more.
BLOCK_5B = 16


def frames_of(video: Video, result: dict[str, Any], segment: int) -> list[np.ndarray]:
    seg = result["segments"][segment - 1]
    return video.frames[seg["first_frame"]:seg["first_frame"] + seg["frames"]]


@pytest.fixture
def three_parts(real_env) -> tuple[dict[str, Any], Video]:
    """Segments of 5, 9 and 5 frames: 5 + 8 + 4 = 17 frames in one MP4 (run once, for the module)."""
    if not STORY:
        result = handler(story("real-story", [{}, {"length": 9}, {}], return_last_frame=True))
        STORY.append((result, decode_result(result)))
    return STORY[0]


STORY: list[tuple[dict[str, Any], Video]] = []


def test_three_segments_make_one_video_with_each_boundary_frame_once(three_parts):
    result, video = three_parts
    assert result["graph"] == "i2v" and result["length"] == 17 == len(video.frames)
    assert [(s["first_frame"], s["frames"], s["seed"]) for s in result["segments"]] == [(0, 5, 7), (5, 8, 8),
                                                                                      (13, 4, 9)]
    assert (video.width, video.height) == (128, 128) and not video.is_blank()
    assert "last_frame" in result  # the whole video's last frame
    # segment 1 is the plain graph's video: the same job without segments gives its frames
    plain = decode_result(handler(story("real-story-plain", None)))
    assert len(plain.frames) == 5 and diff(plain.frames, frames_of(video, result, 1)) < SAME
    # each segment is a video of its own, not the first one repeated
    assert diff(frames_of(video, result, 1)[-4:], frames_of(video, result, 2)[:4]) > DIFFERENT


def test_a_later_segment_starts_from_the_frame_before_it(three_parts):
    """Segment 2 with the same prompt and seed, after another segment 1: its frames change, because
    it starts from another last frame."""
    result, video = three_parts
    other = handler(story("real-story-other-start", [{"seed": 70}, {"length": 9, "seed": 8}]))
    moved = decode_result(other)
    assert diff(frames_of(moved, other, 1), frames_of(video, result, 1)) > DIFFERENT
    assert diff(frames_of(moved, other, 2), frames_of(video, result, 2)) > DIFFERENT


def test_changing_segment_3_leaves_segments_1_and_2_as_they_were(three_parts):
    result, video = three_parts
    changed = handler(story("real-story-changed", [{}, {"length": 9}, {"seed": 90}]))
    again = decode_result(changed)
    assert len(again.frames) == 17 and changed["segments"][2]["seed"] == 90
    kept = diff(again.frames[:13], video.frames[:13])
    moved = diff(again.frames[13:], video.frames[13:])
    assert kept < SAME and moved > DIFFERENT, (kept, moved)


def test_two_5b_segments(real_env):
    result = handler(story("real-story-5b", [{}, {"length": 9}], model="5b", steps=3, switch_step=None))
    video = decode_result(result)
    assert result["graph"] == "ti2v5b" and result["fps"] == 24
    assert result["length"] == 5 + 8 == len(video.frames) and not video.is_blank()
    plain = decode_result(handler(story("real-story-5b-plain", None, model="5b", steps=3, switch_step=None)))
    assert diff(plain.frames, frames_of(video, result, 1), BLOCK_5B) < SAME
    assert diff(frames_of(video, result, 1)[-4:], frames_of(video, result, 2)[:4], BLOCK_5B) > DIFFERENT


def test_two_t2v_segments_hold_the_start_frame(real_env):
    """The T2V experts take no image: a later segment's first latent frame is held at its start
    frame's (a noise mask). It executes, and the second segment continues the first."""
    result = handler(story("real-story-t2v", [{}, {"length": 9}], image=None))
    video = decode_result(result)
    assert result["graph"] == "t2v" and result["length"] == 5 + 8 == len(video.frames) and not video.is_blank()
    plain = decode_result(handler(story("real-story-t2v-plain", None, image=None)))
    assert diff(plain.frames, frames_of(video, result, 1)) < SAME
    assert diff(frames_of(video, result, 1)[-4:], frames_of(video, result, 2)[:4]) > DIFFERENT
