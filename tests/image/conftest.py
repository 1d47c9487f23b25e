"""The container tier: the image itself, run the way users run it (`make test-image`).

A container of WAN_IMAGE (built by `make image`) gets tests/tinywan's Wan2.2-shaped models as its
volume, mounted read-only at /runpod-volume, ComfyUI on the CPU (`COMFY_ARGS=--cpu`), and the RunPod
API server (`SERVE_API_LOCALLY`) on ports of its own; the tests send it real jobs over HTTP and
decode what comes back. Docker here has no bridge network, so every container runs with
`--network host` and every server in it binds 127.0.0.1 (SERVE_API_HOST, ComfyUI's --listen).

Skips when no image was asked for and none is there; fails when `make test-image` (which sets
WAN_IMAGE) finds no Docker engine or no image: on our machines, CI's included, both exist.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.conftest import free_port, mark_tier

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = "wan-worker:dev"
TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/image is the `image` tier (make test deselects it)."""
    mark_tier(items, Path(__file__).parent, "image", TEST_TIMEOUT_S)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = getattr(terminalreporter.config, "wan_image_report", [])
    if lines:
        terminalreporter.section("the image, as the container tier measured it")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> list[str]:
    """Lines for the end of the run: what the tier measured (sizes are make image-size's)."""
    if not hasattr(pytestconfig, "wan_image_report"):
        pytestconfig.wan_image_report = []  # type: ignore[attr-defined]
    return pytestconfig.wan_image_report  # type: ignore[attr-defined]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def require_image() -> str:
    """The image's name; skips when nothing asked for this tier, fails when make test-image did."""
    image = os.environ.get("WAN_IMAGE") or DEFAULT_IMAGE
    problem = None
    if shutil.which("docker") is None:
        problem = "no docker command here"
    elif subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode:
        problem = "no Docker engine answers (start one: bash ../shared/docker/up.sh)"
    elif subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode:
        problem = f"no image {image} (build it: make image)"
    if problem:
        if os.environ.get("WAN_IMAGE"):
            pytest.fail(f"the container tier cannot run: {problem}")
        pytest.skip(problem)
    return image


@pytest.fixture(scope="session")
def image() -> str:
    return require_image()


def run_in_image(image: str, *args: str, mounts: tuple[str, ...] = (), timeout: float = 300,
                 entrypoint: str = "/opt/venv/bin/python") -> subprocess.CompletedProcess[str]:
    """A one-off command in the image (not the worker), from /src: the image's interpreter by default."""
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    return docker("run", "--rm", "--network", "host", "--entrypoint", entrypoint, "-w", "/src", *volumes,
                  image, *args, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_volume(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume with every manifest file at tiny size, written by tests/tinywan with the image's
    own interpreter (it has torch and safetensors), in the volume's first layout."""
    volume = tmp_path_factory.mktemp("runpod-volume")
    run_in_image(image, "-m", "tests.tinywan", "/runpod-volume/runpod-slim/ComfyUI/models",
                 mounts=(f"{REPO / 'tests'}:/src/tests:ro", f"{volume}:/runpod-volume"))
    return volume


@dataclass
class Container:
    """One `docker run -d` of the image: its name, ports, and when it was started."""

    name: str
    comfy_port: int
    api_port: int
    started: float
    ready_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False, timeout=30)
        return proc.stdout + proc.stderr

    def state(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.name, "--format", "{{json .State}}").stdout)

    def wait_ready(self, timeout: float = 300) -> float:
        """Seconds from `docker run` until ComfyUI answers and the worker's API server takes jobs."""
        deadline = time.monotonic() + timeout
        comfy = api = False
        while time.monotonic() < deadline:
            if not self.state().get("Running"):
                raise AssertionError(f"the container exited ({self.state().get('ExitCode')}):\n{self.logs()[-4000:]}")
            with contextlib.suppress(requests.RequestException):
                comfy = comfy or requests.get(f"http://127.0.0.1:{self.comfy_port}/system_stats", timeout=2).ok
            with contextlib.suppress(requests.RequestException):
                api = api or requests.get(f"{self.api}/docs", timeout=2).status_code < 500
            if comfy and api:
                self.ready_s = time.monotonic() - self.started
                return self.ready_s
            time.sleep(0.25)
        raise AssertionError(f"not ready within {timeout} s (ComfyUI {comfy}, API {api}):\n{self.logs()[-4000:]}")

    def runsync(self, job_input: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        try:
            resp = requests.post(f"{self.api}/runsync", json={"input": job_input}, timeout=timeout)
        except requests.RequestException as exc:
            raise AssertionError(f"/runsync: {exc}; the container's log:\n{self.logs()[-6000:]}") from None
        assert resp.ok, f"{resp.status_code}: {resp.text[:500]}"
        return resp.json()

    def stop(self, timeout: int = 10) -> tuple[float, int]:
        """`docker stop` (SIGTERM, then SIGKILL after `timeout` s): seconds it took and the exit code."""
        t0 = time.monotonic()
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - t0, int(self.state()["ExitCode"])


@pytest.fixture(scope="session")
def start_container(image: str) -> Iterator[Any]:
    """Start a serving container: ComfyUI on the CPU, the API server on 127.0.0.1, both on ports
    of their own; every container is removed at the end of the session."""
    names: list[str] = []

    def start(volume: Path, *, mounts: tuple[str, ...] = (), **env: str) -> Container:
        c = Container(f"wan-test-{uuid.uuid4().hex[:8]}", free_port(), free_port(), 0.0)
        c.env = {"COMFY_PORT": str(c.comfy_port), "COMFY_ARGS": "--cpu --cache-lru 16",
                 "SERVE_API_LOCALLY": "true", "SERVE_API_HOST": "127.0.0.1", "SERVE_API_PORT": str(c.api_port),
                 "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "JOB_TIMEOUT_S": "600", **env}
        args = ["run", "-d", "--name", c.name, "--network", "host", "-v", f"{volume}:/runpod-volume:ro"]
        for mount in mounts:
            args += ["-v", mount]
        for key, value in c.env.items():
            args += ["-e", f"{key}={value}"]
        names.append(c.name)
        c.started = time.monotonic()
        docker(*args, image)
        return c

    try:
        yield start
    finally:
        for name in names:
            docker("rm", "-f", name, check=False, timeout=60)
