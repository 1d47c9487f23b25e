"""Issue 15 on the stand-in tier: Animate (a character image moved by a driving video).

Request rules and mode/input combinations, the window arithmetic (the driving video's length at
16 fps decides frames and windows), bad videos refused before anything is uploaded, the graph a job
builds for 1..N windows in both modes (every link, valid for the real node schemas), jobs end to end
against the stand-in ComfyUI, resampling to 16 fps, progress per window. Every video is a real one
made with PyAV (tests/avgen.py).
"""
from __future__ import annotations

import base64
import functools
import io
import json
from typing import Any

import av
import pytest

from tests.avgen import audio_file, video_file
from tests.conftest import FIXTURES, listing, png_b64, sent_graph
from tests.fakecomfy.validate import validate_prompt
from wan_worker.avmedia import probe, resample_video
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.graphs import ANIMATE, I2V, TI2V5B, VideoParams, animate_timing, window_frames
from wan_worker.handler import handler
from wan_worker.models import MODEL_SETS, PREPROCESS_FILES
from wan_worker.request import parse_input
from wan_worker.settings import load_settings
from wan_worker.workflow import copy_id, load_workflow

PROMPT = "the character dances in the room"
IMAGE = png_b64(96, 160)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@functools.lru_cache(maxsize=None)
def clip(frames: int = 16, fps: int = 16, fmt: str = "MP4", audio: float | None = None) -> str:
    return b64(video_file(fmt, frames=frames, fps=fps, audio_seconds=audio))


def move(**fields: Any) -> dict[str, Any]:
    base = {"prompt": PROMPT, "image": IMAGE, "video": clip(), "pose_video": clip(), "face_video": clip()}
    return {**base, **fields}


def replace_mode(**fields: Any) -> dict[str, Any]:
    return move(**{"mode": "replace", "background_video": clip(), "mask_video": clip(), **fields})


def parse(raw: dict[str, Any]):
    return parse_input(raw, max_timeout_s=900)


def refused(raw: dict[str, Any]) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse(raw)
    assert info.value.code == INVALID_INPUT
    return info.value


@pytest.fixture(scope="module")
def wf():
    return load_workflow(ANIMATE, load_settings({}).workflows_path)


# ---------------------------------------------------------------- request rules


def test_video_picks_animate_with_the_templates_defaults():
    req = parse(move())
    assert req.spec is ANIMATE and req.spec.model_set == "animate-14b" and req.mode == "move"
    assert (req.steps, req.cfg, req.shift, req.sampler, req.scheduler, req.fps) == (6, 1.0, 8.0, "euler", "simple", 16)
    assert parse(move(fast=False)).steps == 20 and parse(move(fast=False)).effective_lora_strength == 0.0


@pytest.mark.parametrize("raw, field, words", [
    (move(image=None), "image", "required for Animate"),
    (move(length=81), "length", "follows the driving video"),
    (move(fps=24), "fps", "must be 16"),
    (move(end_image=png_b64()), "end_image", "remove it"),
    (move(audio=b64(audio_file())), "audio", "driving video's own sound"),
    (move(switch_step=2), "switch_step", "one model"),
    (move(background_video=clip()), "background_video", "replace"),
    (move(mask_video=clip()), "mask_video", "replace"),
    (move(relight=True), "relight", "replace"),
    (move(mode="swap"), "mode", "move"),
    (move(model="5b"), "video", "14b"),
    (move(loras=[{"high": "a.safetensors"}]), "loras[0]", "needs `name`"),
    (move(aspect_ratio="16:9"), "aspect_ratio", "image"),
])
def test_fields_animate_cannot_use_are_refused_by_name(raw, field, words):
    raw = {k: v for k, v in raw.items() if v is not None}
    err = refused(raw)
    assert f"`{field}`" in err.message and words in err.message, err.message


@pytest.mark.parametrize("field", ["mode", "pose_video", "face_video", "background_video", "mask_video", "relight"])
def test_animate_fields_need_video(field):
    raw = {"prompt": PROMPT, "image": IMAGE, field: "replace" if field == "mode" else True if field == "relight"
           else clip()}
    err = refused(raw)
    assert f"`{field}`" in err.message and "needs `video`" in err.message
    assert I2V.refuses[field] == TI2V5B.refuses[field]


