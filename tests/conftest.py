"""Shared fixtures: a model volume of tiny valid safetensors files, a stand-in ComfyUI, and the
worker's environment pointed at both."""
from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
from pathlib import Path

import pytest
from PIL import Image

from wan_worker import handler as handler_module
from wan_worker.models import MANIFEST
from tests.fakehub import torch_zip_bytes


def files_under(*roots: Path | str) -> list[Path]:
    """Every file below the roots, sorted. os.walk passes over a folder that vanishes while it
    walks (rglob raises): the worker removes a finished run's emptied folder on its background
    thread right after handing back the result (wan_worker.background)."""
    return sorted(Path(d) / f for root in roots for d, _, names in os.walk(root) for f in names)


FIXTURES = Path(__file__).parent / "fixtures"


def write_safetensors(path: Path, payload: bytes = b"\0" * 16) -> Path:
    """A small but real safetensors file: 8-byte header length, JSON header, tensor bytes."""
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [len(payload) // 4], "data_offsets": [0, len(payload)]}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + payload)
    return path


WAN_LORA_KEYS = ("diffusion_model.blocks.0.self_attn.q.lora_down.weight",
                 "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
                 "diffusion_model.blocks.0.self_attn.q.alpha")


def write_lora(path: Path, keys: tuple[str, ...] = WAN_LORA_KEYS, tensor_bytes: int = 16) -> Path:
    """A small safetensors file with the given tensor names (Wan-style by default)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    for n, key in enumerate(keys):
        header[key] = {"dtype": "F32", "shape": [tensor_bytes // 4],
                       "data_offsets": [n * tensor_bytes, (n + 1) * tensor_bytes]}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * tensor_bytes * len(keys))
    return path


def png_b64(width: int = 96, height: int = 54, color=(200, 80, 40), fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def model_paths_yaml(path: Path, root: Path) -> Path:
    """An extra_model_paths.yaml with one layout: `root/<folder>` for the manifest's model folders."""
    path.write_text(
        "test_volume:\n"
        f"  base_path: {root}\n"
        "  is_default: true\n"
        "  diffusion_models: diffusion_models\n"
        "  loras: loras\n"
        "  text_encoders: text_encoders\n"
        "  vae: vae\n"
        "  audio_encoders: audio_encoders\n"
        "  clip_vision: clip_vision\n"
        "  detection: detection\n"
        "  frame_interpolation: frame_interpolation\n"
        "  upscale_models: upscale_models\n"
    )
    return path


def sigint_as_in_a_terminal() -> None:
    """preexec_fn for a child a test will Ctrl-C. A shell that starts the test run in the
    background (`make test &`, nohup) makes it ignore SIGINT, children inherit that, and Python
    then installs no KeyboardInterrupt handler: the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def mark_tier(items: list[pytest.Item], folder: Path, marker: str, timeout_s: float) -> None:
    """Every test under `folder` gets `marker` (make test deselects the slow tiers by it) and a
    per-test timeout that covers their fixtures' minutes."""
    for item in items:
        if folder in Path(str(item.fspath)).parents:
            item.add_marker(getattr(pytest.mark, marker))
            item.add_marker(pytest.mark.timeout(timeout_s))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A models folder holding all six files, and the extra_model_paths.yaml that points at it."""
    root = tmp_path / "volume" / "models"
    for m in MANIFEST:
        if m.name.endswith(".onnx"):  # the preprocessing models: the start of an ONNX ModelProto
            (root / m.folder).mkdir(parents=True, exist_ok=True)
            (root / m.folder / m.name).write_bytes(b"\x08\x08" + b"\0" * 64)
        elif m.name.endswith(".pth"):  # the post-processing weights: a torch.save zip
            (root / m.folder).mkdir(parents=True, exist_ok=True)
            (root / m.folder / m.name).write_bytes(torch_zip_bytes(m.name, 16))
        else:
            write_safetensors(root / m.folder / m.name)
    model_paths_yaml(tmp_path / "extra_model_paths.yaml", root)
    return root


@pytest.fixture
def fake(tmp_path: Path):
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui") as server:
        yield server


@pytest.fixture
def scanning_fake(tmp_path: Path, volume: Path):
    """The stand-in listing the files really on the test volume, as ComfyUI does."""
    from tests.fakecomfy import FakeComfy

    with FakeComfy(root_dir=tmp_path / "comfyui", extra_model_paths_config=tmp_path / "extra_model_paths.yaml",
                   scan_models=True) as server:
        yield server


def sent_graph(fake) -> dict:
    """The last graph the worker queued on the stand-in."""
    return [r.json for r in fake.requests if r.method == "POST" and r.path == "/prompt"][-1]["prompt"]


LOADERS = (("UNETLoader", "unet_name", "diffusion_models"), ("LoraLoaderModelOnly", "lora_name", "loras"),
           ("CLIPLoader", "clip_name", "text_encoders"), ("VAELoader", "vae_name", "vae"),
           ("AudioEncoderLoader", "audio_encoder_name", "audio_encoders"),
           ("CLIPVisionLoader", "clip_name", "clip_vision"))


def listing(info: dict, model_set: str) -> dict:
    """The object_info fixture's schemas with the loaders listing `model_set`'s files (as a ComfyUI
    with that set on its volume would)."""
    import copy

    from wan_worker.models import MODEL_SETS

    info = copy.deepcopy(info)
    for cls, widget, folder in LOADERS:
        spec = info[cls]["input"]["required"][widget]
        wanted = sorted(m.name for m in MODEL_SETS[model_set].files if m.folder == folder)
        if spec[0] == "COMBO":
            spec[1]["options"] = wanted
        else:
            spec[0] = wanted
    return info


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, volume: Path, fake) -> dict[str, str]:
    """The worker's settings pointed at the stand-in ComfyUI and the test volume."""
    env = {
        "COMFY_HOST": fake.host,
        "COMFY_DIR": str(fake.input_dir.parent),
        "COMFY_PID_FILE": str(tmp_path / "comfyui.pid"),
        "COMFY_START_TIMEOUT_S": "5",
        "EXTRA_MODEL_PATHS": str(tmp_path / "extra_model_paths.yaml"),
        "JOB_TIMEOUT_S": "60",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    handler_module.worker.cache_clear()
    yield env
    handler_module.worker.cache_clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that used a real S3 server shows the server's own log: its reason for an
    error answer (a 404, a 500) is there, not in the client's exception."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        from tests.s3server import S3Server

        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, S3Server):
                report.sections.append(("rclone serve s3 log (last lines)", value.log_tail()))
