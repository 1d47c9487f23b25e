"""The bundled Wan2.2 I2V graph executed by the real ComfyUI through handler(): every MP4 is
decoded and looked at (frame count, size, fps, pixels), never trusted for "success" alone."""
from __future__ import annotations

import ast
import base64
import functools
import shutil
from typing import Any

import pytest
import requests

from tests.comfyui.conftest import NEGATIVE, PROMPT, RealComfy, start_image
from tests.video import decode_result
from wan_worker import background
from wan_worker import handler as handler_module
from wan_worker.handler import handler
from wan_worker.models import MANIFEST, MODEL_SETS
from wan_worker.progress import Progress

IMAGE = base64.b64encode(start_image()).decode()
# UMT5-XXL's big matrices (5.7 B parameters): not stored by tests/tinywan, zero memory in ComfyUI.
BIG_T5_MATRICES = (".SelfAttention.q.weight", ".SelfAttention.k.weight", ".SelfAttention.v.weight",
                   ".SelfAttention.o.weight", ".DenseReluDense.wi_0.weight", ".DenseReluDense.wi_1.weight",
                   ".DenseReluDense.wo.weight")


def i2v(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"image": IMAGE, "prompt": PROMPT, "negative_prompt": NEGATIVE,
                                    "width": 128, "height": 128, "length": 5, "seed": 7, **fields}}


def test_i2v_makes_the_requested_video(real_env, real_comfy: RealComfy):
    files_before = real_comfy.files()
    result = handler(i2v("real-basic", fps=12))
    video = decode_result(result)
    assert len(video.frames) == 5 == result["length"]
    assert (video.width, video.height) == (128, 128) == (result["width"], result["height"])
    assert video.fps == 12 == result["fps"]
    assert video.codec == "h264"
    assert not video.is_blank()
    assert result["seed"] == 7 and result["duration_s"] == pytest.approx(5 / 12, abs=1e-3)
    assert result["timings_ms"]["execute"] > 0
    assert real_comfy.files() == files_before  # ComfyUI's folders are left as they were
    assert background.wait_idle(10)
    assert result["prompt_id"] not in real_comfy.history()  # and so is its history


def test_model_load_is_measured_up_to_the_first_sampling_step(real_env, real_comfy: RealComfy):
    """A seed no other test uses, so ComfyUI samples anew and reports steps: `model_load` is the
    time from queueing to the first of them, inside `execute`; `warm` says whether the graph had run."""
    result = handler(i2v("real-model-load", seed=424242))
    timings = result["timings_ms"]
    assert 0 < timings["model_load"] < timings["execute"], timings
    assert isinstance(result["warm"], bool)


def test_comfyui_loads_the_tiny_models_like_the_real_ones(real_env, real_comfy: RealComfy):
    """No key of ours is missing or unused: every LoRA key found its layer, the experts and the VAE
    are complete; the text encoder misses only the large matrices tinywan leaves out on purpose."""
    decode_result(handler(i2v("real-keys")))
    log = real_comfy.log()
    for warning in ("lora key not loaded", "unet missing", "unet unexpected", "Missing VAE keys"):
        assert warning not in log, warning
    missing = [ast.literal_eval(line.split(":", 1)[1].strip())
               for line in log.splitlines() if line.startswith("clip missing:")]
    assert missing, "ComfyUI reports the deliberately absent text encoder matrices"
    left_out = {key for keys in missing for key in keys}
    assert all(key == "shared.weight" or key.endswith(BIG_T5_MATRICES) for key in left_out), left_out
    assert not any("layer_norm" in key or "relative_attention_bias" in key for key in left_out)


def test_a_bigger_non_square_video_follows_the_request(real_env):
    video = decode_result(handler(i2v("real-shape", width=192, height=128, length=9, fps=16)))
    assert (len(video.frames), video.width, video.height, video.fps) == (9, 192, 128, 16)
    assert not video.is_blank()