def test_size_follows_the_character_image():
    from wan_worker.request import resolve_size

    req = parse(move())
    assert resolve_size(req, 96, 160) == (496, 816)  # portrait at about 832x480's area, sides /16
    assert resolve_size(parse(move(width=256, height=128)), 96, 160) == (256, 128)


# ---------------------------------------------------------------- window arithmetic


def test_a_window_is_77_frames_and_each_more_adds_72(wf):
    assert window_frames(wf) == (77, 72)


@pytest.mark.parametrize("seconds, frames, windows", [
    (0.05, 1, 1),
    (1.0, 16, 1),
    (77 / 16, 77, 1),
    (78 / 16, 78, 2),
    (149 / 16, 149, 2),
    (150 / 16, 150, 3),
    (30.0, 480, 7),  # MAX_VIDEO_S's default
])
def test_frames_follow_the_video_in_windows(wf, seconds, frames, windows):
    assert animate_timing(wf, seconds) == (frames, windows)


def test_more_frames_than_one_video_can_hold_is_an_error(wf):
    with pytest.raises(ValueError, match="4096"):
        animate_timing(wf, 300.0)


# ---------------------------------------------------------------- the graph


def params(**over: Any) -> VideoParams:
    base = dict(image_name="wan_j.png", prompt="dance", negative_prompt=None, seed=42, width=320, height=256,
                length=150, fps=16.0, steps=6, cfg=1.0, shift=8.0, lora_strength=0.7, switch_step=3,
                sampler="euler", scheduler="simple", filename_prefix="wan_j", parts=3, mode="move",
                video_names={"Driving Video": "wan_j_video.mp4", "Pose Video": "wan_j_pose.mp4",
                             "Face Video": "wan_j_face.mp4"})
    return VideoParams(**{**base, **over})


REPLACE_NAMES = {"Pose Video": "wan_j_pose.mp4", "Face Video": "wan_j_face.mp4",
                 "Background Video": "wan_j_background.mp4", "Mask Video": "wan_j_mask.mp4"}


@pytest.fixture(scope="module")
def object_info():
    return json.loads((FIXTURES / "object_info.json").read_text())


def ids(wf, role: str, parts: int) -> list[str]:
    node = wf.roles[role]
    return [node] + [copy_id(node, k) for k in range(3, parts + 1)]


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["move", "replace"])
def test_the_graph_for_n_windows_is_valid_and_chained(wf, object_info, tmp_path, parts, mode):
    names = params().video_names if mode == "move" else REPLACE_NAMES
    for name in ["wan_j.png", *names.values()]:
        (tmp_path / name).write_bytes(b"")
    g = wf.build(params(parts=parts, mode=mode, video_names=names, relight=mode == "replace"))
    ok, body = validate_prompt(g, listing(object_info, "animate-14b"), tmp_path)
    assert ok, body
    r = wf.roles
    samplers = [n for n in g.values() if n["class_type"] == "KSampler"]
    assert len(samplers) == parts
    assert all((s["inputs"]["seed"], s["inputs"]["steps"], s["inputs"]["sampler_name"]) == (42, 6, "euler")
               for s in samplers)
    animates = [n for n in g.values() if n["class_type"] == "WanAnimateToVideo"]
    assert len(animates) == parts
    assert all((a["inputs"]["width"], a["inputs"]["height"], a["inputs"]["length"]) == (320, 256, 77) for a in animates)
    assert all(("background_video" in a["inputs"]) == ("character_mask" in a["inputs"]) == (mode == "replace")
               for a in animates)
    # the chain: window k continues from window k-1's images and its frame offset
    images = [r["Images"]] + ids(wf, "Extend Images", parts)[: parts - 1]
    animate = [r["Animate"]] + ids(wf, "Extend Animate", parts)[: parts - 1]
    for k in range(2, parts + 1):
        ext = g[animate[k - 1]]["inputs"]
        assert ext["continue_motion"] == [images[k - 2], 0] and ext["video_frame_offset"] == [animate[k - 2], 5]
        batch = g[images[k - 1]]["inputs"]
        assert batch["image1"] == [images[k - 2], 0]
    cut = wf.inputs(g, "Cut To Video")
    assert (cut["image"], cut["batch_index"], cut["length"]) == ([images[-1], 0], 0, 150)
    assert wf.inputs(g, "Create Video")["fps"] == 16.0
    assert ("audio" in wf.inputs(g, "Create Video")) == (mode == "move")  # the move params carry a sound track
    assert wf.inputs(g, "Relight LoRA")["strength_model"] == (1.0 if mode == "replace" else 0.0)
    assert wf.inputs(g, "LoRA")["strength_model"] == 0.7
    assert wf.inputs(g, "Character Image")["image"] == "wan_j.png"
    for role, name in names.items():
        assert wf.inputs(g, role)["file"] == name
    # the set's other files are the preprocessing's ONNX models: the worker loads them, not the graph
    assert wf.model_names() == MODEL_SETS["animate-14b"].names - {m.name for m in PREPROCESS_FILES}


