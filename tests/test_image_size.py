"""scripts/image_size.py (make image-size): the table and the limits. The measuring itself needs a
Docker engine and an image; CI's container tier runs it on the real image (.ci/run)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "image_size.py"
spec = importlib.util.spec_from_file_location("image_size", SCRIPT)
image_size = importlib.util.module_from_spec(spec)
sys.modules["image_size"] = image_size  # dataclasses look their module up there
spec.loader.exec_module(image_size)
GB = 10**9


def test_a_layer_is_named_by_its_command_without_the_builders_prefixes():
    made = ("|4 PIP_CERT=/etc/ssl/certs/ca-certificates.crt TORCH_INDEX_URL= TORCH_VERSION=2.8.0 "
            "/bin/bash -o pipefail -c python3 -m venv /opt/venv  && /opt/venv/bin/pip install torch")
    assert image_size.short(made) == "python3 -m venv /opt/venv && /opt/venv/bin/pip install torch"
    assert image_size.short("/bin/sh -c #(nop) COPY dir:abc in /comfyui") == "COPY dir:abc in /comfyui"
    assert image_size.short("") == "(the base image)"
    assert len(image_size.short("RUN " + "x" * 200)) == 80


@pytest.mark.parametrize(("size", "packed", "code"), [(7.5, 4.6, 0), (8.6, 4.6, 1), (7.5, 5.1, 1)])
def test_it_fails_above_either_limit(monkeypatch, capsys, size: float, packed: float, code: int):
    layers = [image_size.Layer(int(size * GB) - 100, int(packed * GB) - 50, "pip install torch"),
              image_size.Layer(100, 50, "COPY entrypoint.sh /entrypoint.sh")]
    monkeypatch.setattr(image_size, "measure", lambda image: (int(size * GB), layers))
    assert image_size.main(["wan-worker:dev"]) == code
    out, err = capsys.readouterr()
    assert "| 1 |" in out and "`pip install torch`" in out and f"| all | {size:.2f} GB | {packed:.2f} GB |" in out
    assert ("above the limit" in err) == bool(code)
