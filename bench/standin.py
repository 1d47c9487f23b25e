"""The stand-in ComfyUI in its own process, serving an MP4 of a chosen size.

    python -m bench.standin --root DIR --mp4-bytes N [--extra-model-paths-config YAML]
                            [--boot-delay S] [--pid-file FILE]

tests/fakecomfy/main.py launches the stand-in like ComfyUI's main.py but has no option for the size
of the MP4 it saves, so the bench launches `tests.fakecomfy.server.FakeComfy` itself, the same way
(model folders from the YAML, `input/` and `output/` under --root, 127.0.0.1 only), with
`mp4_bytes` set: the real fixture MP4 followed by an MP4 `free` box that pads it to N bytes (still
a valid MP4). Execution is instant: no node delays, no step delays, no previews.

It prints `PORT <n>` as soon as the port is reserved (it refuses connections during the boot
delay, like a loading ComfyUI) and `LISTENING <t>` with time.monotonic() (the same clock in every
process of the machine) once it accepts connections. It stops on SIGTERM/SIGINT or when its stdin
closes.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import sys
import threading
import time
from pathlib import Path

from . import procs


def mp4_payload(size: int) -> bytes:
    """A valid MP4 of exactly `size` bytes (or the fixture itself, if it is already larger)."""
    from tests.fakecomfy.server import MP4_PATH

    base = MP4_PATH.read_bytes()
    pad = size - len(base)
    if pad < 8:
        return base
    filler = random.Random(size).randbytes(pad - 8)  # incompressible, like real video data
    return base + struct.pack(">I", pad) + b"free" + filler


def main(argv: list[str] | None = None) -> int:
    procs.die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m bench.standin")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--mp4-bytes", type=int, default=0)
    parser.add_argument("--extra-model-paths-config", action="append", default=[])
    parser.add_argument("--boot-delay", type=float, default=0.0)
    parser.add_argument("--pid-file", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from tests.fakecomfy.server import FakeComfy

    payload = mp4_payload(args.mp4_bytes) if args.mp4_bytes else None
    fake = FakeComfy(args.root, mp4_bytes=payload, extra_model_paths_config=args.extra_model_paths_config or None,
                     scan_models=True, port=args.port,
                     argv=["main.py", "--listen", "127.0.0.1", "--disable-auto-launch", "--disable-metadata",
                           "--disable-api-nodes"])
    if args.pid_file:
        args.pid_file.write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    fake.start(boot_delay=args.boot_delay)
    print(f"PORT {fake.port}", flush=True)
    if not fake._ready.wait(args.boot_delay + 30):  # the moment FakeComfy accepts connections
        print("fakecomfy did not start", file=sys.stderr)
        return 1
    print(f"LISTENING {time.monotonic():.6f}", flush=True)
    print(f"MP4 {len(fake.mp4_bytes)}", flush=True)
    while not stop.wait(0.2):
        if not fake.alive:
            return 1
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
