"""Issue 14 on the stand-in tier: sound-to-video (S2V).

Request rules and refusals, the chunk arithmetic (the audio's length decides frames and chunks),
bad audio refused before anything is queued, the graph a job builds for 1..N chunks (every link, and
valid for the real node schemas), jobs end to end against the stand-in ComfyUI, progress per chunk.
Every audio file is a real one made with PyAV (tests/avgen.py).
"""
from __future__ import annotations

import base64
import functools
import math
from typing import Any

import pytest

from tests.avgen import audio_file
from tests.conftest import FIXTURES, png_b64
from tests.fakecomfy.validate import validate_prompt
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.graphs import S2V, VideoParams, chunk_frames, s2v_timing
from wan_worker.handler import handler
from wan_worker.models import MODEL_SETS
from wan_worker.request import parse_input
from wan_worker.settings import load_settings
from wan_worker.workflow import copy_id, load_workflow

PROMPT = "a woman sings softly, looking into the camera"
IMAGE = png_b64(96, 96)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


WAV_2S = b64(audio_file("WAV", seconds=2.0))


def parse(**fields: Any):
    return parse_input({"prompt": PROMPT, "image": IMAGE, "audio": WAV_2S, **fields}, max_timeout_s=900)


def refused(**fields: Any) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse(**fields)
    assert info.value.code == INVALID_INPUT
    return info.value


@pytest.fixture(scope="module")
def wf():
    return load_workflow(S2V, load_settings({}).workflows_path)


# ---------------------------------------------------------------- request rules


def test_audio_picks_sound_to_video_with_the_templates_defaults():
    req = parse()
    assert req.spec is S2V and req.spec.model_set == "s2v-14b"
    assert (req.steps, req.cfg, req.shift, req.fps, req.sampler, req.scheduler) == (4, 1.0, 8.0, 16.0, "uni_pc",
                                                                                     "simple")
    assert req.length is None  # the sound decides it
    assert req.effective_lora_strength == 1.0
    quality = parse(fast=False)
    assert (quality.steps, quality.cfg, quality.shift, quality.effective_lora_strength) == (20, 6.0, 8.0, 0.0)
    assert parse(fps=16).fps == 16.0 and parse(steps=6, cfg=2.0, seed=3, lora_strength=0.5).lora_strength == 0.5


@pytest.mark.parametrize("fields, field, words", [
    ({"fps": 24}, "fps", "must be 16"),
    ({"end_image": IMAGE}, "end_image", "remove `end_image`"),
    ({"length": 81}, "length", "follows the sound"),
    ({"switch_step": 2}, "switch_step", "one model"),
    ({"loras": [{"name": "mine.safetensors"}]}, "loras", "do not fit the S2V model"),
    ({"model": "5b"}, "audio", "14b"),
    ({"image": None}, "image", "required for sound-to-video"),
    ({"aspect_ratio": "16:9"}, "aspect_ratio", "follows the image"),
    ({"audio_start_s": -1}, "audio_start_s", "greater than or equal to 0"),
    ({"duration_s": 0}, "duration_s", "greater than 0"),
])
def test_fields_sound_to_video_cannot_use_are_refused_by_name(fields, field, words):
    fields = {k: v for k, v in fields.items()}
    raw = {"prompt": PROMPT, "image": IMAGE, "audio": WAV_2S, **fields}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(WorkerError) as info:
        parse_input(raw, max_timeout_s=900)
    err = info.value
    assert err.code == INVALID_INPUT and f"`{field}`" in err.message and words in err.message, err.message
    assert err.details["errors"][0]["field"] == field


@pytest.mark.parametrize("field", ["audio_start_s", "duration_s"])
def test_audio_cutting_fields_need_audio(field):
    with pytest.raises(WorkerError) as info:
        parse_input({"prompt": PROMPT, "image": IMAGE, field: 1.0}, max_timeout_s=900)
    assert f"`{field}`" in info.value.message and "send `audio` too" in info.value.message


def test_size_follows_the_image_at_about_640x640():
    from wan_worker.request import resolve_size

    assert resolve_size(parse(), 96, 96) == (640, 640)
    w, h = resolve_size(parse(), 1920, 1080)
    assert w % 16 == h % 16 == 0 and w > h and abs(w * h - 640 * 640) < 0.06 * 640 * 640
    assert resolve_size(parse(resolution="720p"), 1280, 720) == (1280, 720)
    assert resolve_size(parse(width=320, height=256), 96, 96) == (320, 256)


# ---------------------------------------------------------------- chunk arithmetic


