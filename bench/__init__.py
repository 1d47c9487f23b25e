"""Benchmarks of the worker's own cost per job: `python -m bench` or `make bench` (bench/__main__.py).
A benchmark, not a test: pytest never collects it (testpaths=tests)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:  # `tests.fakecomfy` and `tests.s3server` live at the repository root
    sys.path.insert(0, str(REPO))
