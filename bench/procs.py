"""Child processes of the benchmark: started, talked to over JSON lines, and always stopped.

Every child the bench starts is registered here and stopped by `stop_all()` (terminate, then kill
after a grace period), which `python -m bench` calls in a `finally`, so an error or Ctrl-C never
leaves a stand-in ComfyUI or a worker behind. Children also ask the kernel to terminate them when
the bench dies (PR_SET_PDEATHSIG), so even a `kill -9` of the bench cleans up.
"""
from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import IO, Any, Callable

from . import REPO

_CHILDREN: list["Child"] = []
_EOF = object()


class BenchError(RuntimeError):
    """The benchmark itself failed (a child died, timed out or answered an error)."""


class Child:
    """A child process speaking one JSON object (or one text line) per line on stdin/stdout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1,
        )
        _CHILDREN.append(self)
        self._lines: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                                        name=f"bench-{name}")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    def line(self, timeout: float) -> str:
        """The next line the child printed; BenchError if it exits or stays silent too long."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} did not answer within {timeout:g} s (log: {self.log_path})") from None
        if item is _EOF:
            self.proc.wait(5)
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; last log lines:\n{self.tail()}")
        return item

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next line starting with `prefix` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"{self.name} is gone; last log lines:\n{self.tail()}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        answer = json.loads(self.line(timeout))
        if answer.get("fatal"):
            raise BenchError(f"{self.name} failed: {answer['fatal']}\n{self.tail()}")
        return answer

    def call(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(message)
        return self.recv(timeout)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """Terminate this child (only it), kill it if it does not exit within `grace`."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        self._log.close()
        if self in _CHILDREN:
            _CHILDREN.remove(self)


def stop_all() -> None:
    for child in list(_CHILDREN):
        try:
            child.stop()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


def python_child(name: str, module: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    return Child(name, [sys.executable, "-u", "-m", module, *args], env, log_dir / f"{name}.log")


# -- inside a child ---------------------------------------------------------------------------

def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the bench (its parent) dies; exit if it already has."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def protocol_stdout() -> IO[str]:
    """A private copy of stdout for the JSON protocol; fd 1 then goes to stderr (the log), so a
    library printing to stdout cannot corrupt the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def vm(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now (VmRSS) and its peak (VmHWM), in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def memory() -> dict[str, int]:
    """This process's resident memory now and its peak (high-water mark), in bytes."""
    import resource

    values = vm()
    return {"rss": values["VmRSS"], "hwm": values["VmHWM"],
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def alternate(worker: Child, floor: Child, warmup: int, jobs: int, timeout: float,
              log: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Warm-up jobs, then measured ones, alternating sides and who goes first (ABBA), so a drift
    in the machine's load falls on both sides alike. Returns each side's measured answers."""
    samples: dict[str, list[dict[str, Any]]] = {"worker": [], "floor": []}

    def one(side: Child, name: str, n: int, keep: bool) -> None:
        answer = side.call({"cmd": "job", "n": n}, timeout=timeout)
        if not answer.get("ok"):
            raise BenchError(f"{side.name} job {n} failed: {answer.get('error')}")
        if keep:
            samples[name].append(answer)

    for n in range(warmup):
        one(worker, "worker", n, False)
        one(floor, "floor", n, False)
        if log:
            log(f"  warm-up {n + 1}/{warmup} done")
    for n in range(warmup, warmup + jobs):
        pair = [(worker, "worker"), (floor, "floor")]
        for side, name in (pair if n % 2 == 0 else pair[::-1]):
            one(side, name, n, True)
    return samples


def clean_env() -> dict[str, str]:
    """This environment without anything that would steer the worker (ours are set explicitly)."""
    from wan_worker.settings import Settings

    names = {f.name.upper() for f in fields(Settings)} | {"COMFY_PORT", "SERVE_API_LOCALLY"}
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith(("COMFY_", "BUCKET_", "RUNPOD_", "FAKECOMFY_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true"
    return env
