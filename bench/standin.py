"""The stand-ins: a ComfyUI (tests/fakecomfy) serving an MP4 of a chosen size, and a model volume of
sparse files with the real names and sizes.

tests/fakecomfy/main.py has no option for the size of the MP4 it saves, so the bench launches
`FakeComfy` the same way (model folders from the YAML, `input/` and `output/` under its root,
127.0.0.1 only) with `mp4_bytes` set: the fixture MP4 padded by an MP4 `free` box. Execution is
instant. It prints `PORT <n>` once the port is reserved (it refuses connections during the boot
delay, like a loading ComfyUI) and `LISTENING <t>` (time.monotonic(), one clock for every process)
once it accepts them.
"""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import REPO


def mp4_payload(size: int) -> bytes:
    """A valid MP4 of exactly `size` bytes (or the fixture itself, if it is already larger)."""
    from tests.fakecomfy.server import MP4_PATH

    base = MP4_PATH.read_bytes()
    pad = size - len(base)
    if pad < 8:
        return base
    filler = random.Random(size).randbytes(pad - 8)  # incompressible, like real video data
    return base + struct.pack(">I", pad) + b"free" + filler


def serve_standin(cfg: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT or the end of stdin (`python -m bench.sides standin CONFIG_JSON`)."""
    from tests.fakecomfy.server import FakeComfy

    root = Path(cfg["root"])
    fake = FakeComfy(root, mp4_bytes=mp4_payload(cfg["mp4_bytes"]) if cfg["mp4_bytes"] else None,
                     extra_model_paths_config=[cfg["yaml"]], scan_models=True,
                     argv=["main.py", "--listen", "127.0.0.1", "--disable-auto-launch", "--disable-metadata",
                           "--disable-api-nodes"])
    Path(cfg["pid_file"]).write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    fake.start(boot_delay=cfg["boot_delay"])
    print(f"PORT {fake.port}", flush=True)
    if not fake._ready.wait(cfg["boot_delay"] + 30):  # the moment FakeComfy accepts connections
        print("fakecomfy did not start", file=sys.stderr)
        return 1
    print(f"LISTENING {time.monotonic():.6f}", flush=True)
    print(f"MP4 {len(fake.mp4_bytes)}", flush=True)
    while not stop.wait(0.2):
        if not fake.alive:
            return 1
    fake.stop()
    return 0


def write_sparse_safetensors(path: Path, size: int) -> None:
    """A `size`-byte safetensors file: a real header whose one tensor covers the file, the data a
    hole (no disk used); it passes the worker's check exactly as a real file does."""
    data = size - 8
    for _ in range(5):  # the header's length depends on the number of digits in it
        header = json.dumps({"__metadata__": {"format": "pt", "note": "wan-worker bench stand-in"},
                             "weight": {"dtype": "U8", "shape": [data], "data_offsets": [0, data]}}).encode()
        new = size - 8 - len(header)
        if new == data:
            break
        data = new
    else:
        raise RuntimeError(f"no stable safetensors header for {size} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(size)


def make_volume(root: Path) -> Path:
    """The six files an I2V job checks, in the deployed layout (<volume>/runpod-slim/ComfyUI/models/
    <folder>/<file>), and a copy of extra_model_paths.yaml pointing into `root` that finds them."""
    from wan_worker.models import DEFAULT_SET, MODEL_SETS, safetensors_problem

    models = root / "runpod-volume" / "runpod-slim" / "ComfyUI" / "models"
    for model in MODEL_SETS[DEFAULT_SET].files:
        path = models / model.folder / model.name
        write_sparse_safetensors(path, model.approx_bytes)
        problem = safetensors_problem(str(path), path.stat().st_size)
        if problem:
            raise RuntimeError(f"stand-in {path} is not a valid safetensors file: {problem}")
    text = (REPO / "extra_model_paths.yaml").read_text()
    yaml_path = root / "extra_model_paths.yaml"
    yaml_path.write_text(text.replace("/runpod-volume", str(root / "runpod-volume"))
                         .replace("/workspace", str(root / "workspace")))
    return yaml_path
