"""Every setting the code reads is documented: in the README's table and in .runpod/hub.json."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from wan_worker.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PLATFORM_SET = {"RUNPOD_WEBHOOK_POST_OUTPUT"}  # RunPod sets it; users never do
SHELL_INTERNAL = {"PYTHONPATH", "BASH_SOURCE"}


def settings_read() -> set[str]:
    names = {f.name.upper() for f in dataclasses.fields(Settings)}
    for script in [REPO / "entrypoint.sh", *sorted((REPO / "scripts").glob("*.sh"))]:
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", script.read_text()))
    names.add("HF_TOKEN")  # read by huggingface_hub for our downloads
    return names - SHELL_INTERNAL


def readme_table() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Settings"):text.index("## Troubleshooting")]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.M))


def test_every_setting_is_in_the_readme_table():
    missing = settings_read() - readme_table()
    assert not missing, f"add to README's Settings table: {sorted(missing)}"


def test_every_setting_is_in_hub_json():
    hub = json.loads((REPO / ".runpod/hub.json").read_text())
    keys = {e["key"] for e in hub["config"]["env"]}
    missing = settings_read() - PLATFORM_SET - keys
    assert not missing, f"add to .runpod/hub.json: {sorted(missing)}"


def test_readme_documents_every_error_code():
    from wan_worker import errors
    codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    text = (REPO / "README.md").read_text()
    assert not {c for c in codes if f"`{c}`" not in text}


def test_hub_tests_are_dry_runs_that_validate():
    from wan_worker.request import parse_input
    tests = json.loads((REPO / ".runpod/tests.json").read_text())["tests"]
    assert tests
    for t in tests:
        assert t["input"]["dry_run"] is True
        parse_input(t["input"], max_timeout_s=900)


def _animate(**fields: object) -> dict[str, object]:
    return {"prompt": "dance", "image": "aW1n", "video": "dmlk", **fields}


# An Animate refusal, the field it names and the words of its message the troubleshooting table quotes
ANIMATE_REFUSALS = [
    (_animate(pose_video="cA=="), "face_video", "is missing: `pose_video` was given, so the worker does not preprocess "
                                                "`video`"),
    (_animate(face_video="Zg=="), "pose_video", "was given, so the worker does not preprocess `video`"),
    (_animate(mode="replace", background_video="Yg=="), "background_video", "comes with `pose_video` and `face_video`"),
    (_animate(mode="replace", mask_video="bQ=="), "mask_video", "comes with `pose_video` and `face_video`"),
    (_animate(relight=True), "relight", 'is for `"mode": "replace"`'),
    (_animate(pose_video="cA==", face_video="Zg==", person=1), "person",
     "is for the worker's own preprocessing of `video`"),
    (_animate(pose_video="cA==", face_video="Zg==", return_preprocessed=True), "return_preprocessed",
     "is for the worker's own preprocessing of `video`"),
]


def troubleshooting() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## Troubleshooting"):text.index("## Development")]


@pytest.mark.parametrize("raw, field, words", ANIMATE_REFUSALS)
def test_troubleshooting_quotes_the_animate_refusals(raw, field, words):
    from wan_worker.errors import WorkerError
    from wan_worker.request import parse_input

    with pytest.raises(WorkerError) as info:
        parse_input(raw, max_timeout_s=900)
    assert info.value.details["errors"][0]["field"] == field and words in info.value.message
    assert words in troubleshooting()


def test_troubleshooting_quotes_the_preprocessing_refusals():
    from wan_worker.preprocess import _nobody

    assert "shows no person" in _nobody(None, 0, 5).message
    assert "largest person, but at most" in _nobody(3, 1, 5).message
    assert "`shows no person`" in troubleshooting() and "`largest person, but at most`" in troubleshooting()