def test_one_chunk_of_77_is_80_frames(wf):
    """ComfyUI's wan_sound_to_video: (77 - 1) // 4 + 1 = 20 latent frames, 4 audio frames each."""
    assert wf.default("Sound To Video", "length") == wf.default("Extend", "length") == 77
    assert chunk_frames(77) == 80 and chunk_frames(13) == 16 and chunk_frames(73) == 76


@pytest.mark.parametrize("seconds, frames, chunks", [
    (2.0, 32, 1),  # shorter than one chunk: one chunk, cut back to the sound
    (5.0, 80, 1),  # exactly one chunk
    (5.01, 81, 2),  # one frame more: a second chunk
    (10.0, 160, 2),  # an exact multiple
    (23.3, 373, 5),  # five chunks (4 x 80 = 320 < 373 <= 400)
    (0.1, 2, 1),
    (60.0, 960, 12),  # MAX_AUDIO_S's default
])
def test_frames_follow_the_sound_rounded_up_to_whole_chunks(wf, seconds, frames, chunks):
    assert s2v_timing(wf, seconds) == (frames, chunks)
    assert (chunks - 1) * 80 < frames <= chunks * 80 and frames == math.ceil(seconds * 16 - 1e-9)


def test_more_frames_than_one_video_can_hold_is_an_error(wf):
    with pytest.raises(ValueError, match="4096"):
        s2v_timing(wf, 300.0)


# ---------------------------------------------------------------- the graph for N chunks


def params(**over: Any) -> VideoParams:
    base = dict(image_name="wan_j.png", prompt="sing", negative_prompt=None, seed=42, width=320, height=256,
                length=100, fps=16.0, steps=4, cfg=1.0, shift=8.0, lora_strength=0.7, switch_step=2,
                sampler="uni_pc", scheduler="simple", filename_prefix="wan_j", parts=2,
                audio_name="wan_j_audio.wav", audio_start_s=1.5, audio_s=6.2)
    return VideoParams(**{**base, **over})


@pytest.fixture(scope="module")
def object_info():
    import json

    return json.loads((FIXTURES / "object_info.json").read_text())


def scanned(info: dict, names: set[str]) -> dict:
    """The fixture's schemas with the loaders listing `names` (as a ComfyUI with the S2V set would)."""
    import copy

    info = copy.deepcopy(info)
    for cls, widget, folder in (("UNETLoader", "unet_name", "diffusion_models"),
                                ("LoraLoaderModelOnly", "lora_name", "loras"),
                                ("CLIPLoader", "clip_name", "text_encoders"), ("VAELoader", "vae_name", "vae"),
                                ("AudioEncoderLoader", "audio_encoder_name", "audio_encoders")):
        spec = info[cls]["input"]["required"][widget]
        wanted = sorted(m.name for m in MODEL_SETS["s2v-14b"].files if m.folder == folder)
        if spec[0] == "COMBO":
            spec[1]["options"] = wanted
        else:
            spec[0] = wanted
    return info


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_the_graph_for_n_chunks_is_valid_and_chained(wf, object_info, tmp_path, parts):
    (tmp_path / "wan_j.png").write_bytes(b"")
    (tmp_path / "wan_j_audio.wav").write_bytes(b"")
    g = wf.build(params(parts=parts))
    ok, body = validate_prompt(g, scanned(object_info, MODEL_SETS["s2v-14b"].names), tmp_path)
    assert ok, body
    r = wf.roles
    samplers = [n for n in g.values() if n["class_type"] == "KSampler"]
    assert len(samplers) == parts
    assert all((s["inputs"]["seed"], s["inputs"]["steps"], s["inputs"]["sampler_name"]) == (42, 4, "uni_pc")
               for s in samplers)
    # the chain: part k's extend and concat read part k-1's concat (part 2 reads the first sampler)
    concat = [r["Sampler"]] + [r["Extend Concat"]] + [copy_id(r["Extend Concat"], k) for k in range(3, parts + 1)]
    for k in range(2, parts + 1):
        extend = r["Extend"] if k == 2 else copy_id(r["Extend"], k)
        cat = r["Extend Concat"] if k == 2 else copy_id(r["Extend Concat"], k)
        assert g[extend]["inputs"]["video_latent"] == [concat[k - 2], 0]
        assert g[cat]["inputs"]["samples1"] == [concat[k - 2], 0]
        assert g[extend]["inputs"]["length"] == 77
    last = concat[parts - 1]
    assert wf.inputs(g, "First Frame")["samples"] == [last, 0]
    assert wf.inputs(g, "Double First Frame")["samples2"] == [last, 0]
    assert wf.inputs(g, "Decode")["samples"] == [r["Double First Frame"], 0]
    cut = wf.inputs(g, "Cut To Audio")
    assert (cut["image"], cut["batch_index"], cut["length"]) == ([r["Decode"], 0], 1, 100)
    trim = wf.inputs(g, "Trim Audio")
    assert (trim["start_index"], trim["duration"]) == (1.5, 6.2)
    assert wf.inputs(g, "Audio Features")["audio"] == wf.inputs(g, "Create Video")["audio"] == [r["Trim Audio"], 0]
    assert wf.inputs(g, "Audio")["audio"] == "wan_j_audio.wav"
    assert wf.inputs(g, "Reference Image")["image"] == "wan_j.png"
    assert (wf.inputs(g, "Sound To Video")["width"], wf.inputs(g, "Sound To Video")["height"]) == (320, 256)
    assert wf.inputs(g, "LoRA")["strength_model"] == 0.7 and wf.inputs(g, "Create Video")["fps"] == 16.0
    assert wf.model_names() == MODEL_SETS["s2v-14b"].names


