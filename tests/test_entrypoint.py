"""entrypoint.sh outside a container: `bash entrypoint.sh` with every path from the environment.

ComfyUI is the stand-in `tests/fakecomfy/main.py`, copied alone into a temporary COMFY_DIR (it
finds the rest of the stand-in through FAKECOMFY_REPO), so its `input/` and `output/` are
COMFY_DIR's, as in the container. The worker serves RunPod's local API on 127.0.0.1 and jobs go
through `/runsync`. Each run is its own session (process group); teardown kills the group, so
neither the worker nor the stand-in outlives a test, even a failing one.
"""
from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from tests import conftest
from tests.conftest import free_port, model_paths_yaml, png_b64, write_safetensors
from tests.fakehub import FakeHub
from tests.test_handler import two_image_workflow
from wan_worker.models import MANIFEST, MODEL_SETS

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "entrypoint.sh"
PYTHON = REPO / ".venv" / "bin" / "python"
STAND_IN_MAIN = REPO / "tests" / "fakecomfy" / "main.py"
SUCCESS_MP4 = REPO / "tests" / "fixtures" / "success.mp4"
COMFY_FLAGS = ["--disable-auto-launch", "--disable-metadata", "--disable-api-nodes"]
START_S = 20  # bound on any single wait; a healthy start takes ~2 s


def wait_for(what: str, check: Callable[[], object], timeout: float = START_S,
             run: "Run | None" = None) -> object:
    """Poll `check` until it returns something truthy; fail with the log if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException, OSError, ValueError):
            result = check()
            if result:
                return result
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"entrypoint exited ({run.proc.returncode}) waiting for {what}:\n{run.log()}")
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}" + (f":\n{run.log()}" if run else ""))
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Run:
    """One `bash entrypoint.sh` in its own session, its output in a file."""

    proc: subprocess.Popen
    log_path: Path
    comfy_dir: Path
    comfy_port: int
    api_port: int | None
    pid_file: Path
    yaml: Path
    extra: dict = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def comfy(self) -> str:
        return f"http://127.0.0.1:{self.comfy_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = START_S) -> str:
        return wait_for(f"{text!r} in the log", lambda: text in self.log() and self.log(), timeout, self)

    def wait_api(self) -> None:
        wait_for("the worker's API", lambda: requests.get(f"{self.api}/docs", timeout=1).ok, run=self)

    def wait_comfy(self) -> dict:
        return wait_for("ComfyUI", lambda: requests.get(f"{self.comfy}/system_stats", timeout=1).json(),
                        run=self)

    def comfy_pid(self) -> int:
        return int(wait_for("the PID file", lambda: self.pid_file.read_text().strip(), run=self))

    def runsync(self, job_input: dict, timeout: float = 30) -> dict:
        resp = requests.post(f"{self.api}/runsync", json={"input": job_input}, timeout=timeout)
        return resp.json()


def stand_in_comfy(folder: Path) -> Path:
    """A fake /comfyui: the stand-in's main.py alone (input/ and output/ appear next to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(STAND_IN_MAIN, folder / "main.py")
    return folder


@pytest.fixture
def empty_volume(tmp_path: Path) -> Path:
    """Like conftest's `volume` (same YAML, same place) but with no model files in it."""
    root = tmp_path / "volume" / "models"
    root.mkdir(parents=True)
    model_paths_yaml(tmp_path / "extra_model_paths.yaml", root)
    return root


