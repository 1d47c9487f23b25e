"""The bundled graphs: every role present, valid against ComfyUI 0.3.64's real node schemas,
a job's values land where they belong, and user LoRAs chain after the LightX2V LoRAs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_worker.errors import STARTUP_FAILED, WorkerError
from wan_worker.models import MANIFEST, MODEL_SETS, PREPROCESS_FILES, POSTPROCESS_FILES
from wan_worker.settings import load_settings
from wan_worker.graphs import FLF2V, GRAPHS, I2V, VideoParams
from wan_worker.workflow import LoraNode, Workflow, load_workflow
from tests.fakecomfy.validate import validate_prompt

FIXTURES = Path(__file__).parent / "fixtures"


ROLES = I2V.roles


@pytest.fixture(scope="module")
def wf():
    return load_workflow(I2V, load_settings({}).workflows_path)


@pytest.fixture(scope="module")
def flf():
    return load_workflow(FLF2V, load_settings({}).workflows_path)


def build_i2v(wf: Workflow, p: VideoParams) -> dict:
    return wf.build(p)


@pytest.fixture(scope="module")
def object_info():
    return json.loads((FIXTURES / "object_info.json").read_text())


def params(**over) -> VideoParams:
    base = dict(image_name="wan_job1.png", prompt="a fox runs", negative_prompt=None, seed=123456789012345,
                width=848, height=480, length=49, fps=24.0, steps=6, cfg=1.5, shift=6.0, lora_strength=0.8,
                switch_step=3, sampler="dpmpp_2m", scheduler="karras", filename_prefix="video/wan_job1")
    return VideoParams(**{**base, **over})


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


def test_workflow_loads_exactly_the_files_of_its_model_set(wf):
    assert wf.model_names() == MODEL_SETS["i2v-14b"].names


def test_job_values_are_applied_by_role(wf):
    g = build_i2v(wf, params())
    node = lambda role: g[wf.roles[role]]["inputs"]  # noqa: E731
    assert node("Start Image")["image"] == "wan_job1.png"
    assert node("Positive Prompt")["text"] == "a fox runs"
    assert node("Negative Prompt")["text"] == wf.default("Negative Prompt", "text")
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
    path = tmp_path / I2V.file
    path.write_text(json.dumps(renumbered))
    other = load_workflow(I2V, tmp_path)
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
    path = tmp_path / I2V.file
    path.write_text(json.dumps(g))
    with pytest.raises(WorkerError) as info:
        load_workflow(I2V, tmp_path)
    assert info.value.code == STARTUP_FAILED and needle in info.value.message


def test_unreadable_and_ui_format_workflows(tmp_path):
    for n, (content, needle) in enumerate((("{not json", "JSON"), (json.dumps({"nodes": [], "links": []}),
                                                                    "API format"), (None, "JSON"))):
        folder = tmp_path / str(n)
        folder.mkdir()
        if content is not None:
            (folder / I2V.file).write_text(content)
        with pytest.raises(WorkerError) as info:
            load_workflow(I2V, folder)
        assert needle in info.value.message and "WORKFLOWS_DIR" in info.value.message


# -- first-last-frame and user LoRAs -----------------------------------------------------------

def test_every_bundled_graph_loads_with_its_roles_and_the_files_of_its_set():
    for spec in GRAPHS:
        loaded = load_workflow(spec, load_settings({}).workflows_path)
        assert set(loaded.roles) == set(spec.roles)
        outside = {m.name for m in PREPROCESS_FILES}  # in a set, but loaded by the worker, not the graph
        assert loaded.model_names() == MODEL_SETS[spec.model_set].names - outside, spec.name
    # every manifest file is loaded by some bundled graph, except the preprocessing models the worker
    # loads itself (wan_worker.preprocess) and the post-processing block's, which any graph gains
    graph_files = {m.name for m in MANIFEST} - {m.name for m in (*PREPROCESS_FILES, *POSTPROCESS_FILES)}
    assert set().union(*(MODEL_SETS[s.model_set].names - {m.name for m in PREPROCESS_FILES}
                         for s in GRAPHS)) == graph_files


def test_flf2v_job_graph_passes_comfyui_validation(flf, object_info, tmp_path):
    for name in ("wan_job1.png", "wan_job1_end.jpg"):
        (tmp_path / name).write_bytes(b"")
    g = flf.build(params(end_image_name="wan_job1_end.jpg"))
    ok, body = validate_prompt(g, object_info, tmp_path)
    assert ok, body
    node = lambda role: g[flf.roles[role]]["inputs"]  # noqa: E731
    video = node("First Last Frame To Video")
    assert (video["width"], video["height"], video["length"]) == (848, 480, 49)
    assert video["start_image"] == [flf.roles["Start Image"], 0]
    assert video["end_image"] == [flf.roles["End Image"], 0]
    assert node("End Image")["image"] == "wan_job1_end.jpg"
    assert node("Start Image")["image"] == "wan_job1.png"


def lora_chain(g: dict, start: str) -> list[str]:
    """Follow the model links from the shift node back to the loader: the LoRA names in order."""
    names, node = [], g[start]["inputs"]["model"][0]
    while g[node]["class_type"] == "LoraLoaderModelOnly":
        names.append(g[node]["inputs"]["lora_name"])
        node = g[node]["inputs"]["model"][0]
    return names[::-1]


@pytest.mark.parametrize("strength", [1.0, 0.0])  # fast and quality mode alike
def test_user_loras_chain_after_the_lightx2v_lora_of_their_expert(wf, object_info, tmp_path, strength):
    (tmp_path / "wan_job1.png").write_bytes(b"")
    info = json.loads(json.dumps(object_info))
    lora_list = info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0]
    lora_list += ["style/a.safetensors", "wan-worker-cache/abc.safetensors", "b.safetensors"]
    loras = [LoraNode("high", "style/a.safetensors", 0.7), LoraNode("low", "style/a.safetensors", 0.7),
             LoraNode("high", "wan-worker-cache/abc.safetensors", -1.5), LoraNode("low", "b.safetensors", 2.0)]
    g = wf.build(params(lora_strength=strength), loras)
    ok, body = validate_prompt(g, info, tmp_path)
    assert ok, body
    light_hi = wf.inputs(wf.graph, "High Noise LoRA")["lora_name"]
    light_lo = wf.inputs(wf.graph, "Low Noise LoRA")["lora_name"]
    assert lora_chain(g, wf.roles["High Noise Shift"]) == [light_hi, "style/a.safetensors",
                                                           "wan-worker-cache/abc.safetensors"]
    assert lora_chain(g, wf.roles["Low Noise Shift"]) == [light_lo, "style/a.safetensors", "b.safetensors"]
    strengths = sorted(n["inputs"]["strength_model"] for n in g.values()
                       if n["_meta"]["title"].startswith("User LoRA"))
    assert strengths == [-1.5, 0.7, 0.7, 2.0]
    assert wf.inputs(g, "High Noise LoRA")["strength_model"] == strength
    segment_block = len(wf.spec.repeat.block)  # removed: a job without `segments` is one plain part
    assert len(g) == len(wf.graph) - segment_block + 4


def test_isolate_outputs_changes_only_the_save_nodes_of_a_copy():
    import copy

    from wan_worker.workflow import isolate_outputs

    graph = {"1": {"class_type": "LoadVideo", "inputs": {"file": "a.mp4"}},
             "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "/video/out"}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "still"}}}
    before = copy.deepcopy(graph)
    out = isolate_outputs(graph, "wan-worker-p1")
    assert graph == before  # the client's (or the bundled) graph is left as it was
    assert out["2"]["inputs"] == {"video": ["1", 0], "filename_prefix": "wan-worker-p1/video/out"}
    assert out["3"]["inputs"]["filename_prefix"] == "wan-worker-p1/still"
    assert out["1"] == graph["1"] and out["2"]["class_type"] == "SaveVideo"