def test_the_graph_file_opens_as_a_two_chunk_job(wf):
    assert wf.build(params(parts=2)).keys() == wf.graph.keys()
    assert "v1.1_high_noise" in wf.default("LoRA", "lora_name")


def test_progress_has_a_sampling_phase_per_chunk(wf):
    phases = wf.phases(3)
    parts = sorted((p.part, p.parts, p.unit) for p in phases.values() if not isinstance(p, str))
    assert parts == [(1, 3, "chunk"), (2, 3, "chunk"), (3, 3, "chunk")]


# ---------------------------------------------------------------- jobs against the stand-in


@pytest.fixture
def fake(tmp_path, volume):
    """The stand-in lists the files really on the test volume, as ComfyUI does."""
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui", extra_model_paths_config=tmp_path / "extra_model_paths.yaml",
                   scan_models=True) as server:
        yield server


def sent_graph(fake) -> dict:
    return [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"][-1]["prompt"]


def job(job_id: str = "s2v-1", **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"prompt": PROMPT, "image": IMAGE, "audio": WAV_2S, "seed": 5, **fields}}


def test_s2v_job_end_to_end(worker_env, fake):
    audio = audio_file("MP3", seconds=7.0)
    result = handler(job(audio=b64(audio)))
    assert "error" not in result, result
    assert (result["graph"], result["model"], result["fps"], result["audio"], result["chunks"]) == \
        ("s2v", "14b", 16.0, True, 2)
    assert result["length"] == math.ceil(result["audio_s"] * 16 - 1e-9) and 6.9 < result["audio_s"] < 7.2
    assert result["duration_s"] == pytest.approx(result["length"] / 16, abs=1e-3)
    assert (result["width"], result["height"]) == (640, 640)
    uploads = [r for r in fake.requests if r.path == "/upload/image"]
    assert len(uploads) == 2  # the image and the sound, by their content's extension
    names = sorted(p.name for p in fake.input_dir.iterdir()) if fake.input_dir.exists() else []
    assert not names  # cleaned up after the job
    g = sent_graph(fake)
    [load] = [n for n in g.values() if n["class_type"] == "LoadAudio"]
    assert load["inputs"]["audio"].endswith(".mp3")
    assert sum(n["class_type"] == "KSampler" for n in g.values()) == 2


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "M4A"])
def test_every_audio_format_runs(worker_env, fake, fmt):
    result = handler(job(f"s2v-{fmt}", audio=b64(audio_file(fmt, seconds=1.0))))
    assert "error" not in result and result["chunks"] == 1, result
    [load] = [n for n in sent_graph(fake).values() if n["class_type"] == "LoadAudio"]
    assert load["inputs"]["audio"].endswith("." + fmt.lower())


def test_a_part_of_the_sound(worker_env, fake):
    long = b64(audio_file("WAV", seconds=12.0))
    result = handler(job(audio=long, audio_start_s=3.0, duration_s=5.5))
    assert "error" not in result, result
    assert (result["chunks"], result["length"], result["audio_start_s"], result["audio_s"]) == (2, 88, 3.0, 5.5)
    [trim] = [n for n in sent_graph(fake).values() if n["class_type"] == "TrimAudioDuration"]
    assert (trim["inputs"]["start_index"], trim["inputs"]["duration"]) == (3.0, 5.5)
    rest = handler(job(audio=long, audio_start_s=10.0))
    assert (rest["audio_s"], rest["length"], rest["chunks"]) == (2.0, 32, 1)