def test_the_graph_file_opens_as_a_two_window_job(wf):
    g = wf.build(params(parts=2, mode="replace", video_names=REPLACE_NAMES))
    assert set(g) == set(wf.graph) - {wf.roles["Driving Video"], wf.roles["Driving Components"]}
    assert wf.default("Model", "unet_name") == "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"


def test_progress_has_a_sampling_phase_per_window(wf):
    phases = [p for p in wf.phases(3).values() if not isinstance(p, str) and p.name == "sampling"]
    assert sorted((p.part, p.parts, p.unit) for p in phases) == [(1, 3, "window"), (2, 3, "window"), (3, 3, "window")]


# ---------------------------------------------------------------- resampling


def frame_times(data: bytes) -> tuple[int, float]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return sum(1 for p in c.demux(s) if p.size), float(s.average_rate)


def test_a_30fps_video_is_resampled_to_16fps_frames():
    found = probe(video_file("MP4", frames=60, fps=30), "pose_video", "video")
    out = resample_video(found, 16, 32)
    assert frame_times(out) == (32, 16.0)
    assert probe(out, "pose_video", "video").duration_s == pytest.approx(2.0)


# ---------------------------------------------------------------- jobs against the stand-in


@pytest.fixture
def fake(scanning_fake):
    return scanning_fake


def job(raw: dict[str, Any], job_id: str = "animate-1") -> dict[str, Any]:
    return {"id": job_id, "input": {"seed": 5, **raw}}


def loaded(g: dict) -> dict[str, str]:
    return {n["_meta"]["title"]: n["inputs"]["file"] for n in g.values() if n["class_type"] == "LoadVideo"}


def test_move_job_end_to_end(worker_env, fake):
    result = handler(job(move(video=clip(40, 16, audio=2.5), pose_video=clip(40), face_video=clip(40))))
    assert "error" not in result, result
    assert (result["graph"], result["mode"], result["fps"], result["windows"], result["frames"], result["length"],
            result["audio"]) == ("animate", "move", 16.0, 1, 40, 40, True)
    assert (result["width"], result["height"]) == (496, 816)
    g = sent_graph(fake)
    assert set(loaded(g)) == {"Driving Video", "Pose Video", "Face Video"}
    assert sum(n["class_type"] == "KSampler" for n in g.values()) == 1
    assert not (fake.input_dir.exists() and list(fake.input_dir.iterdir()))  # cleaned up after the job


def test_replace_job_with_two_windows_and_a_silent_driver(worker_env, fake):
    long = clip(100, 16)
    result = handler(job(replace_mode(video=long, pose_video=long, face_video=long, background_video=long,
                                      mask_video=long)))
    assert "error" not in result, result
    assert (result["mode"], result["windows"], result["frames"], result["audio"], result["relight"]) == \
        ("replace", 2, 100, False, True)
    g = sent_graph(fake)
    assert set(loaded(g)) == {"Pose Video", "Face Video", "Background Video", "Mask Video"}
    assert not [n for n in g.values() if n["class_type"] == "CreateVideo" and "audio" in n["inputs"]]
    assert [n["inputs"]["strength_model"] for n in g.values() if n["_meta"]["title"] == "Relight LoRA"] == [1.0]
    assert handler(job(replace_mode(relight=False)))["relight"] is False


