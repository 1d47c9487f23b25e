"""Benchmarks of the worker's own cost per job (issue 5): `python -m bench` or `make bench`.

Everything runs on 127.0.0.1 against the stand-in ComfyUI of the tests (tests/fakecomfy), set to
finish instantly, and a real S3-compatible server (rclone serve s3, tests/s3server.py). The worker,
the bare protocol client it is compared with (the floor), the stand-in and rclone each run in
their own process, so each one's CPU and memory are its own. `--comfyui` runs the same comparison
against the real ComfyUI with tiny models instead (bench/real.py). Results and how to read them:
docs/performance.md. This is a benchmark, not a test: pytest never collects it (testpaths=tests).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:  # `tests.fakecomfy` and `tests.s3server` live at the repository root
    sys.path.insert(0, str(REPO))
