"""Every rule of the job input contract (request.py)."""
from __future__ import annotations

import json

import pytest

from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.request import I2VRequest, WorkflowRequest, parse_input, resolve_size

BASE = {"image": "aGVsbG8=", "prompt": "a cat walks"}


def parse(**fields):
    return parse_input({**BASE, **fields}, max_timeout_s=900)


def error_of(raw, **kw) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        parse_input(raw, max_timeout_s=900, **kw)
    assert info.value.code == INVALID_INPUT
    return info.value


def test_fast_mode_defaults():
    req = parse()
    assert isinstance(req, I2VRequest)
    assert (req.steps, req.cfg, req.shift, req.switch_step) == (4, 1.0, 5.0, 2)
    assert req.effective_lora_strength == 1.0
    assert (req.length, req.fps, req.sampler, req.scheduler, req.output) == (81, 16.0, "euler", "simple", "auto")
    assert req.seed is None and req.width is None and not req.dry_run


def test_quality_mode_defaults_turn_loras_off():
    req = parse(fast=False)
    assert (req.steps, req.cfg, req.shift, req.switch_step) == (20, 3.5, 8.0, 10)
    assert req.effective_lora_strength == 0.0


def test_explicit_values_win_over_mode_defaults():
    req = parse(fast=False, steps=30, cfg=5, shift=7.5, switch_step=12, lora_strength=0.5)
    assert (req.steps, req.cfg, req.shift, req.switch_step) == (30, 5.0, 7.5, 12)
    assert parse(lora_strength=0.5).effective_lora_strength == 0.5


def test_input_as_json_string_is_accepted():
    req = parse_input(json.dumps({**BASE, "seed": 7}), max_timeout_s=900)
    assert isinstance(req, I2VRequest) and req.seed == 7


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"seed": "5"}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"width": 830}, "width"),
        ({"width": 64}, "width"),
        ({"height": 4096}, "height"),
        ({"length": 80}, "length"),
        ({"length": 1}, "length"),
        ({"length": 1001}, "length"),
        ({"fps": 0}, "fps"),
        ({"fps": "16"}, "fps"),
        ({"steps": 1}, "steps"),
        ({"steps": 500}, "steps"),
        ({"cfg": -1}, "cfg"),
        ({"shift": 101}, "shift"),
        ({"fast": "yes"}, "fast"),
        ({"lora_strength": 9}, "lora_strength"),
        ({"switch_step": 4}, "switch_step"),
        ({"switch_step": 0}, "switch_step"),
        ({"steps": 6, "switch_step": 6}, "switch_step"),
        ({"sampler": "euler_magic"}, "sampler"),
        ({"scheduler": "sometimes"}, "scheduler"),
        ({"output": "ftp"}, "output"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 901}, "timeout_s"),
        ({"dry_run": "true"}, "dry_run"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 5001}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"negative_prompt": ["a"]}, "negative_prompt"),
        ({"image": ""}, "image"),
        ({"image": 12}, "image"),
        ({"colour": "red"}, "colour"),
        ({"end_image": ""}, "end_image"),
        ({"end_image": 5}, "end_image"),
        ({"resolution": "1080p"}, "resolution"),
        ({"resolution": 720}, "resolution"),
        ({"return_last_frame": "yes"}, "return_last_frame"),
        ({"loras": {"name": "a.safetensors"}}, "loras"),
        ({"loras": [{"name": "a.safetensors"}] * 5}, "loras"),
        ({"loras": ["a.safetensors"]}, "loras[0]"),
        ({"loras": [{"name": "../a.safetensors"}]}, "loras[0].name"),
        ({"loras": [{"name": "/abs/a.safetensors"}]}, "loras[0].name"),
        ({"loras": [{"name": "a.ckpt"}]}, "loras[0].name"),
        ({"loras": [{"name": "ftp://host/a.safetensors"}]}, "loras[0].name"),
        ({"loras": [{"name": "a.safetensors", "strength": 4.5}]}, "loras[0].strength"),
        ({"loras": [{"high": "a.safetensors", "high_strength": -5}]}, "loras[0].high_strength"),
        ({"loras": [{"low": "C:\\loras\\a.safetensors"}]}, "loras[0].low"),
        ({"loras": [{"name": "a.safetensors", "high": "b.safetensors"}]}, "loras[0]"),
        ({"loras": [{"high_strength": 1.0, "low": "b.safetensors"}]}, "loras[0]"),
        ({"loras": [{}]}, "loras[0]"),
        ({"loras": [{"name": "a.safetensors", "weight": 1}]}, "loras[0].weight"),
    ],
)
def test_bad_values_name_the_field(fields, field):
    err = error_of({**BASE, **fields})
    assert f"`{field}`" in err.message
    assert err.details["errors"][0]["field"] == field


