"""Issue 10 on the stand-in tier: text-to-video 14B and the TI2V 5B model through the same door.

Validation of every new field and refusal, the graphs a job builds (valid for the real node
schemas), per-set checks on volumes that hold only some sets, the dry run's report of every set.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, model_paths_yaml, png_b64, write_safetensors
from tests.fakecomfy.validate import validate_prompt
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.graphs import T2V, TI2V5B, VideoParams, spec_for
from wan_worker.handler import handler
from wan_worker.models import MANIFEST, MODEL_SETS, check_volume
from wan_worker.request import parse_input, resolve_size
from wan_worker.settings import load_settings
from wan_worker.workflow import load_workflow

PROMPT = "a lighthouse in a storm, waves crash against the rocks"


def parse(**fields):
    return parse_input({"prompt": PROMPT, **fields}, max_timeout_s=900)


def refused(**fields) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse(**fields)
    assert info.value.code == INVALID_INPUT
    return info.value


def sent_graph(fake) -> dict:
    """The graph of the latest prompt queued."""
    return [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"][-1]["prompt"]


def classes(graph: dict) -> set[str]:
    return {n["class_type"] for n in graph.values()}


# ---------------------------------------------------------------- choosing the graph and defaults


def test_the_graph_follows_model_and_images():
    assert parse().spec.name == "t2v"
    assert parse(image="aGk=").spec.name == "i2v"
    assert parse(image="aGk=", end_image="aGk=").spec.name == "flf2v"
    assert parse(model="5b").spec.name == parse(model="5b", image="aGk=").spec.name == "ti2v5b"
    assert spec_for("5b", False) is TI2V5B and spec_for("14b", False) is T2V


def test_t2v_14b_keeps_the_14b_defaults():
    req = parse()
    assert (req.steps, req.cfg, req.shift, req.switch_step, req.fps, req.length) == (4, 1.0, 5.0, 2, 16.0, 81)
    assert (req.sampler, req.scheduler, req.resolution) == ("euler", "simple", "480p")
    assert parse(fast=False).steps == 20


def test_5b_defaults_are_the_official_templates():
    req = parse(model="5b")
    assert (req.steps, req.cfg, req.shift, req.fps, req.length) == (20, 5.0, 8.0, 24.0, 121)
    assert (req.sampler, req.scheduler, req.resolution) == ("uni_pc", "simple", "720p")
    assert req.effective_lora_strength == 0.0
    assert resolve_size(req) == (1280, 704)
    custom = parse(model="5b", steps=30, cfg=4, sampler="euler", fps=16, length=49)
    assert (custom.steps, custom.cfg, custom.sampler, custom.fps, custom.length) == (30, 4.0, "euler", 16.0, 49)


@pytest.mark.parametrize("fields, size", [
    ({}, (832, 480)),
    ({"aspect_ratio": "9:16"}, (480, 832)),
    ({"aspect_ratio": "1:1"}, (640, 640)),
    ({"aspect_ratio": "4:3"}, (704, 528)),
    ({"aspect_ratio": "3:4"}, (528, 704)),
    ({"resolution": "720p"}, (1280, 720)),
    ({"resolution": "720p", "aspect_ratio": "9:16"}, (720, 1280)),
    ({"width": 640}, (640, 368)),  # one side given: the other follows 16:9
    ({"width": 512, "height": 512}, (512, 512)),
    ({"model": "5b"}, (1280, 704)),
    ({"model": "5b", "aspect_ratio": "9:16"}, (704, 1280)),
    ({"model": "5b", "aspect_ratio": "1:1"}, (960, 960)),
    ({"model": "5b", "height": 480}, (864, 480)),
])
def test_text_to_video_sizes(fields, size):
    req = parse(**fields)
    w, h = resolve_size(req)
    assert (w, h) == size
    step = req.video_model.size_step
    assert w % step == 0 and h % step == 0


def test_5b_with_an_image_follows_it_in_multiples_of_32():
    req = parse(model="5b", image="aGk=")
    assert resolve_size(req, 1920, 1080) == (1280, 704)
    w, h = resolve_size(req, 1000, 1000)
    assert (w, h) == (960, 960)
    w, h = resolve_size(req, 600, 900)
    assert w % 32 == 0 and h % 32 == 0 and abs(w / h - 600 / 900) < 0.05


# ---------------------------------------------------------------- refusals name the field


@pytest.mark.parametrize("fields, field, needle", [
    ({"model": "5b", "fast": False}, "fast", "5b model"),
    ({"model": "5b", "lora_strength": 0.5}, "lora_strength", "5b model"),
    ({"model": "5b", "switch_step": 2}, "switch_step", "5b model"),
    ({"model": "5b", "end_image": "aGk=", "image": "aGk="}, "end_image", "14b"),
    ({"model": "5b", "loras": [{"name": "x.safetensors"}]}, "loras", "14b model only"),
    ({"model": "5b", "resolution": "480p"}, "resolution", "720p"),
    ({"model": "5b", "width": 848}, "width", "multiple of 32"),
    ({"model": "5b", "height": 720}, "height", "multiple of 32"),
    ({"end_image": "aGk="}, "end_image", "needs `image`"),
    ({"image": "aGk=", "aspect_ratio": "1:1"}, "aspect_ratio", "text-to-video"),
    ({"model": "5b", "image": "aGk=", "aspect_ratio": "1:1"}, "aspect_ratio", "text-to-video"),
    ({"model": "7b"}, "model", "'14b' or '5b'"),
    ({"aspect_ratio": "2:1"}, "aspect_ratio", "16:9"),
])
def test_fields_a_model_cannot_use_are_refused_by_name(fields, field, needle):
    err = refused(**fields)
    assert f"`{field}`" in err.message and needle in err.message, err.message
    assert err.details["errors"][0]["field"] == field


def test_fields_the_5b_model_uses_are_accepted():
    req = parse(model="5b", image="aGk=", width=640, height=352, shift=6, seed=3, negative_prompt="blur",
                return_last_frame=True, scheduler="beta")
    assert (req.width, req.height, req.shift, req.scheduler) == (640, 352, 6.0, "beta")


# ---------------------------------------------------------------- the graphs


MODEL_WIDGETS = {("UNETLoader", "unet_name"): "diffusion_models", ("LoraLoaderModelOnly", "lora_name"): "loras",
                 ("CLIPLoader", "clip_name"): "text_encoders", ("VAELoader", "vae_name"): "vae"}


@pytest.fixture(scope="module")
def object_info():
    """The recorded schemas, their model lists as a ComfyUI lists a volume holding every set (the
    recording's volume held the I2V files only)."""
    info = json.loads((FIXTURES / "object_info.json").read_text())
    for (class_type, widget), folder in MODEL_WIDGETS.items():
        choices = info[class_type]["input"]["required"][widget][0]
        choices += [m.name for m in MANIFEST if m.folder == folder and m.name not in choices]
    return info


def params(**over) -> VideoParams:
    base = dict(image_name=None, prompt="a fox runs", negative_prompt=None, seed=42, width=640, height=352,
                length=49, fps=24.0, steps=6, cfg=2.5, shift=6.0, lora_strength=0.8, switch_step=3,
                sampler="dpmpp_2m", scheduler="karras", filename_prefix="video/wan_job1")
    return VideoParams(**{**base, **over})


def test_t2v_graph_is_the_templates_two_experts_with_4_step_loras(object_info, tmp_path):
    wf = load_workflow(T2V, load_settings({}).workflows_path)
    assert wf.model_names() == MODEL_SETS["t2v-14b"].names
    g = wf.build(params())
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    assert "LoadImage" not in classes(g) and "EmptyHunyuanLatentVideo" in classes(g)
    latent = wf.inputs(g, "Empty Latent")
    assert (latent["width"], latent["height"], latent["length"]) == (640, 352, 49)
    hi, lo = wf.inputs(g, "High Noise Sampler"), wf.inputs(g, "Low Noise Sampler")
    assert hi["latent_image"] == [wf.roles["Empty Latent"], 0] and lo["latent_image"] == [wf.roles["High Noise Sampler"], 0]
    assert (hi["end_at_step"], lo["start_at_step"], lo["end_at_step"]) == (3, 3, 6)
    assert hi["positive"] == [wf.roles["Positive Prompt"], 0] and hi["negative"] == [wf.roles["Negative Prompt"], 0]
    assert "v1.1" in wf.inputs(g, "High Noise LoRA")["lora_name"]
    assert wf.inputs(g, "High Noise LoRA")["strength_model"] == 0.8


def test_5b_graph_with_and_without_the_start_image(object_info, tmp_path):
    wf = load_workflow(TI2V5B, load_settings({}).workflows_path)
    assert wf.model_names() == MODEL_SETS["ti2v-5b"].names
    (tmp_path / "wan_job1.png").write_bytes(b"")
    with_image = wf.build(params(image_name="wan_job1.png"))
    text_only = wf.build(params())
    for g in (with_image, text_only):
        ok, body = validate_prompt(g, object_info, tmp_path)
        assert ok, body
        sampler = wf.inputs(g, "Sampler")
        assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (42, 6, 2.5, "dpmpp_2m")
        assert wf.inputs(g, "Shift")["shift"] == 6.0 and wf.inputs(g, "Create Video")["fps"] == 24.0
    assert wf.inputs(with_image, "Video Latent")["start_image"] == [wf.roles["Start Image"], 0]
    assert wf.inputs(with_image, "Start Image")["image"] == "wan_job1.png"
    assert "LoadImage" not in classes(text_only) and "start_image" not in wf.inputs(text_only, "Video Latent")
    assert wf.roles["Start Image"] in wf.graph  # the loaded graph is untouched


# ---------------------------------------------------------------- jobs on partial volumes


def only_sets(root: Path, *sets: str) -> None:
    """Leave only the files of `sets` on the test volume."""
    keep = {m.name for s in sets for m in MODEL_SETS[s].files}
    for m in MANIFEST:
        if m.name not in keep:
            (root / m.folder / m.name).unlink()


@pytest.fixture
def fake(tmp_path, volume):
    """The stand-in lists the files really on the test volume, as ComfyUI does."""
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui", extra_model_paths_config=tmp_path / "extra_model_paths.yaml",
                   scan_models=True) as server:
        yield server


