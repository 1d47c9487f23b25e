"""Text-to-video 14B and the TI2V 5B model executed by the real ComfyUI through handler(), on the
tiny stand-ins of their own files (T2V experts with in_dim 16; the 5B model and the full-size Wan
2.2 VAE). Every MP4 is decoded: frame count, size, fps, pixels. Jobs stay few and tiny; they share
the session's prompts, so the text encodes come from ComfyUI's cache."""
from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.comfyui.conftest import NEGATIVE, PROMPT, start_image
from tests.video import decode_result
from wan_worker.handler import handler

IMAGE = base64.b64encode(start_image()).decode()


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"prompt": PROMPT, "negative_prompt": NEGATIVE, "width": 128, "height": 128,
                                    "length": 5, "seed": 7, **fields}}


def test_text_to_video_14b_runs_the_t2v_experts(real_env):
    result = handler(job("real-t2v", fps=12))
    assert (result.get("model"), result.get("graph")) == ("14b", "t2v"), result
    video = decode_result(result)
    assert (len(video.frames), video.width, video.height, video.fps) == (5, 128, 128, 12)
    assert not video.is_blank()
    other = decode_result(handler(job("real-t2v-seed", fps=12, seed=8)))
    assert not video.same_frames(other)


def test_the_5b_model_without_an_image(real_env):
    result = handler(job("real-5b-t2v", model="5b", steps=4))
    assert (result.get("model"), result.get("graph")) == ("5b", "ti2v5b"), result
    assert result["fps"] == 24  # the official 5B template's
    video = decode_result(result)
    assert (len(video.frames), video.width, video.height, video.fps) == (5, 128, 128, 24)
    assert not video.is_blank()


def test_the_5b_model_with_an_image_starts_from_it(real_env):
    with_image = decode_result(handler(job("real-5b-i2v", model="5b", steps=4, image=IMAGE)))
    without = decode_result(handler(job("real-5b-t2v-2", model="5b", steps=4)))
    assert (len(with_image.frames), with_image.width, with_image.height) == (5, 128, 128)
    assert not with_image.is_blank()
    assert not with_image.same_frames(without)  # the image's latent conditions the first frame


@pytest.mark.parametrize("fields, field", [({"model": "5b", "switch_step": 2}, "switch_step"),
                                           ({"model": "5b", "width": 144}, "width")])
def test_refused_fields_never_reach_comfyui(real_env, real_comfy, fields, field):
    before = real_comfy.prompts_received()
    result = handler(job("real-refused", **fields))
    assert result["error_code"] == "INVALID_INPUT" and f"`{field}`" in result["error"]
    assert real_comfy.prompts_received() == before