@pytest.fixture
def entrypoint(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Start `bash entrypoint.sh`; every process it started is killed at teardown."""
    runs: list[Run] = []

    def start(*, env: dict[str, str] | None = None, comfy_dir: Path | None = None,
              serve_api: bool = True, args: list[str] | None = None) -> Run:
        n = len(runs)
        comfy_dir = comfy_dir or stand_in_comfy(tmp_path / f"comfyui{n}")
        comfy_port = free_port()
        api_port = free_port() if serve_api else None
        pid_file = tmp_path / f"comfyui{n}.pid"
        yaml = tmp_path / "extra_model_paths.yaml"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("RUNPOD_", "HF_", "COMFY_", "AUTO_DOWNLOAD", "SERVE_API"))}
        full_env.update({
            "COMFY_DIR": str(comfy_dir),
            "COMFY_PYTHON": str(PYTHON),
            "WORKER_PYTHON": str(PYTHON),
            "COMFY_PORT": str(comfy_port),
            "COMFY_PID_FILE": str(pid_file),
            "COMFY_START_TIMEOUT_S": "60",
            "EXTRA_MODEL_PATHS": str(yaml),
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "FAKECOMFY_REPO": str(REPO),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_ENDPOINT": "http://127.0.0.1:9",  # never the real hub
            "PYTHONUNBUFFERED": "1",
        })
        full_env.update(env or {})
        if args is None:
            args = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(api_port)]
        log_path = tmp_path / f"entrypoint{n}.log"
        cwd = tmp_path / f"cwd{n}"  # no test_input.json here
        cwd.mkdir()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(["bash", str(ENTRYPOINT), *args], cwd=cwd, env=full_env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        run = Run(proc, log_path, comfy_dir, comfy_port, api_port, pid_file, yaml)
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)  # the worker, the stand-in and sed
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=5)
            with contextlib.suppress(OSError, ValueError):  # in case it left the process group
                os.kill(int(run.pid_file.read_text().strip()), signal.SIGKILL)


def i2v_input(**extra) -> dict:
    return {"image": png_b64(), "prompt": "waves roll in", **extra}


def workflow_input(prefix: str = "video/wf") -> dict:
    images = [{"name": "first.png", "image": png_b64()},
              {"name": "second.jpg", "image": "data:image/jpeg;base64," + png_b64(fmt="JPEG")}]
    return {"workflow": two_image_workflow(prefix), "images": images}


def files_under(folder: Path) -> list[Path]:
    return conftest.files_under(folder)


# --- 1. the happy path ----------------------------------------------------------------------------


def test_report_first_then_comfyui_then_worker_serving_jobs(entrypoint, volume: Path):
    run = entrypoint()
    run.wait_api()
    stats = run.wait_comfy()

    # The volume report comes first, then ComfyUI starts, its lines prefixed, then the worker.
    log = run.wait_log("To see the GUI go to")
    lines = log.splitlines()
    assert lines[0] == f"Model volume check (paths from {run.yaml})", log
    assert f"All {len(MANIFEST)} model files are present and complete." in log
    report_end = lines.index(f"All {len(MANIFEST)} model files are present and complete.")
    started = next(i for i, ln in enumerate(lines) if ln.startswith("[entrypoint] ComfyUI starting"))
    assert report_end < started
    assert all(not ln.startswith("[comfyui] ") for ln in lines[:started])
    for marker in ("ComfyUI version: 0.3.64", "Starting server", "To see the GUI go to"):
        hits = [ln for ln in lines if marker in ln]
        assert hits and all(ln.startswith("[comfyui] ") for ln in hits), (marker, hits)
    assert "Starting Serverless Worker" in log
    assert "Uvicorn running on http://127.0.0.1:" in log

    # The PID file holds the live stand-in: the very process that answers on COMFY_PORT.
    pid = run.comfy_pid()
    assert pid_alive(pid)
    assert f"[entrypoint] ComfyUI starting (pid {pid}) on 127.0.0.1:{run.comfy_port}" in lines
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"main.py" in cmdline and str(run.comfy_port).encode() in cmdline
    assert stats["system"]["argv"][:3] == ["main.py", "--listen", "127.0.0.1"]

    # A dry-run I2V job completes (no ComfyUI needed) and sees the volume.
    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED", body
    assert body["output"]["checks"]["models"]["ok"] is True

    # A workflow-mode job runs on the stand-in; the MP4 comes back byte for byte.
    body = run.runsync(workflow_input("video/ep"))
    assert body["status"] == "COMPLETED", body
    by_ext = {Path(i["filename"]).suffix: i for i in body["output"]["images"]}
    assert set(by_ext) == {".mp4", ".png"}, body["output"]
    mp4 = base64.b64decode(by_ext[".mp4"]["data"])
    assert mp4 == SUCCESS_MP4.read_bytes()  # what the stand-in's SaveVideo writes
    # ...read from the file the stand-in saved under COMFY_DIR/output. The worker reads a saved
    # file in place when it lies in COMFY_DIR/<type>/<subfolder>/ and deletes it there after the
    # job, and then the prompt's history entry (right after the result, on its background thread):
    # nothing is left in COMFY_DIR/output, COMFY_DIR/input or ComfyUI's history.
    assert (run.comfy_dir / "output").is_dir() and (run.comfy_dir / "input").is_dir()
    assert files_under(run.comfy_dir / "output") == []
    assert files_under(run.comfy_dir / "input") == []
    deadline = time.monotonic() + 10
    while (history := requests.get(f"{run.comfy}/history", timeout=5).json()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert history == {}


# --- 2. stopping ------------------------------------------------------------------------------------


def test_sigterm_stops_the_worker_and_comfyui(entrypoint, volume: Path):
    run = entrypoint()
    run.wait_api()
    run.wait_comfy()
    comfy_pid = run.comfy_pid()
    assert pid_alive(comfy_pid)

    os.kill(run.proc.pid, signal.SIGTERM)  # the entrypoint's PID: the worker, after exec
    run.proc.wait(timeout=10)
    # The stand-in stops its server thread on SIGTERM (FakeComfy.stop joins it for up to 10 s);
    # what counts is that it goes, not how fast a loaded machine lets it.
    wait_for("ComfyUI to exit", lambda: not pid_alive(comfy_pid), timeout=15)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{run.comfy}/system_stats", timeout=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{run.api}/docs", timeout=1)
    # No process of the session is left at all (the log prefixer included).
    wait_for("the whole process group to exit", lambda: not _group_members(run.proc.pid), timeout=5)


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(stat.parent.name))
    return members


# --- 3. missing models ----------------------------------------------------------------------------


def test_missing_models_do_not_stop_the_worker(entrypoint, empty_volume: Path):
    run = entrypoint()
    run.wait_api()
    log = run.log()
    assert log.splitlines()[0] == f"Model volume check (paths from {run.yaml})", log
    for m in MANIFEST:
        assert any(m.rel_path in ln and "MISSING" in ln.upper() for ln in log.splitlines()), (m, log)
    assert "not every model set is complete" in log
    assert "This volume can serve no video jobs yet" in log
    assert "[entrypoint] ComfyUI starting" in log

    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED", body
    assert body["output"]["checks"]["models"]["ok"] is False

    body = run.runsync(i2v_input())
    assert body["status"] == "FAILED", body
    assert body["error"].startswith("MODELS_MISSING: ")  # the SDK keeps only `error`: the code leads it
    assert "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors" in body["error"]


# --- 4. a ComfyUI that dies at once ---------------------------------------------------------------


def test_comfyui_that_exits_at_once_fails_jobs_fast(entrypoint, volume: Path, tmp_path: Path):
    broken = tmp_path / "broken-comfyui"
    broken.mkdir()
    (broken / "main.py").write_text("import sys\nprint('ComfyUI: cannot start')\nsys.exit(1)\n")
    run = entrypoint(comfy_dir=broken)
    run.wait_api()
    comfy_pid = run.comfy_pid()
    run.wait_log("[comfyui] ComfyUI: cannot start")

    started = time.monotonic()
    body = run.runsync(workflow_input())
    elapsed = time.monotonic() - started
    assert body["status"] == "FAILED", body
    assert "ComfyUI is not available" in body["error"] and "exited" in body["error"], body
    assert f"pid {comfy_pid}" in body["error"]
    assert body["error"].startswith("COMFY_UNAVAILABLE: ")
    assert elapsed < 10, f"took {elapsed:.1f} s with COMFY_START_TIMEOUT_S=60"
    assert run.proc.poll() is None  # the worker is still serving

    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED", body


# --- 5. ComfyUI's command line --------------------------------------------------------------------


def test_comfy_args_and_fixed_flags_reach_comfyui(entrypoint, volume: Path):
    run = entrypoint(env={"COMFY_ARGS": "--foo bar  --preview-method auto"})
    stats = run.wait_comfy()
    assert stats["system"]["argv"] == [
        "main.py", "--listen", "127.0.0.1", "--port", str(run.comfy_port),
        "--extra-model-paths-config", str(run.yaml), *COMFY_FLAGS,
        "--foo", "bar", "--preview-method", "auto",
    ]


# --- 6. downloading the models --------------------------------------------------------------------


def test_auto_download_fills_the_first_yaml_folder_before_comfyui(entrypoint, empty_volume: Path):
    with FakeHub() as hub:
        run = entrypoint(env={"AUTO_DOWNLOAD_MODELS": "true", "HF_ENDPOINT": hub.endpoint})
        run.wait_api()
    i2v = MODEL_SETS["i2v-14b"].files  # `true` is the I2V set
    for m in i2v:
        path = empty_volume / m.folder / m.name
        assert path.read_bytes() == hub.served_bytes(m.repo_path), m
    assert len(files_under(empty_volume)) == len(i2v) == 6
    log = run.log()
    lines = log.splitlines()
    assert lines[0].startswith("[entrypoint] AUTO_DOWNLOAD_MODELS=true"), log
    report = lines.index(f"Model volume check (paths from {run.yaml})")
    started = next(i for i, ln in enumerate(lines) if ln.startswith("[entrypoint] ComfyUI starting"))
    assert report < started
    report_lines = lines[report:started]
    assert sum(ln.strip().startswith("OK ") for ln in report_lines) == 6, report_lines
    assert any(ln.strip().startswith("COMPLETE   i2v-14b") for ln in report_lines), report_lines
    assert any(ln.strip().startswith("INCOMPLETE t2v-14b") for ln in report_lines), report_lines
    assert any(ln.startswith("This volume can serve: image-to-video") and "[i2v-14b]" in ln
               and "t2v-14b" not in ln for ln in report_lines), report_lines
    assert "model download failed" not in log

    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED" and body["output"]["checks"]["models"]["ok"] is True, body


def test_auto_download_takes_a_list_of_sets(entrypoint, empty_volume: Path):
    """t2v-14b and ti2v-5b share the text encoder: fetched once; the report says what each serves."""
    with FakeHub() as hub:
        run = entrypoint(env={"AUTO_DOWNLOAD_MODELS": "t2v-14b,ti2v-5b", "HF_ENDPOINT": hub.endpoint})
        run.wait_api()
    wanted = {m for s in ("t2v-14b", "ti2v-5b") for m in MODEL_SETS[s].files}
    assert {p.relative_to(empty_volume).as_posix() for p in files_under(empty_volume)} == {
        m.rel_path for m in wanted}
    assert len(hub.body_gets()) == len(wanted) == 8  # the shared text encoder once
    log = run.log()
    assert "fetching any missing model files of set(s) t2v-14b,ti2v-5b" in log
    serves = next(ln for ln in log.splitlines() if ln.startswith("This volume can serve"))
    assert "[t2v-14b]" in serves and "[ti2v-5b]" in serves and "i2v-14b]" not in serves.replace("ti2v", "")
    assert "INCOMPLETE i2v-14b" in log


def test_auto_download_refuses_an_unknown_set(entrypoint, empty_volume: Path):
    run = entrypoint(env={"AUTO_DOWNLOAD_MODELS": "t2v-15b", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    run.wait_api()
    log = run.log()
    assert "unknown: t2v-15b" in log and "i2v-14b, t2v-14b, ti2v-5b" in log
    assert "[entrypoint] model download failed" in log


def test_hub_down_does_not_stop_the_worker(entrypoint, empty_volume: Path):
    run = entrypoint(env={"AUTO_DOWNLOAD_MODELS": "true",
                          "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"})  # nothing listens
    run.wait_api()
    log = run.log()
    assert "[entrypoint] model download failed; jobs will say what is missing" in log
    assert "not every model set is complete" in log
    assert files_under(empty_volume) == []
    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED" and body["output"]["checks"]["models"]["ok"] is False, body


# --- SERVE_API_LOCALLY ----------------------------------------------------------------------------


def test_serve_api_locally_listens_where_serve_api_host_and_port_say(entrypoint, volume: Path):
    """SERVE_API_LOCALLY with SERVE_API_HOST/SERVE_API_PORT (127.0.0.1: a test never listens on
    every interface; the container tier runs the image the same way with --network host)."""
    port = free_port()
    run = entrypoint(env={"SERVE_API_LOCALLY": "true", "SERVE_API_HOST": "127.0.0.1",
                          "SERVE_API_PORT": str(port)}, args=[])
    run.api_port = port
    run.wait_log(f"Uvicorn running on http://127.0.0.1:{port}")
    run.wait_api()
    body = run.runsync(i2v_input(dry_run=True))
    assert body["status"] == "COMPLETED", body


def test_serve_api_locally_defaults_to_all_interfaces_port_8000(tmp_path: Path):
    """Unset, the API listens on 0.0.0.0:8000 (what `docker run -p 8000:8000` needs). Checked on the
    arguments the entrypoint hands the worker (a stand-in interpreter prints them), not by listening."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\ncase "$*" in *"-m wan_worker"*) echo "worker args: $*";; esac\nexit 0\n')
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "SERVE_API_LOCALLY": "true", "COMFY_PYTHON": str(fake),
           "WORKER_PYTHON": str(fake), "COMFY_DIR": str(stand_in_comfy(tmp_path / "comfyui")),
           "COMFY_PID_FILE": str(tmp_path / "pid")}
    proc = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert "worker args: -m wan_worker --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port 8000" in proc.stdout, (
        proc.stdout + proc.stderr)