def test_t2v_job_end_to_end(worker_env, fake):
    result = handler({"id": "t2v-1", "input": {"prompt": PROMPT, "aspect_ratio": "9:16", "seed": 5}})
    assert "error" not in result, result
    assert (result["model"], result["graph"], result["width"], result["height"]) == ("14b", "t2v", 480, 832)
    assert (result["length"], result["fps"], result["seed"]) == (81, 16.0, 5)
    g = sent_graph(fake)
    assert "LoadImage" not in classes(g)
    assert not [r for r in fake.requests if r.path == "/upload/image"]  # nothing to upload
    assert result["video"]


def test_5b_jobs_end_to_end(worker_env, fake):
    text = handler({"id": "5b-t", "input": {"prompt": PROMPT, "model": "5b", "seed": 1}})
    assert "error" not in text, text
    assert (text["model"], text["graph"], text["width"], text["height"], text["fps"], text["length"]) == \
        ("5b", "ti2v5b", 1280, 704, 24.0, 121)
    assert "LoadImage" not in classes(sent_graph(fake))
    image = handler({"id": "5b-i", "input": {"prompt": PROMPT, "model": "5b", "image": png_b64(64, 96)}})
    assert "error" not in image, image
    assert image["width"] % 32 == 0 and image["height"] % 32 == 0 and image["height"] > image["width"]
    g = sent_graph(fake)
    [latent] = [n for n in g.values() if n["class_type"] == "Wan22ImageToVideoLatent"]
    assert latent["inputs"]["start_image"][0] in g


