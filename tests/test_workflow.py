"""The bundled workflow: every role present, valid against ComfyUI 0.3.64's real node schemas,
and a job's values land where they belong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_worker.errors import STARTUP_FAILED, WorkerError
from wan_worker.models import MANIFEST
from wan_worker.settings import load_settings
from wan_worker.workflow import ROLES, I2VParams, build_i2v, load_workflow
from tests.fakecomfy.validate import validate_prompt

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def wf():
    return load_workflow(load_settings({}).workflow_file)


@pytest.fixture(scope="module")
def object_info():
    return json.loads((FIXTURES / "object_info.json").read_text())


def params(**over) -> I2VParams:
    base = dict(image_name="wan_job1.png", prompt="a fox runs", negative_prompt=None, seed=123456789012345,
                width=848, height=480, length=49, fps=24.0, steps=6, cfg=1.5, shift=6.0, lora_strength=0.8,
                switch_step=3, sampler="dpmpp_2m", scheduler="karras", filename_prefix="video/wan_job1")
    return I2VParams(**{**base, **over})


def test_every_role_is_found_once(wf):
    assert set(wf.roles) == set(ROLES)
    assert len(set(wf.roles.values())) == len(ROLES)


def test_bundled_graph_passes_comfyui_validation(wf, object_info, tmp_path):
    (tmp_path / "example.png").write_bytes(b"")
    ok, body = validate_prompt(wf.graph, object_info, tmp_path)
    assert ok, body


def test_job_graph_passes_comfyui_validation(wf, object_info, tmp_path):
    (tmp_path / "wan_job1.png").write_bytes(b"")
    for p in (params(), params(lora_strength=0.0, steps=20, switch_step=10, cfg=3.5, shift=8.0)):
        ok, body = validate_prompt(build_i2v(wf, p), object_info, tmp_path)
        assert ok, body


def test_workflow_loads_exactly_the_manifest_models(wf):
    assert wf.model_names() == {m.name for m in MANIFEST}


def test_job_values_are_applied_by_role(wf):
    g = build_i2v(wf, params())
    node = lambda role: g[wf.roles[role]]["inputs"]  # noqa: E731
    assert node("Start Image")["image"] == "wan_job1.png"
    assert node("Positive Prompt")["text"] == "a fox runs"
    assert node("Negative Prompt")["text"] == wf.default_negative_prompt
    assert (node("Image To Video")["width"], node("Image To Video")["height"], node("Image To Video")["length"]) \
        == (848, 480, 49)
    assert node("Create Video")["fps"] == 24.0
    assert node("High Noise Shift")["shift"] == node("Low Noise Shift")["shift"] == 6.0
    assert node("High Noise LoRA")["strength_model"] == node("Low Noise LoRA")["strength_model"] == 0.8
    hi, lo = node("High Noise Sampler"), node("Low Noise Sampler")
    assert (hi["start_at_step"], hi["end_at_step"], lo["start_at_step"], lo["end_at_step"]) == (0, 3, 3, 6)
    assert hi["noise_seed"] == lo["noise_seed"] == 123456789012345
    for s in (hi, lo):
        assert (s["steps"], s["cfg"], s["sampler_name"], s["scheduler"]) == (6, 1.5, "dpmpp_2m", "karras")
    assert (hi["add_noise"], lo["add_noise"]) == ("enable", "disable")
    assert node("Save Video")["filename_prefix"] == "video/wan_job1"
    assert (node("Save Video")["format"], node("Save Video")["codec"]) == ("mp4", "h264")


def test_negative_prompt_override_and_original_untouched(wf):
    before = json.dumps(wf.graph, sort_keys=True)
    g = build_i2v(wf, params(negative_prompt="blurry"))
    assert g[wf.roles["Negative Prompt"]]["inputs"]["text"] == "blurry"
    assert json.dumps(wf.graph, sort_keys=True) == before


def test_node_ids_do_not_matter(wf, tmp_path):
    renumbered = {}
    mapping = {old: str(1000 + i) for i, old in enumerate(wf.graph)}
    for old, node in wf.graph.items():
        node = json.loads(json.dumps(node))
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and v[0] in mapping:
                node["inputs"][k] = [mapping[v[0]], v[1]]
        renumbered[mapping[old]] = node
    path = tmp_path / "renumbered.json"
    path.write_text(json.dumps(renumbered))
    other = load_workflow(path)
    assert other.roles["Save Video"] == mapping[wf.roles["Save Video"]]
    g = build_i2v(other, params())
    assert g[other.roles["Start Image"]]["inputs"]["image"] == "wan_job1.png"


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda g: g.pop(next(k for k, n in g.items() if n["_meta"]["title"] == "Save Video")), "Save Video"),
        (lambda g: g[next(k for k, n in g.items() if n["_meta"]["title"] == "VAE")]["_meta"].update(
            title="Positive Prompt"), "Positive Prompt"),
        (lambda g: g[next(k for k, n in g.items() if n["_meta"]["title"] == "Decode")].update(
            class_type="VAEDecodeTiled"), "Decode"),
    ],
)
def test_broken_workflow_is_a_clear_startup_error(wf, tmp_path, mutate, needle):
    g = json.loads(json.dumps(wf.graph))
    mutate(g)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(g))
    with pytest.raises(WorkerError) as info:
        load_workflow(path)
    assert info.value.code == STARTUP_FAILED and needle in info.value.message


def test_unreadable_and_ui_format_workflows(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    for path, needle in ((bad, "JSON"), (ui, "API format"), (tmp_path / "missing.json", "JSON")):
        with pytest.raises(WorkerError) as info:
            load_workflow(path)
        assert needle in info.value.message
