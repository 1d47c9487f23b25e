"""The real-ComfyUI tier: one real ComfyUI for the whole session, with tiny Wan2.2 models.

`make test-comfyui` sets COMFYUI_DIR (any ComfyUI checkout; CI uses ../shared/comfyui/src) and
COMFY_PYTHON (ComfyUI's venv, made by scripts/comfyui-venv.sh). The session copies the checkout into
a temporary folder (so ComfyUI's input/ and output/ are its own, as in the container), fills a
temporary volume with tests/tinywan's files in the first layout of the project's
extra_model_paths.yaml, and starts ComfyUI on 127.0.0.1 with the entrypoint's flags plus --cpu.

A cold text encode costs about a minute on 2 cores; ComfyUI caches it, so every test uses the same
PROMPT and NEGATIVE, and the first job of the session pays for both.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.conftest import files_under, free_port, mark_tier
from wan_worker import handler as handler_module

REPO = Path(__file__).resolve().parents[2]
DEFAULT_COMFYUI_DIR = REPO.parent / "shared" / "comfyui" / "src"
DEFAULT_COMFY_PYTHON = REPO / ".venv-comfyui" / "bin" / "python"
START_TIMEOUT_S = 180
# The same text for every job: the real ComfyUI caches its encodings between prompts.
PROMPT = "a cat turns its head and blinks slowly in the warm light"
NEGATIVE = "bright colors, overexposed, static, blurred details, subtitles, low quality"
# Flags as entrypoint.sh passes them, plus --cpu (no GPU here) and an LRU cache: ComfyUI's default
# cache drops every node result the latest prompt did not use, so a workflow-mode test between two
# I2V tests would cost the next one a cold text encode (a minute or more on 2 cores).
COMFY_FLAGS = ["--disable-auto-launch", "--disable-metadata", "--disable-api-nodes", "--cpu", "--cache-lru", "64"]


# Per test, fixtures included: the test that pays the session's cold text encode takes minutes.
TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/comfyui is the `comfyui` tier (make test deselects it)."""
    mark_tier(items, Path(__file__).parent, "comfyui", TEST_TIMEOUT_S)


def comfyui_dir() -> Path:
    return Path(os.environ.get("COMFYUI_DIR") or DEFAULT_COMFYUI_DIR)


def comfy_python() -> Path:
    return Path(os.environ.get("COMFY_PYTHON") or DEFAULT_COMFY_PYTHON)


def require_comfyui() -> tuple[Path, Path]:
    """The checkout and interpreter; skips when neither was asked for, fails when a given one is wrong."""
    src, python = comfyui_dir(), comfy_python()
    for what, path, ok, var in (("ComfyUI checkout", src, (src / "main.py").is_file(), "COMFYUI_DIR"),
                                ("ComfyUI interpreter", python, python.is_file(), "COMFY_PYTHON")):
        if ok:
            continue
        message = f"no {what} at {path}: run make test-comfyui (it sets {var} and creates .venv-comfyui)"
        if os.environ.get(var):
            pytest.fail(message)
        pytest.skip(message)
    return src, python


def copy_comfyui(src: Path, dest: Path) -> Path:
    """A writable copy of the checkout without its caches or any user files."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {"__pycache__", ".git"}
        if Path(folder) == src:  # ComfyUI's own data folders, not packages like comfy_api/input
            skip |= {"input", "output", "temp", "user"}
        return skip & set(names)

    shutil.copytree(src, dest, ignore=ignore)
    for path in dest.rglob("*"):  # the checkout may be read-only (CI's copy of ../shared)
        path.chmod(path.stat().st_mode | 0o200)
    dest.chmod(dest.stat().st_mode | 0o200)
    return dest


def install_worker_nodes(comfy_dir: Path) -> Path:
    """The worker's own ComfyUI nodes (RIFE), where the image puts them: custom_nodes/."""
    return Path(shutil.copytree(REPO / "comfyui_nodes" / "wan_worker_nodes",
                                comfy_dir / "custom_nodes" / "wan_worker_nodes"))


def volume_yaml(dest: Path, volume: Path, workspace: Path) -> Path:
    """The project's extra_model_paths.yaml, its volume paths moved under a temporary folder."""
    text = (REPO / "extra_model_paths.yaml").read_text()
    text = text.replace("/runpod-volume", str(volume)).replace("/workspace", str(workspace))
    dest.write_text(text)
    return dest


def make_tiny_models(python: Path, models: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "tests.tinywan", str(models), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"tests.tinywan failed:\n{proc.stdout}\n{proc.stderr}")


