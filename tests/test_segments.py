"""Issue 24 on the stand-in tier: a story told prompt by prompt in one job (`segments`).

The request rules and caps (each bad segment named, nothing queued), the graph a job builds for
1..N segments (without `segments` exactly the graph of before; with them every link of every part,
and valid for the real node schemas), per-segment seeds, prompts, lengths and LoRAs, `end_image`
on the last segment only, progress per segment, and jobs end to end against the stand-in. The
frames themselves are checked on the real tier (tests/comfyui/test_real_segments.py).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, png_b64, sent_graph, write_lora
from tests.fakecomfy.validate import validate_prompt
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.graphs import FLF2V, I2V, T2V, TI2V5B, VideoParams
from wan_worker.handler import handler
from wan_worker.models import MANIFEST
from wan_worker.progress import Progress
from wan_worker.request import parse_input
from wan_worker.segments import Segment, resolve, total_frames
from wan_worker.settings import load_settings
from wan_worker.workflow import LoraNode, copy_id, load_workflow

IMAGE = png_b64(96, 54)
STORY = [{"prompt": "the cat wakes up"}, {"prompt": "it stretches", "length": 49}, {"prompt": "it walks away"}]


def parse(**fields: Any):
    return parse_input({"image": IMAGE, "segments": STORY, **fields}, max_timeout_s=900)


def refused(**fields: Any) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse(**fields)
    assert info.value.code == INVALID_INPUT
    return info.value


@pytest.fixture(scope="module")
def object_info():
    """The recorded schemas, their model lists as a ComfyUI with every set on its volume lists them."""
    info = json.loads((FIXTURES / "object_info.json").read_text())
    widgets = {("UNETLoader", "unet_name"): "diffusion_models", ("LoraLoaderModelOnly", "lora_name"): "loras",
               ("CLIPLoader", "clip_name"): "text_encoders", ("VAELoader", "vae_name"): "vae"}
    for (cls, widget), folder in widgets.items():
        choices = info[cls]["input"]["required"][widget][0]
        choices += [m.name for m in MANIFEST if m.folder == folder and m.name not in choices]
    info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0] += ["mine.safetensors", "story.safetensors"]
    return info


@pytest.fixture
def fake(scanning_fake):
    """The stand-in listing the model files really on the test volume (a segment's own LoRA too)."""
    return scanning_fake


def workflow(spec):
    return load_workflow(spec, load_settings({}).workflows_path)


BASE = dict(image_name="wan_j.png", prompt="a fox runs", negative_prompt=None, seed=42, width=640, height=352,
            length=49, fps=16.0, steps=6, cfg=2.5, shift=6.0, lora_strength=0.8, switch_step=3,
            sampler="dpmpp_2m", scheduler="karras", filename_prefix="wan_j", end_image_name="wan_j_end.png")


def story_params(segments: list[Segment], **over: Any) -> VideoParams:
    first = segments[0]
    return VideoParams(**{**BASE, "prompt": first.prompt, "seed": first.seed, "negative_prompt": first.negative_prompt,
                          "length": total_frames([s.length for s in segments]), "parts": len(segments),
                          "segments": tuple(segments), **over})


def story(*lengths: int, seed: int = 7) -> list[Segment]:
    out, first = [], 0
    for n, length in enumerate(lengths):
        out.append(Segment(f"part {n + 1}", "blur" if n == 1 else None, seed + n, length, first))
        first += out[-1].adds
    return out


# ---------------------------------------------------------------- request rules


def test_a_segment_takes_the_jobs_values_where_it_has_none():
    req = parse(prompt="a cat", length=41, negative_prompt="ugly", seed=10)
    segs = resolve(req, 10, max_segments=10, max_total_frames=801)
    assert [s.prompt for s in segs] == ["the cat wakes up", "it stretches", "it walks away"]
    assert [s.length for s in segs] == [41, 49, 41]
    assert [s.seed for s in segs] == [10, 11, 12]  # the job's seed plus the segment's index
    assert [s.negative_prompt for s in segs] == ["ugly"] * 3
    assert [s.first_frame for s in segs] == [0, 41, 89] and total_frames([41, 49, 41]) == 129
    own = resolve(parse(segments=[{}, {"seed": 3, "negative_prompt": "dark"}], prompt="p"), 2**64 - 1, 10, 801)
    assert [(s.prompt, s.seed, s.negative_prompt) for s in own] == [("p", 2**64 - 1, None), ("p", 3, "dark")]
    assert resolve(parse(segments=[{}, {}], prompt="p"), 2**64 - 1, 10, 801)[1].seed == 0  # wraps


def test_segments_make_the_job_prompt_optional_but_every_segment_needs_one():
    assert parse().prompt is None
    with pytest.raises(WorkerError) as info:
        parse_input({"image": IMAGE}, max_timeout_s=900)
    assert "`prompt` is required" in info.value.message
    req = parse(segments=[{"prompt": "a"}, {"length": 49}])
    with pytest.raises(WorkerError) as info:
        resolve(req, 1, 10, 801)
    assert info.value.details["errors"][0]["field"] == "segments[1].prompt" and "give the segment a prompt" in str(
        info.value)


@pytest.mark.parametrize("segments, field, words", [
    ([{"prompt": " "}], "segments[0].prompt", "must not be blank"),
    ([{"prompt": "a"}, {"prompt": ""}], "segments[1].prompt", "at least 1 character"),
    ([{"prompt": "a"}, {"length": 50}], "segments[1].length", "4n+1"),
    ([{"prompt": "a", "length": 245}], "segments[0].length", "less than or equal to 241"),
    ([{"prompt": "a", "speed": 2}], "segments[0].speed", "not a known field"),
    ([{"prompt": "a", "seed": -1}], "segments[0].seed", "greater than or equal to 0"),
    ([], "segments", "at least 1 item"),
])
def test_a_bad_segment_is_named_with_its_field(segments, field, words):
    err = refused(segments=segments, prompt="p")
    assert err.details["errors"][0]["field"] == field and words in err.message, err.message
    assert f"`{field}`" in err.message


@pytest.mark.parametrize("fields, words", [
    ({"audio": "UklGRg=="}, "follows the sound"),
    ({"video": "AAAA"}, "follows the driving video"),
])
def test_sound_and_animate_refuse_segments_with_a_sentence(fields, words):
    err = refused(**fields)
    assert err.details["errors"][0]["field"] == "segments" and words in err.message, err.message


def test_5b_refuses_a_segments_loras_as_it_refuses_the_jobs():
    err = refused(model="5b", segments=[{"prompt": "a"}, {"prompt": "b", "loras": [{"name": "x.safetensors"}]}])
    assert err.details["errors"][0]["field"] == "segments[1].loras" and "14b model only" in err.message


def test_caps_name_the_setting_and_the_segment():
    with pytest.raises(WorkerError) as info:
        resolve(parse(segments=[{"prompt": "a"}] * 4), 1, max_segments=3, max_total_frames=801)
    assert "MAX_SEGMENTS" in info.value.message and info.value.details["errors"][0]["field"] == "segments"
    with pytest.raises(WorkerError) as info:
        resolve(parse(segments=[{"prompt": "a"}] * 4, length=81), 1, max_segments=10, max_total_frames=300)
    # 81 + 80 + 80 = 241 fits; the fourth segment takes it to 321
    assert info.value.details["errors"][0]["field"] == "segments[3].length"
    assert "321 frames" in info.value.message and "MAX_TOTAL_FRAMES" in info.value.message


# ---------------------------------------------------------------- the graphs


PLAIN = json.loads((FIXTURES / "plain_graphs.json").read_text())


@pytest.mark.parametrize("spec, key, over, with_loras", [
    (I2V, "i2v", {}, True), (FLF2V, "flf2v", {}, True), (T2V, "t2v-text", {"image_name": None}, True),
    (TI2V5B, "ti2v5b", {}, False), (TI2V5B, "ti2v5b-text", {"image_name": None}, False),
])
def test_without_segments_the_graph_is_the_one_of_before(spec, key, over, with_loras):
    """tests/fixtures/plain_graphs.json: what each graph built before the segment block existed."""
    loras = [LoraNode("high", "mine.safetensors", 0.7), LoraNode("low", "mine.safetensors", 0.7)] if with_loras else []
    assert workflow(spec).build(VideoParams(**{**BASE, **over}), loras) == PLAIN[key]


def test_one_part_is_the_graph_without_its_segment_block():
    wf = workflow(I2V)
    plain = wf.one_part()
    assert not any(n["_meta"]["title"].startswith("Segment") for n in plain.values())
    assert wf.inputs(plain, "Decode")["samples"] == [wf.roles["Low Noise Sampler"], 0]
    assert wf.roles["Segment Join"] in wf.graph  # the loaded graph is untouched


def part(wf, role: str, n: int) -> str:
    return wf.part_id(role, n)


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_each_segment_starts_from_the_last_frame_of_the_one_before(parts, object_info, tmp_path):
    wf = workflow(I2V)
    segs = story(*([49] * parts))
    g = wf.build(story_params(segs))
    (tmp_path / "wan_j.png").write_bytes(b"")
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    for n in range(2, parts + 1):
        start = wf.part_inputs(g, "Segment Start Frame", n)
        assert (start["batch_index"], start["length"]) == (4095, 1)  # the last frame
        assert start["image"] == [part(wf, "Segment Previous Frames", n), 0]
        previous = wf.part_inputs(g, "Segment Previous Frames", n)["samples"]
        assert previous == [part(wf, "Segment Low Sampler", n - 1), 0]  # the segment before's own latent
        assert wf.part_inputs(g, "Segment Image To Video", n)["start_image"] == [part(wf, "Segment Start Frame", n), 0]
        join = wf.part_inputs(g, "Segment Join", n)
        before = "Low Noise Sampler" if n == 2 else None
        assert join["samples1"] == [wf.roles[before] if before else part(wf, "Segment Join", n - 1), 0]
        cut = wf.part_inputs(g, "Segment New Latent", n)
        assert (cut["dim"], cut["index"]) == ("t", 1)  # its start frame is the frame before: dropped
        assert cut["samples"] == [part(wf, "Segment Low Sampler", n), 0]
    assert wf.inputs(g, "Decode")["samples"] == [part(wf, "Segment Join", parts), 0]
    titles = [node["_meta"]["title"] for node in g.values()]
    assert len(titles) == len(PLAIN["i2v"]) - 2 + 11 * (parts - 1)  # the fixture has 2 LoRA nodes


def test_each_segment_has_its_own_prompts_seed_and_length(object_info):
    wf = workflow(I2V)
    segs = story(81, 49, 33)
    g = wf.build(story_params(segs))
    for n, seg in enumerate(segs, 1):
        assert wf.part_inputs(g, "Segment Prompt", n)["text"] == f"part {n}"
        assert wf.part_inputs(g, "Segment Image To Video", n)["length"] == seg.length
        for role in ("Segment High Sampler", "Segment Low Sampler"):
            inputs = wf.part_inputs(g, role, n)
            assert inputs["noise_seed"] == 7 + n - 1
            assert (inputs["steps"], inputs["cfg"], inputs["sampler_name"]) == (6, 2.5, "dpmpp_2m")
        assert wf.part_inputs(g, "Segment High Shift", n)["shift"] == 6.0
        size = wf.part_inputs(g, "Segment Image To Video", n)
        assert (size["width"], size["height"]) == (640, 352)
    default_negative = wf.default("Negative Prompt", "text")
    assert [wf.part_inputs(g, "Segment Negative", n)["text"] for n in (1, 2, 3)] == [default_negative, "blur",
                                                                                    default_negative]
    assert wf.inputs(g, "Start Image")["image"] == "wan_j.png"  # segment 1 starts from the job's image


def test_changing_segment_3_changes_only_segment_3s_nodes():
    """With a fixed seed the graph of segments 1-2 stays the same node for node when segment 3's
    prompt changes (ComfyUI then serves them from its cache); the frames are compared on the real tier."""
    wf = workflow(I2V)
    segs = story(49, 49, 49)
    before = wf.build(story_params(segs))
    after = wf.build(story_params([*segs[:2], Segment("another ending", None, segs[2].seed, 49, segs[2].first_frame)]))
    changed = {nid for nid in before if before[nid] != after[nid]}
    assert changed == {part(wf, "Segment Prompt", 3)}
    # what reads it (segment 3's sampling, the join, the decode) runs again; segments 1-2 do not
    assert part(wf, "Segment Prompt", 3) not in json.dumps([before[part(wf, r, n)] for n in (1, 2)
                                                            for r in ("Segment High Sampler", "Segment Low Sampler")])


def test_end_image_ends_the_last_segment_only(object_info, tmp_path):
    wf = workflow(FLF2V)
    for name in ("wan_j.png", "wan_j_end.png"):
        (tmp_path / name).write_bytes(b"")
    g = wf.build(story_params(story(49, 49, 49)))
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    ends = [wf.part_inputs(g, "Segment Image To Video", n).get("end_image") for n in (1, 2, 3)]
    assert ends == [None, None, [wf.roles["End Image"], 0]]
    assert "end_image" in wf.inputs(wf.build(VideoParams(**BASE)), "First Last Frame To Video")


def test_t2v_holds_each_later_segments_first_latent_frame_at_its_start_frame(object_info, tmp_path):
    wf = workflow(T2V)
    g = wf.build(story_params(story(81, 49, 33), image_name=None))
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    assert wf.inputs(g, "Empty Latent")["length"] == 81
    for n, length in ((2, 49), (3, 33)):
        assert wf.part_inputs(g, "Segment Empty Latent", n)["length"] == length - 4  # + the held start latent
        assert wf.part_inputs(g, "Segment Free Frames", n)["amount"] == (length - 1) // 4
        masked = wf.part_inputs(g, "Segment Masked Latent", n)
        assert masked["samples"] == [part(wf, "Segment Latent Frames", n), 0]
        assert wf.part_inputs(g, "Segment High Sampler", n)["latent_image"] == [part(wf, "Segment Masked Latent", n), 0]
        assert wf.part_inputs(g, "Segment Start Latent", n)["pixels"] == [part(wf, "Segment Start Frame", n), 0]


@pytest.mark.parametrize("image", ["wan_j.png", None])
def test_5b_segments_start_from_the_frame_before_with_or_without_an_image(image, object_info, tmp_path):
    wf = workflow(TI2V5B)
    (tmp_path / "wan_j.png").write_bytes(b"")
    g = wf.build(story_params(story(121, 61), image_name=image))
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    assert wf.part_inputs(g, "Segment Video Latent", 2)["start_image"] == [part(wf, "Segment Start Frame", 2), 0]
    assert wf.part_inputs(g, "Segment Video Latent", 2)["length"] == 61
    assert [wf.part_inputs(g, "Segment Sampler", n)["seed"] for n in (1, 2)] == [7, 8]
    assert ("start_image" in wf.inputs(g, "Video Latent")) is (image is not None)


def test_a_segment_with_loras_of_its_own_reads_them_instead_of_the_jobs(object_info, tmp_path):
    wf = workflow(I2V)
    (tmp_path / "wan_j.png").write_bytes(b"")
    job = [LoraNode("high", "mine.safetensors", 0.7), LoraNode("low", "mine.safetensors", 0.7)]
    own = {2: [LoraNode("high", "story.safetensors", 0.5)], 3: []}
    g = wf.build(story_params(story(49, 49, 49)), job, own)
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body

    def chain(role: str, n: int) -> list[str]:
        names, at = [], wf.part_inputs(g, role, n)["model"][0]
        while g[at]["class_type"] == "LoraLoaderModelOnly" and g[at]["_meta"]["title"].startswith("User LoRA"):
            names.append(g[at]["inputs"]["lora_name"])
            at = g[at]["inputs"]["model"][0]
        assert g[at]["_meta"]["title"] in ("High Noise LoRA", "Low Noise LoRA")  # the 4-step LoRA comes first
        return names

    assert chain("Segment High Shift", 1) == ["mine.safetensors"] == chain("Segment Low Shift", 1)
    assert chain("Segment High Shift", 2) == ["story.safetensors"] and chain("Segment Low Shift", 2) == []
    assert chain("Segment High Shift", 3) == [] and chain("Segment Low Shift", 3) == []


def test_progress_counts_segments_and_only_moves_forward():
    wf = workflow(I2V)
    phases = wf.phases(3)
    assert phases[wf.roles["High Noise Sampler"]].detail() == {"segment": 1, "segments": 3}
    assert phases[copy_id(wf.roles["Segment Low Sampler"], 3)].detail() == {"segment": 3, "segments": 3}
    order = [wf.roles["High Noise Sampler"], wf.roles["Low Noise Sampler"], wf.roles["Segment High Sampler"],
             wf.roles["Segment Low Sampler"], copy_id(wf.roles["Segment High Sampler"], 3),
             copy_id(wf.roles["Segment Low Sampler"], 3)]
    starts = [phases[node].position() for node in order]
    assert starts == sorted(starts) and starts[0] == 10 and phases[order[-1]].position(1.0) == 90
    assert wf.phases(1) == {wf.roles[r]: p for r, p in I2V.phases.items() if not r.startswith("Segment")}
    sent: list[dict] = []
    with Progress(sent.append, phases, interval_s=0) as progress:
        for node in order:
            progress.on_event({"type": "executing", "data": {"node": node}})
            progress.on_event({"type": "progress", "data": {"node": node, "value": 2, "max": 3}})
        progress.on_event({"type": "executing", "data": {"node": wf.roles["Decode"]}})
    assert [u["percent"] for u in sent] == sorted(u["percent"] for u in sent)
    assert {(u.get("segment"), u["phase"]) for u in sent if "step" in u} == {
        (k, p) for k in (1, 2, 3) for p in ("sampling_high", "sampling_low")}


# ---------------------------------------------------------------- jobs end to end


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "input": {"image": IMAGE, "segments": STORY, "seed": 100, **fields}}