@pytest.mark.parametrize("present, served, refused_job", [
    (("i2v-14b",), {"i2v", "flf2v"}, {"prompt": PROMPT}),
    (("t2v-14b",), {"t2v"}, {"prompt": PROMPT, "image": png_b64()}),
    (("ti2v-5b",), {"ti2v5b"}, {"prompt": PROMPT}),
])
def test_a_volume_with_one_set_serves_its_jobs_and_names_the_others_missing_set(
        worker_env, fake, volume, present, served, refused_job):
    only_sets(volume, *present)
    jobs = {"i2v": {"image": png_b64()}, "flf2v": {"image": png_b64(), "end_image": png_b64()},
            "t2v": {}, "ti2v5b": {"model": "5b"}}
    for graph, fields in jobs.items():
        result = handler({"id": f"mixed-{graph}", "input": {"prompt": PROMPT, "dry_run": True, **fields}})
        assert result["graph"] == graph and result["checks"]["models"]["ok"] is (graph in served), result
        sets = result["checks"]["model_sets"]
        assert {name for name, s in sets.items() if s["complete"]} == set(present)
    result = handler({"id": "mixed-refused", "input": refused_job})
    assert result["error_code"] == "MODELS_MISSING"
    wanted = parse_input(refused_job, max_timeout_s=900).spec.model_set
    assert f"of set {wanted}" in result["error"] and result["details"]["set"] == wanted
    assert f"--set {wanted}" in result["error"] and f"AUTO_DOWNLOAD_MODELS={wanted}" in result["error"]
    missing = {d["file"] for d in result["details"]["missing"]}
    assert missing == {m.rel_path for m in MODEL_SETS[wanted].files} - {
        m.rel_path for s in present for m in MODEL_SETS[s].files}
    assert not [r for r in fake.requests if r.method == "POST"]  # nothing queued, nothing uploaded