def test_missing_required_fields_are_named():
    assert parse_input({"prompt": "p"}, max_timeout_s=900).spec.name == "t2v"  # no image: text-to-video
    assert "`prompt` is required" in error_of({"image": "x"}).message


def test_values_are_never_echoed():
    secret = "Zm9v" * 100
    err = error_of({"image": secret, "prompt": "p", "seed": "bad"})
    assert secret not in json.dumps(err.to_result())


def test_several_problems_are_all_listed():
    err = error_of({**BASE, "seed": -1, "length": 80, "junk": 1})
    assert {e["field"] for e in err.details["errors"]} == {"seed", "length", "junk"}
    # in the sentence too: the SDK keeps only the error string for the caller
    assert err.message.count("`seed`") == err.message.count("`length`") == err.message.count("`junk`") == 1


@pytest.mark.parametrize("raw", [None, 5, [1], "not json", ""])
def test_input_must_be_an_object(raw):
    assert "`input`" in error_of(raw).message


def test_s3_output_needs_a_bucket():
    assert "`output`" in error_of({**BASE, "output": "s3"}).message
    assert parse_input({**BASE, "output": "s3"}, max_timeout_s=900, s3_configured=True).output == "s3"


def test_timeout_may_only_lower_the_limit():
    assert parse(timeout_s=30).timeout_s == 30
    assert "JOB_TIMEOUT_S" in error_of({**BASE, "timeout_s": 1000}).message


# -- workflow mode (worker-comfyui compatible) -----------------------------------------------

GRAPH = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


def test_workflow_mode_with_images():
    req = parse_input({"workflow": GRAPH, "images": [{"name": "a.png", "image": "x"},
                                                      {"name": "b.jpg", "image": "y"}]}, max_timeout_s=900)
    assert isinstance(req, WorkflowRequest)
    assert [i.name for i in req.images] == ["a.png", "b.jpg"]


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"workflow": GRAPH, "prompt": "p"}, "workflow"),
        ({"workflow": {}}, "workflow"),
        ({"workflow": {"nodes": [], "links": []}}, "workflow"),
        ({"workflow": {"1": {"inputs": {}}}}, "workflow"),
        ({"workflow": "graph"}, "workflow"),
        ({"workflow": GRAPH, "images": [{"name": "../etc/passwd", "image": "x"}]}, "images[0].name"),
        ({"workflow": GRAPH, "images": [{"name": "a/b.png", "image": "x"}]}, "images[0].name"),
        ({"workflow": GRAPH, "images": [{"name": "a.png"}]}, "images[0].image"),
        ({"workflow": GRAPH, "images": [{"name": "a.png", "image": "x", "extra": 1}]}, "images[0].extra"),
        ({"workflow": GRAPH, "images": [{"name": "a.png", "image": "x"}, {"name": "a.png", "image": "y"}]},
         "images"),
        ({"workflow": GRAPH, "steps": 4}, "steps"),
    ],
)
def test_workflow_mode_errors(raw, field):
    err = error_of(raw)
    assert err.details["errors"][0]["field"] == field


# -- size from the image's aspect ratio ------------------------------------------------------

@pytest.mark.parametrize(
    "image, expected",
    [((1920, 1080), (848, 480)), ((1080, 1920), (480, 848)), ((1024, 1024), (624, 624)),
     ((832, 480), (832, 480)), ((100, 10000), (128, 1920))],
)
def test_size_follows_aspect_ratio_at_480p_area(image, expected):
    w, h = resolve_size(parse(), *image)
    assert (w, h) == expected
    assert w % 16 == 0 and h % 16 == 0


def test_one_side_given_the_other_follows():
    assert resolve_size(parse(width=1280), 1920, 1080) == (1280, 720)
    assert resolve_size(parse(height=720), 1920, 1080) == (1280, 720)
    assert resolve_size(parse(width=640, height=640), 1920, 1080) == (640, 640)


def test_lora_forms_and_defaults():
    req = parse(loras=[{"name": "style/a.safetensors"}, {"high": "https://huggingface.co/u/r/resolve/main/h.safetensors",
                                                          "low": "b.safetensors", "low_strength": -0.5},
                       {"low": "c.sft", "low_strength": 0}])
    assert [e.per_expert() for e in req.loras] == [
        [("high", "style/a.safetensors", 1.0, "name"), ("low", "style/a.safetensors", 1.0, "name")],
        [("high", "https://huggingface.co/u/r/resolve/main/h.safetensors", 1.0, "high"),
         ("low", "b.safetensors", -0.5, "low")],
        [("low", "c.sft", 0.0, "low")],
    ]


def test_new_fields_defaults():
    req = parse()
    assert (req.end_image, req.loras, req.return_last_frame, req.resolution) == (None, [], False, "480p")
