"""Issue 25 on the stand-in tier: frame interpolation (RIFE) and upscaling as job fields.

The request rules (each bad value named), the block every family's graph gains in front of its
Create Video (valid for the real node schemas, the stand-in checks each queued graph), the result's
frames, fps and size, the weights checked before queueing (MODELS_MISSING naming the file and the
command), a delivery certain to fail refused up front, and the progress phases. The frames
themselves are checked on the real tier (tests/comfyui/test_real_postprocess.py).
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.avgen import audio_file, video_file
from tests.conftest import png_b64, sent_graph
from wan_worker.errors import INVALID_INPUT, MODELS_MISSING, OUTPUT_TOO_LARGE, WorkerError
from wan_worker.handler import handler
from wan_worker.models import ESRGAN_X2, RIFE49
from wan_worker.postprocess import INTERPOLATE, RESIZE, RIFE_MODEL, UPSCALE, UPSCALE_MODEL, upscaler_scale
from wan_worker.request import parse_input

IMAGE = png_b64(96, 96)
PROMPT = "a cat turns its head"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(**fields: Any) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse_input({"prompt": PROMPT, "image": IMAGE, **fields}, max_timeout_s=900)
    assert info.value.code == INVALID_INPUT
    return info.value


@pytest.mark.parametrize("fields, field, words", [
    ({"interpolator_model": "film"}, "interpolator_model", "send \"rife\""),
    ({"interpolator_model": "dain"}, "interpolator_model", "'rife', 'none' or 'film'"),
    ({"interpolator_model": "none", "num_interpolated_frames": 1}, "num_interpolated_frames", "is \"none\""),
    ({"num_interpolated_frames": 5}, "num_interpolated_frames", "less than or equal to 4"),
    ({"num_interpolated_frames": -1}, "num_interpolated_frames", "greater than or equal to 0"),
    ({"adjust_fps_for_interpolation": False}, "adjust_fps_for_interpolation", "does not ask for"),
    ({"upscaler": "../up.pth"}, "upscaler", "no '..'"),
    ({"upscaler": "/models/up.pth"}, "upscaler", "no absolute path"),
    ({"upscaler": "up.bin"}, "upscaler", ".pth, .pt, .safetensors"),
    ({"upscale_factor": 1.0}, "upscale_factor", "greater than 1"),
    ({"upscale_factor": 5}, "upscale_factor", "less than or equal to 4"),
    ({"audio": b64(audio_file("WAV", 1.0)), "num_interpolated_frames": 1, "adjust_fps_for_interpolation": False},
     "adjust_fps_for_interpolation", "drift from the sound"),
])
def test_bad_values_are_refused_by_name(fields, field, words):
    error = refused(**fields)
    assert error.details["errors"][0]["field"] == field
    assert f"`{field}`" in error.message and words in error.message, error.message


def test_fal_names_pick_the_factor():
    def factor(**fields: Any) -> int:
        return parse_input({"prompt": PROMPT, **fields}, max_timeout_s=900).interpolation_factor

    assert factor() == 1 and factor(num_interpolated_frames=0) == 1 and factor(interpolator_model="none") == 1
    assert factor(interpolator_model="rife") == 2  # fal's rife default: one frame between
    assert factor(num_interpolated_frames=1) == 2 and factor(num_interpolated_frames=3, interpolator_model="rife") == 4


def test_the_upscalers_scale_comes_from_its_name():
    assert upscaler_scale(ESRGAN_X2.name) == 2 and upscaler_scale("4x-UltraSharp.pth") == 4
    assert upscaler_scale("sub/RealESRGAN_x4plus_anime_6B.pth") == 4 and upscaler_scale("4x_NMKD-Siax_200k.pth") == 4
    assert upscaler_scale("my_sharpener.pth") is None and upscaler_scale("model_x16.pth") is None


@pytest.fixture
def fake(scanning_fake):
    """The stand-in listing the files on the test volume (the post-processing set's too)."""
    return scanning_fake


def block(g: dict[str, Any]) -> dict[str, Any]:
    """Create Video's frames, followed back through the post-processing block to where they came from."""
    create = next(n for n in g.values() if n["_meta"]["title"] == "Create Video")
    chain, source = [], create["inputs"]["images"][0]
    while source in (INTERPOLATE, RESIZE, UPSCALE):
        chain.append(source)
        node = g[source]
        source = (node["inputs"].get("images") or node["inputs"]["image"])[0]
    return {"chain": chain, "source": g[source]["_meta"]["title"], "fps": create["inputs"]["fps"]}


FAMILIES = {  # each family's job, and the node its frames came from before the block
    "i2v": ({"image": IMAGE}, "Decode"),
    "flf2v": ({"image": IMAGE, "end_image": png_b64(96, 96, (10, 200, 10))}, "Decode"),
    "t2v": ({}, "Decode"),
    "ti2v5b": ({"model": "5b", "image": IMAGE}, "Decode"),
    "s2v": ({"image": IMAGE, "audio": b64(audio_file("WAV", 2.0))}, "Cut To Audio"),
    "animate": ({"image": IMAGE, "video": b64(video_file("MP4", 16)), "pose_video": b64(video_file("MP4", 16)),
                 "face_video": b64(video_file("MP4", 16))}, "Cut To Video"),
    "segments": ({"image": IMAGE, "segments": [{"prompt": "a", "length": 9}, {"prompt": "b", "length": 9}]}, "Decode"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gains_the_block_before_create_video(worker_env, fake, family):
    """One mechanism for every graph: the stand-in validated each queued graph against the real schemas."""
    fields, source = FAMILIES[family]
    result = handler({"id": f"post-{family}", "input": {"prompt": PROMPT, "seed": 3, **fields,
                                                           "num_interpolated_frames": 1, "upscaler": "default"}})
    assert "error" not in result, result
    g = sent_graph(fake)
    found = block(g)
    assert found["chain"] == [INTERPOLATE, UPSCALE] and found["source"] == source, found
    rendered = result["rendered"]
    assert found["fps"] == rendered["fps"] * 2 == result["fps"]
    assert result["length"] == (rendered["length"] - 1) * 2 + 1
    assert (result["width"], result["height"]) == (rendered["width"] * 2, rendered["height"] * 2)
    assert g[RIFE_MODEL]["inputs"]["model_name"] == RIFE49.name and g[INTERPOLATE]["inputs"]["multiplier"] == 2
    assert g[UPSCALE_MODEL]["inputs"]["model_name"] == ESRGAN_X2.name and RESIZE not in g  # the model's own 2x
    assert result["interpolation"]["factor"] == 2 and result["upscale"]["file"] == ESRGAN_X2.name


def test_without_the_fields_the_graph_is_as_before(worker_env, fake):
    result = handler({"id": "plain", "input": {"prompt": PROMPT, "image": IMAGE, "seed": 3}})
    assert "error" not in result and "rendered" not in result
    g = sent_graph(fake)
    assert not {INTERPOLATE, UPSCALE, UPSCALE_MODEL, RIFE_MODEL, RESIZE} & set(g)
    assert block(g) == {"chain": [], "source": "Decode", "fps": 16.0}


def test_a_factor_the_model_does_not_have_is_reached_by_resizing(worker_env, fake):
    result = handler({"id": "post-1.5", "input": {"prompt": PROMPT, "image": IMAGE, "width": 320, "height": 176,
                                                   "length": 9, "upscale_factor": 1.5}})
    assert "error" not in result, result
    g = sent_graph(fake)
    assert block(g)["chain"] == [RESIZE, UPSCALE]
    assert (g[RESIZE]["inputs"]["width"], g[RESIZE]["inputs"]["height"]) == (480, 264) == (result["width"],
                                                                                          result["height"])
    assert result["length"] == 9 and result["fps"] == 16.0  # no interpolation: frames and fps as rendered


def test_interpolation_alone_keeps_the_fps_when_asked(worker_env, fake):
    result = handler({"id": "slow", "input": {"prompt": PROMPT, "image": IMAGE, "length": 9,
                                              "interpolator_model": "rife",
                                              "num_interpolated_frames": 3, "adjust_fps_for_interpolation": False}})
    assert "error" not in result, result
    assert block(sent_graph(fake)) == {"chain": [INTERPOLATE], "source": "Decode", "fps": 16.0}
    assert result["length"] == 33 and result["fps"] == 16.0 and result["duration_s"] == round(33 / 16, 3)


@pytest.mark.parametrize("fields, field, words", [
    ({"width": 1280, "height": 720, "upscaler": "default"}, "upscaler", "2560x1440, more than the 1920"),
    ({"width": 1280, "height": 720, "upscale_factor": 2}, "upscale_factor", "at most 1.5"),
    ({"upscaler": "sharpen.pth"}, "upscale_factor", "cannot be told from its name"),
])
def test_sizes_past_max_side_are_refused_before_queueing(worker_env, fake, fields, field, words):
    result = handler({"id": "big", "input": {"prompt": PROMPT, "image": IMAGE, **fields}})
    assert result["error_code"] == INVALID_INPUT, result
    assert f"`{field}`" in result["error"] and words in result["error"], result
    assert not [r for r in fake.requests if r.path == "/prompt"]


def test_missing_weights_name_the_file_and_the_command(worker_env, fake, volume: Path):
    (volume / RIFE49.folder / RIFE49.name).unlink()
    result = handler({"id": "no-rife", "input": {"prompt": PROMPT, "image": IMAGE, "num_interpolated_frames": 1}})
    assert result["error_code"] == MODELS_MISSING, result
    assert "frame_interpolation/rife49.pth" in result["error"] and "--set postprocess" in result["error"]
    assert not [r for r in fake.requests if r.path == "/prompt"]
    # a job without interpolation does not need the file
    assert "error" not in handler({"id": "upscale-only", "input": {"prompt": PROMPT, "image": IMAGE,
                                                                   "upscaler": "default", "length": 9}})


def test_a_dry_run_reports_the_blocks_files(worker_env, fake, volume: Path):
    (volume / ESRGAN_X2.folder / ESRGAN_X2.name).unlink()
    result = handler({"id": "dry", "input": {"prompt": PROMPT, "image": IMAGE, "upscaler": "default", "dry_run": True}})
    checks = result["checks"]["postprocess_models"]
    assert checks["set"] == "postprocess" and checks["missing"] == ["upscale_models/RealESRGAN_x2plus.pth"]


def test_a_delivery_certain_to_fail_is_refused_up_front(worker_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_INLINE_OUTPUT_MB", "0.5")
    from wan_worker import handler as handler_module

    handler_module.worker.cache_clear()
    result = handler({"id": "huge", "input": {"prompt": PROMPT, "image": IMAGE, "width": 832, "height": 480,
                                              "length": 241, "num_interpolated_frames": 4, "upscaler": "default"}})
    assert result["error_code"] == OUTPUT_TOO_LARGE and "1664x960 with 1201 frames" in result["error"], result
    assert "BUCKET_" in result["error"] and not [r for r in fake.requests if r.path == "/prompt"]
    small = handler({"id": "small", "input": {"prompt": PROMPT, "image": IMAGE, "length": 9,
                                              "num_interpolated_frames": 1}})
    assert "error" not in small, small


def test_progress_names_the_new_phases(worker_env, fake):
    from wan_worker.handler import Timings, worker
    from wan_worker.jobs import plan
    from wan_worker.progress import BANDS, Progress

    req = parse_input({"prompt": PROMPT, "image": IMAGE, "num_interpolated_frames": 1, "upscaler": "default"},
                      max_timeout_s=900)
    state = worker()
    p = plan(state.settings, state.workflows, "j", req, Progress(lambda _u: None), Timings())
    assert p.phases[UPSCALE] == "upscaling" and p.phases[INTERPOLATE] == "interpolating"
    assert BANDS["decoding"][1] <= BANDS["upscaling"][0] < BANDS["interpolating"][0] < BANDS["encoding"][0]



def test_an_upscaler_of_the_volume_is_found_or_named(worker_env, fake, volume: Path):
    from tests.fakehub import torch_zip_bytes

    small = {"prompt": PROMPT, "image": IMAGE, "width": 256, "height": 144, "length": 9}
    result = handler({"id": "mine-missing", "input": {**small, "upscaler": "4x-Mine.pth"}})
    assert result["error_code"] == MODELS_MISSING and "'4x-Mine.pth' is not in any upscale_models" in result["error"]
    (volume / "upscale_models" / "4x-Mine.pth").write_bytes(b"junk" * 40)
    result = handler({"id": "mine-junk", "input": {**small, "upscaler": "4x-Mine.pth"}})
    assert result["error_code"] == "MODEL_DAMAGED" and "neither a torch zip" in result["error"], result
    (volume / "upscale_models" / "4x-Mine.pth").write_bytes(torch_zip_bytes("mine", 16))
    result = handler({"id": "mine", "input": {**small, "upscaler": "4x-Mine.pth"}})
    assert "error" not in result and (result["width"], result["height"]) == (1024, 576), result
    assert sent_graph(fake)[UPSCALE_MODEL]["inputs"]["model_name"] == "4x-Mine.pth"