def run_tinywan(python: Path, code: str) -> None:
    """Run a few lines with tests.tinywan imported as `tw` (it needs ComfyUI's interpreter)."""
    proc = subprocess.run([str(python), "-c", f"from tests import tinywan as tw\n{code}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"tinywan snippet failed:\n{proc.stderr}")


@dataclass
class RealComfy:
    """The session's ComfyUI: where it listens, its folders, its log, the volume it reads."""

    proc: subprocess.Popen
    port: int
    comfy_dir: Path
    yaml: Path
    volume: Path  # stands for /runpod-volume
    models: Path  # the volume's first layout: runpod-slim/ComfyUI/models
    pid_file: Path
    log_path: Path
    python: Path
    src: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def files(self) -> set[Path]:
        """Every file in ComfyUI's input/ and output/ folders."""
        return set(files_under(self.comfy_dir / "input", self.comfy_dir / "output"))

    def history(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/history", timeout=10).json()

    def prompts_received(self) -> int:
        """How many prompts ComfyUI has accepted ("got prompt" in its log): the worker deletes
        each job's history entry, so the history cannot tell whether a job was queued."""
        return self.log().count("got prompt")

    def worker_env(self, **extra: str) -> dict[str, str]:
        return {"COMFY_HOST": self.host, "COMFY_DIR": str(self.comfy_dir), "COMFY_PID_FILE": str(self.pid_file),
                "EXTRA_MODEL_PATHS": str(self.yaml), "COMFY_START_TIMEOUT_S": "60", "JOB_TIMEOUT_S": "600",
                **extra}


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies, so a killed run leaves no ComfyUI eating the CPU."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_comfyui(python: Path, comfy_dir: Path, port: int, yaml: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [str(python), "-u", "main.py", "--listen", "127.0.0.1", "--port", str(port),
             "--extra-model-paths-config", str(yaml), *COMFY_FLAGS],
            cwd=comfy_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/system_stats", timeout=2).ok:
                return
        time.sleep(0.2)
    raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{log_path.read_text()[-4000:]}")


def stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def real_comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealComfy]:
    src, python = require_comfyui()
    root = tmp_path_factory.mktemp("real-comfyui")
    volume = root / "runpod-volume"
    models = volume / "runpod-slim" / "ComfyUI" / "models"
    make_tiny_models(python, models)
    # A valid safetensors file that is no diffusion model: ComfyUI accepts the name, then fails to
    # load it while executing (the recorded execution_error_unet scenario).
    shutil.copy(models / "loras" / "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
                models / "diffusion_models" / "not_a_diffusion_model.safetensors")
    yaml = volume_yaml(root / "extra_model_paths.yaml", volume, root / "workspace")
    comfy_dir = copy_comfyui(src, root / "comfyui")
    install_worker_nodes(comfy_dir)
    port = free_port()
    log_path = root / "comfyui.log"
    proc = start_comfyui(python, comfy_dir, port, yaml, log_path)
    pid_file = root / "comfyui.pid"
    pid_file.write_text(str(proc.pid))
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
        yield RealComfy(proc, port, comfy_dir, yaml, volume, models, pid_file, log_path, python, src)
    finally:
        stop_group(proc)


@pytest.fixture
def real_env(real_comfy: RealComfy, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The worker's settings pointed at the session's ComfyUI and volume; fresh Worker per test."""
    env = real_comfy.worker_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    handler_module.worker.cache_clear()
    yield env
    handler_module.worker.cache_clear()


def workflows_with(folder: Path, graph_file: str, titles: tuple[str, ...], **inputs: Any) -> Path:
    """A copy of the bundled graphs in `folder` where the nodes titled `titles` in `graph_file` take
    `inputs` (shorter chunks or windows for CPU-sized jobs); point WORKFLOWS_DIR at it."""
    import json

    from wan_worker.settings import bundled_workflows_dir

    for path in bundled_workflows_dir().glob("*.json"):
        shutil.copy(path, folder / path.name)
    graph_path = folder / graph_file
    graph = json.loads(graph_path.read_text())
    for node in graph.values():
        if node["_meta"]["title"] in titles:
            node["inputs"].update(inputs)
    graph_path.write_text(json.dumps(graph))
    return folder


def start_image(width: int = 128, height: int = 128) -> bytes:
    """A PNG with structure (gradient, shapes) so the VAE has something to encode."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height))
    img.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(240, 200, 40))
    draw.rectangle((0, height * 3 // 4, width // 3, height), fill=(20, 60, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
