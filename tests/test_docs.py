"""The docs hold one copy of each fact and it agrees with the code: every setting (name and default) in
docs/settings.md and .runpod/hub.json, every model file in docs/models.md as the manifest has it, every
error code in docs/troubleshooting.md, and every link between README.md and docs/ lands on a heading."""
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


def settings_table() -> dict[str, str]:
    """docs/settings.md's rows: variable -> its default cell."""
    text = (REPO / "docs/settings.md").read_text()
    return dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]*) \|", text, flags=re.M))


def test_every_setting_is_in_the_settings_table():
    missing = settings_read() - set(settings_table())
    assert not missing, f"add to docs/settings.md: {sorted(missing)}"


def test_the_settings_table_gives_the_code_s_defaults():
    """A default is written as a value (the first `...` of its cell) and is the dataclass's; an empty one is
    described instead ("from the endpoint URL", `<COMFY_DIR>/...`)."""
    table = settings_table()
    for f in dataclasses.fields(Settings):
        cell, default = table[f.name.upper()].strip(), f.default
        shown = re.match(r"`([^`]*)`", cell)
        if default in ("", None):
            continue
        assert shown, f"{f.name.upper()}: docs/settings.md should show its default `{default}`"
        value = shown.group(1)
        if isinstance(default, bool):
            assert value == str(default).lower(), f.name
        elif isinstance(default, (int, float)):
            assert float(value) == float(default), f"{f.name.upper()}: docs say {value}, code {default}"
        else:
            assert value == str(default), f"{f.name.upper()}: docs say {value}, code {default}"


def test_the_model_table_is_the_manifest():
    from wan_worker.models import MANIFEST, MODEL_SETS

    text = (REPO / "docs/models.md").read_text()
    rows = {(folder, name, tuple(re.findall(r"`([a-z0-9-]+)`", sets)))
            for folder, name, sets in re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \| [^|]+ \| ([^|]+) \|$",
                                                 text, flags=re.M)}
    want = {(m.folder, m.name, tuple(s.name for s in MODEL_SETS.values() if m in s.files)) for m in MANIFEST}
    assert rows == want, f"docs/models.md's file table differs from the manifest: {rows ^ want}"
    for s in MODEL_SETS.values():
        assert f"| `{s.name}` |" in text, f"docs/models.md's set table lacks {s.name}"


def test_every_setting_is_in_hub_json():
    hub = json.loads((REPO / ".runpod/hub.json").read_text())
    keys = {e["key"] for e in hub["config"]["env"]}
    missing = settings_read() - PLATFORM_SET - keys
    assert not missing, f"add to .runpod/hub.json: {sorted(missing)}"


def test_troubleshooting_names_every_error_code():
    from wan_worker import errors
    codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", troubleshooting(), flags=re.M))
    assert codes - table == set(), f"add to docs/troubleshooting.md: {sorted(codes - table)}"


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
    return (REPO / "docs/troubleshooting.md").read_text()


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


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "bench/results").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_link_lands(page):
    """README, docs/ and bench/results/ link to each other by file and heading; a moved section leaves no link behind."""
    broken = []
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: links to nowhere: {broken}"


def test_the_readme_starts():
    """What a newcomer reads first stays short; the rest lives in docs/, one page per subject."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md is {len(lines)} lines; move reference into docs/"