def test_the_seed_decides_the_frames(real_env):
    first = decode_result(handler(i2v("real-seed-a", seed=1234)))
    other = decode_result(handler(i2v("real-seed-b", seed=1235)))
    again = decode_result(handler(i2v("real-seed-a2", seed=1234)))  # recomputed: its image name differs
    assert first.same_frames(again)
    assert not first.same_frames(other) and first.mean_abs_diff(other) > 0.5


def test_a_random_seed_is_returned_and_reproduces_the_video(real_env):
    job = i2v("real-random")
    del job["input"]["seed"]
    result = handler(job)
    seed = result["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**64
    assert decode_result(result).same_frames(decode_result(handler(i2v("real-random-2", seed=seed))))


def test_quality_mode_runs_the_plain_experts(real_env):
    fast = decode_result(handler(i2v("real-fast", seed=99)))
    result = handler(i2v("real-quality", seed=99, fast=False, steps=8))
    quality = decode_result(result)
    assert (len(quality.frames), quality.width, quality.height) == (5, 128, 128)
    assert not quality.is_blank()
    assert not quality.same_frames(fast)  # LightX2V LoRAs off, another cfg, shift and step count


@pytest.fixture
def updates(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every progress update of the next job, unthrottled, as the handler would send them."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, job: sent.append)
    return sent


def test_progress_follows_the_real_events_and_switch_step_hands_over(real_env, updates):
    result = handler(i2v("real-progress", steps=6, switch_step=2))
    assert not decode_result(result).is_blank()
    phases = list(dict.fromkeys(u["phase"] for u in updates))
    assert phases == ["loading_models", "sampling_high", "sampling_low", "decoding", "encoding", "uploading"]
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents) and percents[-1] == 98
    # ComfyUI's own progress messages: the high-noise expert ran steps 0-2, the low-noise one 2-6.
    steps = {u["phase"]: (u["step"], u["steps"]) for u in updates if "step" in u}
    assert steps == {"sampling_high": (2, 2), "sampling_low": (4, 4)}


def test_another_switch_step_gives_other_frames(real_env):
    early = decode_result(handler(i2v("real-switch-1", steps=6, switch_step=1)))
    late = decode_result(handler(i2v("real-switch-5", steps=6, switch_step=5)))
    assert not early.same_frames(late)


def test_the_models_check_and_comfyui_agree(real_env, real_comfy: RealComfy):
    """Both find every file in the same place; a file taken away is MODELS_MISSING for the
    worker (before anything is queued) and gone from ComfyUI's own list too. An I2V job checks the
    six files of its own set; the dry run reports every set complete."""
    comfy_lists = {m.folder: requests.get(f"{real_comfy.url}/models/{m.folder}", timeout=10).json()
                   for m in MANIFEST}
    assert all(m.name in comfy_lists[m.folder] for m in MANIFEST)
    dry = handler({"id": "real-dry", "input": {**i2v("x")["input"], "dry_run": True}})
    assert dry["checks"]["models"]["ok"], dry["checks"]["models"]
    assert {f["path"] for f in dry["checks"]["models"]["files"]} == {
        str(real_comfy.models / m.folder / m.name) for m in MODEL_SETS["i2v-14b"].files}
    assert all(s["complete"] for s in dry["checks"]["model_sets"].values()) and set(dry["checks"]["model_sets"]) == set(MODEL_SETS)

    vae = next(m for m in MANIFEST if m.folder == "vae")
    path = real_comfy.models / vae.folder / vae.name
    aside = path.with_name(path.name + ".aside")
    prompts_before = real_comfy.prompts_received()
    shutil.move(path, aside)
    try:
        result = handler(i2v("real-missing"))
        assert result["error_code"] == "MODELS_MISSING"
        assert vae.rel_path in result["error"] and str(real_comfy.models / "vae") in result["error"]
        assert vae.name not in requests.get(f"{real_comfy.url}/models/vae", timeout=10).json()
    finally:
        shutil.move(aside, path)
    assert real_comfy.prompts_received() == prompts_before  # nothing was queued
