"""Every setting the code reads is documented: in the README's table and in .runpod/hub.json."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

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