def test_a_job_checks_only_its_own_sets_files(worker_env, volume, monkeypatch):
    """A damaged 5B file does not stop a T2V job, and the other way round."""
    path = volume / "vae" / "wan2.2_vae.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    settings = load_settings()
    assert check_volume(settings, MODEL_SETS["t2v-14b"].names, "t2v-14b").ok
    report = check_volume(settings, MODEL_SETS["ti2v-5b"].names, "ti2v-5b")
    assert [f.model.rel_path for f in report.damaged] == ["vae/wan2.2_vae.safetensors"]
    result = handler({"id": "dmg", "input": {"prompt": PROMPT, "model": "5b"}})
    assert result["error_code"] == "MODEL_DAMAGED" and result["details"]["set"] == "ti2v-5b"


def test_dry_run_of_each_kind_shows_model_graph_and_every_set(worker_env, fake, tmp_path):
    for fields, graph in (({}, "t2v"), ({"model": "5b"}, "ti2v5b"), ({"model": "5b", "image": png_b64()}, "ti2v5b")):
        result = handler({"id": "dry", "input": {"prompt": PROMPT, "dry_run": True, **fields}})
        assert result["dry_run"] is True and result["graph"] == graph, result
        assert set(result["checks"]["model_sets"]) == set(MODEL_SETS)
        assert result["checks"]["models"]["set"] == MODEL_SETS[spec_for(result["model"], "image" in fields).model_set].name
        assert ("image" in result["checks"]) is ("image" in fields)
        assert result["workflow"]
    assert fake.requests == []


def test_models_cli_reports_a_partial_volume_per_set(tmp_path, monkeypatch, capsys):
    from wan_worker import models

    root = tmp_path / "models"
    for m in MODEL_SETS["ti2v-5b"].files:
        write_safetensors(root / m.folder / m.name)
    yaml = model_paths_yaml(tmp_path / "extra_model_paths.yaml", root)
    monkeypatch.setenv("EXTRA_MODEL_PATHS", str(yaml))
    monkeypatch.setenv("COMFY_DIR", str(tmp_path / "comfyui"))
    assert models.main([]) == 1
    out = capsys.readouterr().out
    assert "COMPLETE   ti2v-5b" in out and "INCOMPLETE i2v-14b" in out and "INCOMPLETE t2v-14b" in out
    assert "This volume can serve: text- and image-to-video, model 5b [ti2v-5b]." in out
    assert "--set i2v-14b,t2v-14b" in out
    assert models.main(["--set", "ti2v-5b"]) == 0
    capsys.readouterr()
    assert models.main(["--set", "t2v-14b"]) == 1
    assert models.main(["--set", "x"]) == 2 and "unknown: x" in capsys.readouterr().err
    assert models.main(["--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["sets"]["ti2v-5b"]["complete"] is True and data["sets"]["i2v-14b"]["missing"]


def test_5b_progress_has_one_sampling_phase(worker_env, fake, monkeypatch):
    """One model, one KSampler: `sampling` (10-90 %) instead of the two expert phases."""
    import functools

    from wan_worker import handler as handler_module
    from wan_worker.progress import Progress

    updates: list[dict] = []
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, interval_s=0.0))
    monkeypatch.setattr(handler_module, "progress_sender", lambda w, raw: updates.append)
    assert "error" not in handler({"id": "5b-p", "input": {"prompt": PROMPT, "model": "5b", "steps": 3}})
    phases = list(dict.fromkeys(u["phase"] for u in updates))
    assert "sampling" in phases and not {"sampling_high", "sampling_low"} & set(phases), phases
    steps = [u for u in updates if u["phase"] == "sampling" and "step" in u]
    assert steps and steps[-1]["steps"] == 3 and 10 <= steps[-1]["percent"] <= 90
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents)