def private_server_url() -> str:
    return "https://127.0.0.1:9/voice.wav"


@pytest.mark.parametrize("fields, field, words", [
    ({"audio": png_b64()}, "audio", "cannot be read as audio"),
    ({"audio": b64(audio_file("WAV", 1.0)[:30])}, "audio", "cannot be read as audio"),
    ({"audio": b64(b"RIFF\x00\x00\x00\x00WAVEfmt ")}, "audio", "cannot be read as audio"),
    ({"audio": "data:audio/wav;base64,"}, "audio", "audio"),
    ({"audio": b64(audio_file("WAV", 61.0))}, "audio", "limit of 60 s (MAX_AUDIO_S)"),
    ({"audio": private_server_url()}, "audio", "non-public address"),
    ({"audio_start_s": 2.5}, "audio_start_s", "lasts only 2.00 s"),
    ({"audio_start_s": 1.0, "duration_s": 1.5}, "duration_s", "has only 1.00 s there"),
    ({"duration_s": 0.05}, "duration_s", "at least 0.1 s"),
])
def test_bad_audio_is_refused_and_nothing_is_queued(worker_env, fake, fields, field, words):
    result = handler(job("s2v-bad", **fields))
    assert result["error_code"] == "INVALID_INPUT", result
    assert field in result["error"] and words in result["error"], result["error"]
    assert not [r for r in fake.requests if r.method == "POST"]  # nothing uploaded, nothing queued


def test_a_long_file_with_a_short_part_is_fine(worker_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_AUDIO_S", "3")
    from wan_worker import handler as handler_module

    handler_module.worker.cache_clear()
    long = b64(audio_file("WAV", seconds=4.0))
    assert handler(job(audio=long))["error_code"] == "INVALID_INPUT"
    result = handler(job(audio=long, audio_start_s=1.0, duration_s=3.0))
    assert "error" not in result and result["audio_s"] == 3.0, result


def test_dry_run_shows_the_graph_with_its_chunks(worker_env, fake):
    result = handler(job("s2v-dry", audio=b64(audio_file("WAV", seconds=11.0)), dry_run=True))
    assert result["dry_run"] is True and result["chunks"] == 3 and result["length"] == 176, result
    assert result["checks"]["audio"]["format"] == "WAV" and result["checks"]["audio"]["used_s"] == 11.0
    assert result["checks"]["models"]["set"] == "s2v-14b" and result["checks"]["models"]["ok"] is True
    g = result["workflow"]
    assert sum(n["class_type"] == "WanSoundImageToVideoExtend" for n in g.values()) == 2
    assert fake.requests == []


def test_a_volume_without_the_s2v_set_names_it(worker_env, fake, volume):
    (volume / "audio_encoders" / "wav2vec2_large_english_fp16.safetensors").unlink()
    result = handler(job("s2v-missing"))
    assert result["error_code"] == "MODELS_MISSING" and result["details"]["set"] == "s2v-14b"
    assert "--set s2v-14b" in result["error"] and "audio_encoders/wav2vec2_large_english_fp16" in result["error"]
    assert not [r for r in fake.requests if r.method == "POST"]


def test_progress_counts_chunks_and_never_goes_back(worker_env, fake, monkeypatch):
    from wan_worker import handler as handler_module
    from wan_worker.progress import Progress

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    result = handler(job("s2v-p", audio=b64(audio_file("WAV", seconds=12.0)), steps=3))
    assert "error" not in result and result["chunks"] == 3, result
    chunks = [(u["chunk"], u["chunks"]) for u in updates if u["phase"] == "sampling"]
    assert sorted(set(chunks)) == [(1, 3), (2, 3), (3, 3)]
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents)
    assert [p for p in dict.fromkeys(u["phase"] for u in updates)][-3:] == ["decoding", "encoding", "uploading"]


def test_chunks_follow_the_graphs_own_chunk_lengths(wf):
    """A graph re-exported with other lengths: the first chunk's and the extend block's count."""
    import copy
    import dataclasses

    g = copy.deepcopy(wf.graph)
    g[wf.roles["Sound To Video"]]["inputs"]["length"] = 13  # 16 frames
    g[wf.roles["Extend"]]["inputs"]["length"] = 29  # 32 frames
    other = dataclasses.replace(wf, graph=g)
    assert s2v_timing(other, 1.0) == (16, 1)
    assert s2v_timing(other, 1.01) == (17, 2)
    assert s2v_timing(other, 3.0) == (48, 2)
    assert s2v_timing(other, 3.01) == (49, 3)