def test_sigterm_during_a_hanging_download_stops_at_once(entrypoint, empty_volume: Path):
    """A download can take many minutes: stopping the container must not wait for it."""
    with socket.socket() as silent_hub:  # accepts connections (backlog) but never answers
        silent_hub.bind(("127.0.0.1", 0))
        silent_hub.listen(8)
        run = entrypoint(env={"AUTO_DOWNLOAD_MODELS": "true",
                              "HF_ENDPOINT": f"http://127.0.0.1:{silent_hub.getsockname()[1]}"})
        run.wait_log("fetching any missing model files")
        time.sleep(0.5)  # the download is now waiting on the hub
        t0 = time.monotonic()
        os.kill(run.proc.pid, signal.SIGTERM)
        run.proc.wait(timeout=5)
        assert time.monotonic() - t0 < 3
        assert "[entrypoint] stopping" in run.log()
        wait_for("the download to exit", lambda: not _group_members(run.proc.pid), timeout=5)
        assert not run.pid_file.exists()  # ComfyUI was never started


# --- prefetch -------------------------------------------------------------------------------------


def test_prefetch_never_delays_readiness_and_stops_with_the_worker(entrypoint, volume: Path):
    """PREFETCH_MODELS runs beside ComfyUI: frozen (SIGSTOP: a volume that never answers), the
    worker still becomes ready and serves a job; when the worker gets SIGTERM, prefetch gets it
    too (parent-death signal) and stops cleanly."""
    from tests.test_prefetch import sparse_safetensors

    big = next(m for m in MANIFEST if m.name.startswith("wan2.2_ti2v_5B"))
    sparse_safetensors(volume / big.rel_path, 8 * 1024**3)  # seconds to read: time to freeze it mid-way
    run = entrypoint(env={"PREFETCH_MODELS": "ti2v-5b", "PREFETCH_THREADS": "1"})
    line = run.wait_log("in the background (pid ")
    pid = int(line.split("in the background (pid ", 1)[1].split(")", 1)[0])
    run.wait_log("[prefetch] set(s) ti2v-5b: reading 3 files")
    os.kill(pid, signal.SIGSTOP)
    try:
        assert "[entrypoint] prefetching model set(s) ti2v-5b" in run.log()
        run.wait_api()
        run.wait_comfy()
        body = run.runsync(workflow_input("video/pf"))
        assert body["status"] == "COMPLETED", body
        assert pid_alive(pid)  # still there, still frozen: the job did not wait for it
    finally:
        os.kill(run.proc.pid, signal.SIGTERM)
        run.proc.wait(timeout=10)
        os.kill(pid, signal.SIGCONT)
    wait_for("prefetch to exit", lambda: not pid_alive(pid), timeout=10)
    log = run.log()
    assert "[prefetch] SIGTERM: stopping" in log and "[prefetch] stopped after" in log, log
    wait_for("the whole process group to exit", lambda: not _group_members(run.proc.pid), timeout=15)


def test_prefetch_reads_the_complete_sets_and_logs_throughput(entrypoint, volume: Path):
    run = entrypoint(env={"PREFETCH_MODELS": "auto"})
    log = run.wait_log("[prefetch] done:")
    from wan_worker.models import MODEL_SETS

    assert f"[prefetch] set(s) {','.join(MODEL_SETS)}: reading" in log, log  # the stand-in volume holds them all
    assert "MB/s)" in log.split("[prefetch] done:", 1)[1].splitlines()[0]


# --- warm-up --------------------------------------------------------------------------------------


def test_warmup_runs_once_at_start_and_the_first_job_is_warm(entrypoint, volume: Path):
    run = entrypoint(env={"WARMUP": "i2v"})
    run.wait_api()
    log = run.wait_log("warm-up i2v done")
    body = run.runsync(i2v_input(seed=3))
    assert body["status"] == "COMPLETED", body
    out = body["output"]
    assert out["warm"] is True and out["timings_ms"]["model_load"] > 0, out["timings_ms"]
    log = run.log()
    assert log.count("warm-up: running the smallest i2v job") == 1, log
    assert files_under(run.comfy_dir / "output") == [] and files_under(run.comfy_dir / "input") == []