def test_control_videos_at_another_rate_are_resampled(worker_env, fake):
    result = handler(job(move(video=clip(30, 30, fmt="MOV"), pose_video=clip(30, 30), face_video=clip(16, 16,
                                                                                                      fmt="WEBM"))))
    assert "error" not in result and result["frames"] == 16, result
    files = loaded(sent_graph(fake))
    assert files["Pose Video"].endswith(".mp4") and files["Face Video"].endswith(".webm")
    dry = handler(job(move(video=clip(30, 30), pose_video=clip(30, 30)), "dry") | {"input": {
        **move(video=clip(30, 30), pose_video=clip(30, 30)), "dry_run": True}})
    assert dry["checks"]["pose_video"]["resampled"] is True and dry["checks"]["face_video"]["resampled"] is False
    assert dry["checks"]["video"]["frames_at_16fps"] == 16 and dry["checks"]["models"]["set"] == "animate-14b"


def private_server_url() -> str:
    return "https://127.0.0.1:9/dance.mp4"


@pytest.mark.parametrize("raw, field, words", [
    (move(video=png_b64()), "video", "cannot be read as video"),
    (move(video=b64(video_file("MP4", 16)[:200])), "video", "cannot be read as video"),
    (move(video=b64(audio_file("M4A", 1.0))), "video", "sound only"),
    (move(video="data:video/mp4;base64,"), "video", "video"),
    (move(video=b64(video_file("WEBM", frames=0, audio_seconds=1.0))), "video", "holds no frames"),
    (move(video=private_server_url()), "video", "non-public address"),
    (move(video=clip(31 * 16)), "video", "limit of 30 s (MAX_VIDEO_S)"),
    (move(pose_video=None), "pose_video", "is missing"),
    (move(face_video=None), "face_video", "send both `pose_video` and `face_video`, or neither"),
    (move(person=1), "person", "worker's own preprocessing"),
    (replace_mode(pose_video=None, face_video=None), "background_video", "comes with `pose_video`"),
    (replace_mode(mask_video=None), "mask_video", "replace mode needs `mask_video`"),
    (move(face_video=clip(8)), "face_video", "shorter than `video`"),
    (move(pose_video=png_b64()), "pose_video", "cannot be read as video"),
])
def test_bad_videos_are_refused_and_nothing_is_uploaded(worker_env, fake, raw, field, words):
    raw = {k: v for k, v in raw.items() if v is not None}
    result = handler(job(raw, "animate-bad"))
    assert result["error_code"] == "INVALID_INPUT", result
    assert field in result["error"] and words in result["error"], result["error"]
    assert not [r for r in fake.requests if r.method == "POST"]  # nothing uploaded, nothing queued


def test_a_volume_without_the_animate_set_names_it(worker_env, fake, volume):
    (volume / "clip_vision" / "clip_vision_h.safetensors").unlink()
    result = handler(job(move(), "animate-missing"))
    assert result["error_code"] == "MODELS_MISSING" and result["details"]["set"] == "animate-14b"
    assert "--set animate-14b" in result["error"] and "clip_vision/clip_vision_h" in result["error"]


def test_progress_counts_windows_and_never_goes_back(worker_env, fake, monkeypatch):
    from wan_worker import handler as handler_module
    from wan_worker.progress import Progress

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    long = clip(160, 16)
    result = handler(job(move(video=long, pose_video=long, face_video=long, steps=2), "animate-p"))
    assert "error" not in result and result["windows"] == 3, result
    windows = [(u["window"], u["windows"]) for u in updates if u["phase"] == "sampling"]
    assert sorted(set(windows)) == [(1, 3), (2, 3), (3, 3)]
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents)
