"""`python -m wan_worker`: start the RunPod serverless worker with our handler.

With no RunPod environment the SDK runs `test_input.json` (or `--test_input '<json>'`) once and
exits 0/1; `--rp_serve_api` serves RunPod's local test API instead.
"""
from __future__ import annotations

import logging

import runpod

from .errors import WorkerError
from .handler import handler
from .settings import load_settings


def main() -> None:
    try:
        level = load_settings().log_level.upper()
    except WorkerError:
        level = "INFO"  # the handler reports the bad setting to every job
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
