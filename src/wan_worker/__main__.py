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
from .settings import load_settings

# The SDK logs whole job inputs and outputs (base64 images and videos) at DEBUG, its default.
# Keep it at INFO or quieter; our own logger follows LOG_LEVEL. Set before runpod is imported.
_SDK_LEVELS = {"WARNING": "WARN", "WARN": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}


def _log_level() -> str:
    try:
        return load_settings().log_level.upper()
    except WorkerError:
        return "INFO"  # the handler reports the bad setting to every job


def _stop_comfyui_child() -> None:
    """entrypoint.sh execs the worker, so ComfyUI is this process's child: stop it when the worker
    exits. (setpriv's parent-death signal covers a worker that is killed outright.)"""
    try:
        pid = int(Path(load_settings().comfy_pid_file).read_text().strip())
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if parent == os.getpid():
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError, WorkerError):
        pass  # no ComfyUI of ours to stop


def main() -> None:
    atexit.register(_stop_comfyui_child)
    level = _log_level()
    os.environ.setdefault("RUNPOD_LOG_LEVEL", _SDK_LEVELS.get(level, "INFO"))
    import runpod

    from .handler import handler

    logs.setup(level)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
