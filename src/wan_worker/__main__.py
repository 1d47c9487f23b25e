"""`python -m wan_worker`: start the RunPod serverless worker with our handler.

With no RunPod environment the SDK runs `test_input.json` (or `--test_input '<json>'`) once and
exits 0/1; `--rp_serve_api` serves RunPod's local test API instead.
"""
from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path

from . import logs
from .errors import WorkerError
from .settings import Settings, load_settings

# The SDK logs whole job inputs and outputs (base64 images and videos) at DEBUG, its default.
# Keep it at INFO or quieter; our own logger follows LOG_LEVEL. Set before runpod is imported.
_SDK_LEVELS = {"WARNING": "WARN", "WARN": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}


def _stop_comfyui_child(pid_file: str) -> None:
    """entrypoint.sh execs the worker, so ComfyUI is this process's child: stop it when the worker
    exits. (setpriv's parent-death signal covers a worker that is killed outright.)"""
    try:
        pid = int(Path(pid_file).read_text().strip())
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if parent == os.getpid():
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass  # no ComfyUI of ours to stop


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """`docker stop` and RunPod stop a worker with SIGTERM. As a container's first process (the
    entrypoint execs us) a signal without a handler is ignored, so the worker would wait out
    docker's 10 s and be killed; exit cleanly instead (atexit then stops ComfyUI)."""
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        settings: Settings | None = load_settings()
    except WorkerError:
        settings = None  # the handler reports the bad setting to every job
    level = settings.log_level.upper() if settings else "INFO"
    atexit.register(_stop_comfyui_child, settings.comfy_pid_file if settings else Settings().comfy_pid_file)
    os.environ.setdefault("RUNPOD_LOG_LEVEL", _SDK_LEVELS.get(level, "INFO"))
    import runpod

    from .handler import handler

    logs.setup(level)
    if settings is not None:
        from . import warmup

        warmup.start(settings)  # WARMUP: one tiny job on its own thread once ComfyUI answers
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