def test_a_three_part_story_runs_as_one_prompt(worker_env, fake, monkeypatch):
    from wan_worker import handler as handler_module

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    result = handler(job("story-1", steps=3, return_last_frame=True))
    assert "error" not in result, result
    assert result["length"] == 81 + 48 + 80 and result["duration_s"] == round(209 / 16, 3)
    assert result["segments"] == [
        {"segment": 1, "first_frame": 0, "frames": 81, "length": 81, "seed": 100},
        {"segment": 2, "first_frame": 81, "frames": 48, "length": 49, "seed": 101},
        {"segment": 3, "first_frame": 129, "frames": 80, "length": 81, "seed": 102}]
    assert result["graph"] == "i2v" and "last_frame" in result
    assert len([r for r in fake.requests if r.method == "POST" and r.path == "/prompt"]) == 1
    g = sent_graph(fake)
    assert sorted(n["inputs"]["text"] for n in g.values() if n["_meta"]["title"].startswith("Segment Prompt")) == [
        "it stretches", "it walks away"]
    assert {(u["segment"], u["segments"]) for u in updates if "segment" in u} == {(1, 3), (2, 3), (3, 3)}
    assert [u["percent"] for u in updates] == sorted(u["percent"] for u in updates)


def test_a_job_without_segments_reports_no_segment(worker_env, fake, monkeypatch):
    from wan_worker import handler as handler_module

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    result = handler({"id": "plain", "input": {"image": IMAGE, "prompt": "a cat", "steps": 3}})
    assert "error" not in result and "segments" not in result and "segments" not in updates[-1]
    assert not any("Segment" in n["_meta"]["title"] for n in sent_graph(fake).values())


