"""`wan-video --segment PROMPT[:LENGTH]` and `--segments FILE.json`: a story in one job.

The client's real argparse and job building, against the stand-in of RunPod's API
(tests/fakerunpod.py): what `segments` it sends, the usage errors that send nothing, and how a
segmented job's progress and result read.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakerunpod import ENDPOINT_ID, FakeRunPod, success_output
from tests.test_client import FAST, image, rp, wan  # noqa: F401 - the client tests' fixtures and runner
from wan_worker.client.cli import EXIT_USAGE, main, parse_segment
from wan_worker.client.display import State
from wan_worker.client.results import _shape

def sent_inputs(fake: FakeRunPod) -> list[dict]:
    return [r.json["input"] for r in fake.requests if r.path.endswith("/run")]


def progress_lines(err: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[")]


# -- from options to `segments` ----------------------------------------------------------------

def test_two_segment_options_become_the_segments_list_in_order(rp, image, tmp_path, capsys):
    code, _, stderr = wan(capsys, str(image), "--segment", "the cat wakes up", "--segment", "it stretches:49",
                          "--seed", "5", "-o", str(tmp_path / "story.mp4"))
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent == {"image": base64.b64encode(image.read_bytes()).decode(), "seed": 5,
                    "segments": [{"prompt": "the cat wakes up"}, {"prompt": "it stretches", "length": 49}]}
    assert "prompt" not in sent  # no PROMPT needed: each segment brings its own


def test_the_job_prompt_is_still_sent_for_segments_without_one(rp, tmp_path, capsys):
    code, _, stderr = wan(capsys, "--prompt", "a cat in a sunny room", "--segment", ":49", "--segment", "it sleeps",
                          "-o", str(tmp_path / "o.mp4"))
    assert code == 0, stderr
    [sent] = sent_inputs(rp)
    assert sent == {"prompt": "a cat in a sunny room", "segments": [{"length": 49}, {"prompt": "it sleeps"}]}


@pytest.mark.parametrize("text, segment", [
    ("it stretches:49", {"prompt": "it stretches", "length": 49}),
    ("a cat: walks:49", {"prompt": "a cat: walks", "length": 49}),  # only the last `:N` is the length
    ("a cat: walks", {"prompt": "a cat: walks"}),  # a colon before text stays in the prompt
    ("ratio 16:9 then:81", {"prompt": "ratio 16:9 then", "length": 81}),
    ("it stretches: 49", {"prompt": "it stretches", "length": 49}),
    ("walks:49 frames", {"prompt": "walks:49 frames"}),
    ("walks:4.5", {"prompt": "walks:4.5"}),  # not an integer
    ("walks:", {"prompt": "walks:"}),
    (":49", {"length": 49}),  # no prompt of its own: the job's
    ("the cat wakes up", {"prompt": "the cat wakes up"}),
])
def test_a_trailing_integer_after_a_colon_is_the_length(text, segment):
    assert parse_segment(text) == segment


def test_segments_file_as_a_list_or_an_object_is_sent_as_given(rp, image, tmp_path, capsys):
    story = [{"prompt": "the cat wakes up", "seed": 9},
             {"prompt": "it stretches", "length": 49, "negative_prompt": "blurry"},
             {"prompt": "it walks away", "loras": [{"name": "walk.safetensors", "strength": 0.8}]}]
    as_list, as_object = tmp_path / "story.json", tmp_path / "story-object.json"
    as_list.write_text(json.dumps(story))
    as_object.write_text(json.dumps({"segments": story}))
    for path in (as_list, as_object):
        code, _, stderr = wan(capsys, str(image), "a cat", "--segments", str(path), "-o", str(tmp_path / "o.mp4"))
        assert code == 0, stderr
    assert [sent["segments"] for sent in sent_inputs(rp)] == [story, story]
    assert [sent["prompt"] for sent in sent_inputs(rp)] == ["a cat", "a cat"]


def test_text_to_video_story_needs_neither_image_nor_prompt(rp, tmp_path, capsys):
    story = tmp_path / "story.json"
    story.write_text(json.dumps([{"prompt": "a boat at dawn"}, {"prompt": "the sun rises", "length": 49}]))
    assert wan(capsys, "--segments", str(story), "-o", str(tmp_path / "a.mp4"))[0] == 0
    assert wan(capsys, "-", "--segment", "a boat at dawn", "-o", str(tmp_path / "b.mp4"))[0] == 0
    assert wan(capsys, "--set", 'segments=[{"prompt": "a boat"}]', "-o", str(tmp_path / "c.mp4"))[0] == 0
    assert sent_inputs(rp) == [
        {"segments": [{"prompt": "a boat at dawn"}, {"prompt": "the sun rises", "length": 49}]},
        {"segments": [{"prompt": "a boat at dawn"}]},
        {"segments": [{"prompt": "a boat"}]},
    ]


def test_the_worker_checks_the_segments_not_the_client(rp, tmp_path, capsys):
    """A length that is not 4n+1 is sent: the worker refuses it by name (`segments[0].length`)."""
    assert wan(capsys, "--segment", "a boat:80", "-o", str(tmp_path / "o.mp4"))[0] == 0
    assert sent_inputs(rp) == [{"segments": [{"prompt": "a boat", "length": 80}]}]


def test_segments_are_defaults_for_every_batch_line(rp, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "a cat"}) + "\n"
                    + json.dumps({"prompt": "a dog", "segments": [{"prompt": "it barks"}]}) + "\n")
    code = main(["--jobs", str(jobs), "--out-dir", str(tmp_path / "out"), "--segment", "it sits",
                 "--endpoint", ENDPOINT_ID, *FAST])
    assert code == 0, capsys.readouterr()
    assert sorted((s["prompt"], s["segments"]) for s in sent_inputs(rp)) == [
        ("a cat", [{"prompt": "it sits"}]), ("a dog", [{"prompt": "it barks"}])]


# -- usage errors: exit 2, nothing sent ----------------------------------------------------------

def test_segment_and_segments_together_is_a_usage_error(rp, tmp_path, capsys):
    story = tmp_path / "story.json"
    story.write_text("[]")
    code, _, stderr = wan(capsys, "--segment", "a", "--segments", str(story))
    assert code == EXIT_USAGE and "--segment (repeatable) or --segments FILE.json" in stderr
    assert rp.requests == []


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ('[{"prompt": "a cat"}', "not JSON ("),
    ("", "not JSON ("),
    ('{"prompt": "a cat"}', "give a JSON list of segments"),
    ('"a cat"', "give a JSON list of segments"),
    ('{"segments": {"prompt": "a cat"}}', "give a JSON list of segments"),
])
def test_a_bad_segments_file_is_a_usage_error_naming_it(rp, tmp_path, capsys, content, message):
    path = tmp_path / "story.json"
    if content is not None:
        path.write_text(content)
    code, _, stderr = wan(capsys, "--prompt", "p", "--segments", str(path))
    assert code == EXIT_USAGE, stderr
    assert f"--segments {path}: " in stderr and message in stderr
    assert rp.requests == []


def test_without_segments_a_prompt_is_still_required(rp, image, capsys):
    code, _, stderr = wan(capsys, str(image))
    assert code == EXIT_USAGE and "missing PROMPT" in stderr and "--segment" in stderr
    assert rp.requests == []


# -- progress and the result ------------------------------------------------------------------

def story_script(job_id: str, job_input: dict[str, Any]) -> list[dict[str, Any]]:
    """A two-segment job as the worker reports it: each segment samples high then low."""
    updates = [{"phase": "loading_models", "percent": 0}]
    for segment, base in ((1, 10), (2, 50)):
        for phase, offset in (("sampling_high", 0), ("sampling_low", 20)):
            updates.append({"phase": phase, "segment": segment, "segments": 2, "step": 1, "steps": 1,
                            "percent": base + offset})
    updates += [{"phase": "decoding", "percent": 90}, {"phase": "encoding", "percent": 95}]
    out = success_output(job_id, {**job_input, "length": 129})
    out["segments"] = [{"segment": 1, "first_frame": 0, "frames": 81, "length": 81, "seed": 5},
                       {"segment": 2, "first_frame": 81, "frames": 48, "length": 49, "seed": 6}]
    done = {"status": "COMPLETED", "output": out, "delayTime": 1000, "executionTime": 90000}
    return [{"status": "IN_QUEUE"}, *({"status": "IN_PROGRESS", "output": u} for u in updates), done]


def test_progress_names_the_segment_and_the_summary_counts_them(rp, image, tmp_path, capsys):
    rp.script_for = story_script
    out = tmp_path / "story.mp4"
    code, stdout, stderr = wan(capsys, str(image), "--segment", "the cat wakes up", "--segment", "it stretches:49",
                               "-o", str(out))
    assert code == 0, stderr
    assert progress_lines(stderr) == [
        "sending", "queued", "loading models 0%",
        "sampling (high noise) segment 1/2 1/1 10%", "sampling (low noise) segment 1/2 1/1 30%",
        "sampling (high noise) segment 2/2 1/1 50%", "sampling (low noise) segment 2/2 1/1 70%",
        "decoding 90%", "encoding 95%", "completed",
    ]
    assert f"saved {out} (" in stdout and "848x480, 129 frames at 16 fps = 8.062 s in 2 segments" in stdout

    code, stdout, _ = wan(capsys, str(image), "--segment", "a", "-o", str(out), "--json", "-q")
    assert code == 0 and [s["first_frame"] for s in json.loads(stdout)["segments"]] == [0, 81]


def test_a_segment_update_and_the_segments_count():
    state = State.from_status({"status": "IN_PROGRESS", "output": {
        "phase": "sampling_low", "segment": 2, "segments": 4, "step": 3, "steps": 4, "percent": 60}})
    assert state.part == "segment 2/4" and state.text() == "sampling (low noise) segment 2/4 3/4"
    other = State.from_status({"status": "IN_PROGRESS", "output": {
        "phase": "sampling_low", "segment": 3, "segments": 4, "step": 3, "steps": 4, "percent": 70}})
    assert other.line_key() != state.line_key()  # a new segment is a new plain line
    shape = {"width": 832, "height": 480, "length": 209, "fps": 16.0, "duration_s": 13.062}
    listed = [{"segment": n, "first_frame": 0, "length": 81, "seed": n} for n in (1, 2, 3)]
    assert _shape({**shape, "segments": listed}) == "832x480, 209 frames at 16 fps = 13.062 s in 3 segments"
    assert _shape({**shape, "segments": listed[:1]}).endswith("in 1 segment")
    assert _shape(shape) == "832x480, 209 frames at 16 fps = 13.062 s"
