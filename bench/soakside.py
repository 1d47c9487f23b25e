"""The worker side of the soak (`python -m bench --soak N`): handler(job) for each job the bench sends.

    python -m bench.soakside

One warm process, as a deployed worker is: it reads one JSON line per job ({"job": {...}}), runs
wan_worker's handler() on it, waits for the worker's background thread to go idle (the folder
clean-up it does after a result), and answers with the result and what the process holds now:
resident memory, open file descriptors, threads. The bench watches these grow, or not, over
hundreds of jobs.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from . import procs


def snapshot() -> dict[str, Any]:
    """What this process holds right now."""
    mem = procs.memory()
    return {"rss": mem["rss"], "hwm": mem["hwm"], "fds": len(os.listdir("/proc/self/fd")),
            "threads": len(os.listdir("/proc/self/task")), "py_threads": threading.active_count()}


def main() -> None:
    procs.die_with_parent()
    proto = procs.protocol_stdout()
    from wan_worker import background, handler, logs

    logs.setup("INFO")
    try:
        handler.worker()
    except Exception as exc:  # noqa: BLE001 - the bench reports it
        proto.write(json.dumps({"fatal": f"worker() failed: {exc}"}) + "\n")
        return
    proto.write(json.dumps({"ready": True, **snapshot()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)["job"]
        t0 = time.perf_counter()
        result = handler.handler(job)
        wall_ms = (time.perf_counter() - t0) * 1000
        background.wait_idle(5.0)
        proto.write(json.dumps({"result": result, "wall_ms": wall_ms, **snapshot()}) + "\n")


if __name__ == "__main__":
    main()