def test_a_bad_segment_queues_nothing(worker_env, fake, monkeypatch):
    monkeypatch.setenv("MAX_SEGMENTS", "2")
    result = handler(job("story-capped"))
    assert result["error_code"] == INVALID_INPUT and "MAX_SEGMENTS" in result["error"]
    result = handler(job("story-bad", segments=[{"prompt": "a"}, {"prompt": "b", "length": 48}]))
    assert result["error_code"] == INVALID_INPUT and "`segments[1].length`" in result["error"]
    assert not [r for r in fake.requests if r.method == "POST"]


def test_a_dry_run_shows_the_segments_and_the_whole_graph(worker_env, fake):
    result = handler(job("story-dry", dry_run=True, model="5b", segments=[{"prompt": "a"}, {"prompt": "b",
                                                                                              "length": 61}]))
    assert result["dry_run"] and result["graph"] == "ti2v5b" and result["length"] == 121 + 60
    assert [s["first_frame"] for s in result["checks"]["segments"]] == [0, 121]
    titles = {n["_meta"]["title"] for n in result["workflow"].values()}
    assert {"Segment Sampler", "Segment Join"} <= titles and not fake.requests


def test_a_segments_own_lora_is_resolved_and_chained(worker_env, fake, volume):
    write_lora(volume / "loras" / "story.safetensors")
    result = handler(job("story-lora", segments=[{"prompt": "a"}, {"prompt": "b", "loras": [
        {"high": "story.safetensors", "high_strength": 0.6}]}]))
    assert "error" not in result, result
    g = sent_graph(fake)
    mine = [n for n in g.values() if n["inputs"].get("lora_name") == "story.safetensors"]
    assert len(mine) == 1 and mine[0]["inputs"]["strength_model"] == 0.6
    assert "segment 2" in mine[0]["_meta"]["title"]


def test_missing_files_still_come_before_reading_segments(worker_env, fake, volume: Path):
    for f in (volume / "diffusion_models").iterdir():
        f.unlink()
    result = handler(job("story-missing"))
    assert result["error_code"] == "MODELS_MISSING"
