"""Model prefetch: read the chosen model sets into the page cache while ComfyUI boots.

ComfyUI loads safetensors through mmap page faults, one file after the other: on a network volume
each fault waits a round trip, so the first job's model loading is latency-bound. Reading the
same files here first, with several threads in large requests, keeps many requests in flight and
makes that loading bandwidth-bound; ComfyUI's faults then find the pages in memory.

Run by entrypoint.sh in the background (`python -m wan_worker.prefetch`, PREFETCH_MODELS): it
never delays readiness (jobs that arrive meanwhile just run), never reads more than MemAvailable
minus a margin (a file that does not fit is skipped and named), logs progress and throughput, and
stops cleanly on SIGTERM. Where the files live comes from the manifest and extra_model_paths.yaml,
exactly as the volume check finds them.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .errors import WorkerError
from .models import GB, MODEL_SETS, ModelSet, check_volume, files_of, parse_sets
from .settings import Settings, load_settings

log = logging.getLogger("wan_worker.prefetch")

MB = 1000**2
MIB = 1024**2
CHUNK_BYTES = 16 * MIB  # one read request: large enough to keep a network volume streaming
THREADS = 8  # reads in flight: hides a network volume's per-request latency
MARGIN_FRACTION = 0.10  # of MemTotal, left free for ComfyUI, the worker and the GPU's pinned buffers
MIN_MARGIN_BYTES = 2 * 1024**3
PROGRESS_EVERY_S = 5.0
OFF = {"", "0", "false", "no", "off", "none"}


@dataclass(frozen=True)
class Target:
    """One file to read: where the volume check found it."""

    rel_path: str  # folder/name, for the log
    path: str
    size: int


@dataclass
class Plan:
    """What to read, what not and why, and the memory budget that decided it."""

    sets: list[str]
    files: list[Target] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder/name, why)
    budget: int = 0
    available: int = 0

    @property
    def total(self) -> int:
        return sum(t.size for t in self.files)


def chosen_sets(spec: str, settings: Settings) -> list[ModelSet]:
    """PREFETCH_MODELS: off (empty), `auto` (the sets this volume holds completely), or a set list
    (`all` for every set). ValueError names an unknown set."""
    text = spec.strip().lower()
    if text in OFF:
        return []
    if text in ("auto", "true", "on", "yes", "1"):
        report = check_volume(settings)
        return [s.model_set for s in report.sets if s.complete]
    return parse_sets(text, "PREFETCH_MODELS")


def read_meminfo(path: str | Path = "/proc/meminfo") -> dict[str, int]:
    """/proc/meminfo as bytes per field (its values are in kB)."""
    info: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return info


def memory_budget(meminfo: dict[str, int]) -> tuple[int, int]:
    """(budget, MemAvailable): what may be read into the page cache without pushing others out."""
    available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
    margin = max(MIN_MARGIN_BYTES, int(meminfo.get("MemTotal", 0) * MARGIN_FRACTION))
    return max(0, available - margin), available


def make_plan(settings: Settings, sets: Sequence[ModelSet], meminfo: dict[str, int]) -> Plan:
    """The chosen sets' files as the volume check finds them, in manifest order, within the budget.
    Missing or damaged files, and files that would exceed the budget, are skipped with the reason;
    smaller files after a skipped one may still fit."""
    models = files_of(sets)
    report = check_volume(settings, names={m.name for m in models})
    budget, available = memory_budget(meminfo)
    plan = Plan([s.name for s in sets], budget=budget, available=available)
    used = 0
    for status in report.files:
        rel = status.model.rel_path
        if status.state != "ok" or status.path is None or status.size is None:
            plan.skipped.append((rel, f"{status.state}: {status.reason}"))
        elif used + status.size > budget:
            plan.skipped.append((rel, f"{status.size / GB:.2f} GB would exceed the memory budget "
                                      f"({(budget - used) / GB:.2f} GB left of {budget / GB:.2f} GB)"))
        else:
            plan.files.append(Target(rel, status.path, status.size))
            used += status.size
    return plan


@dataclass
class Stats:
    read: int = 0
    files_done: int = 0
    seconds: float = 0.0
    stopped: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.read / MB / self.seconds if self.seconds > 0 else 0.0


class Prefetcher:
    """Reads every byte of the targets once, in CHUNK_BYTES pieces, from `threads` threads."""

    def __init__(self, targets: Sequence[Target], threads: int = THREADS, chunk: int = CHUNK_BYTES,
                 stop: threading.Event | None = None, progress_every_s: float = PROGRESS_EVERY_S) -> None:
        self.targets = list(targets)
        self.threads = max(1, threads)
        self.chunk = chunk
        self.stop = stop or threading.Event()
        self.progress_every_s = progress_every_s
        self.stats = Stats()
        self._lock = threading.Lock()
        self._pieces = iter([(t, off, min(chunk, t.size - off))
                             for t in self.targets for off in range(0, t.size, chunk)])
        self._left = {t.path: t.size for t in self.targets}
        self._fds: dict[str, int] = {}

    def read_range(self, fd: int, offset: int, length: int, buf: memoryview) -> int:
        """Read [offset, offset+length) into the page cache (and `buf`); the bytes read."""
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)  # start it all in one go
        done = 0
        while done < length:
            n = os.preadv(fd, [buf[:length - done]], offset + done)
            if n == 0:
                break  # the file shrank: read what there is
            done += n
        return done

    def run(self) -> Stats:
        started = time.monotonic()
        workers = [threading.Thread(target=self._work, name=f"prefetch-{i}", daemon=True)
                   for i in range(self.threads)]
        for t in workers:
            t.start()
        last = 0
        while any(t.is_alive() for t in workers):
            time.sleep(0.1)
            now = time.monotonic()
            if now - started - last >= self.progress_every_s:
                last = now - started
                self.stats.seconds = now - started
                log.info("%.2f of %.2f GB read (%.0f MB/s)", self.stats.read / GB,
                         sum(t.size for t in self.targets) / GB, self.stats.mb_per_s)
        self.stats.seconds = time.monotonic() - started
        self.stats.stopped = self.stop.is_set()
        for fd in self._fds.values():
            os.close(fd)
        return self.stats

    def _fd(self, target: Target) -> int:
        with self._lock:
            if target.path not in self._fds:
                fd = os.open(target.path, os.O_RDONLY)
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                self._fds[target.path] = fd
            return self._fds[target.path]

    def _work(self) -> None:
        buf = memoryview(bytearray(self.chunk))
        while not self.stop.is_set():
            with self._lock:
                piece = next(self._pieces, None)
            if piece is None:
                return
            target, offset, length = piece
            try:
                n = self.read_range(self._fd(target), offset, length, buf)
            except OSError as exc:
                with self._lock:
                    self.stats.errors.append(f"{target.rel_path}: {exc.strerror or exc}")
                n = 0  # go on with the other pieces: one bad file must not stall the rest
            with self._lock:
                self.stats.read += n
                self._left[target.path] -= length
                if self._left[target.path] == 0:
                    self.stats.files_done += 1


def prefetch(settings: Settings, spec: str, meminfo_path: str = "/proc/meminfo",
             threads: int = THREADS, stop: threading.Event | None = None) -> Stats | None:
    """Plan, log the plan, read, log the result. None when prefetch is off or there is nothing to read."""
    sets = chosen_sets(spec, settings)
    if not sets:
        if spec.strip().lower() not in OFF:
            log.info("PREFETCH_MODELS=%s: this volume holds no complete model set; nothing to read", spec)
        return None
    plan = make_plan(settings, sets, read_meminfo(meminfo_path))
    log.info("set(s) %s: reading %d files, %.2f GB, with %d threads (memory budget %.2f GB: "
             "MemAvailable %.2f GB less a margin)", ",".join(plan.sets), len(plan.files), plan.total / GB,
             threads, plan.budget / GB, plan.available / GB)
    for rel, why in plan.skipped:
        log.warning("skipped %s: %s", rel, why)
    if not plan.files:
        return None
    stats = Prefetcher(plan.files, threads=threads, stop=stop).run()
    for err in stats.errors:
        log.warning("read error: %s", err)
    verb = "stopped after" if stats.stopped else "done:"
    log.info("%s %.2f GB of %d files in %.1f s (%.0f MB/s)", verb, stats.read / GB, stats.files_done,
             stats.seconds, stats.mb_per_s)
    return stats


def _on_sigterm(stop: threading.Event) -> Callable[[int, object], None]:
    def handle(signum: int, frame: object) -> None:
        log.info("SIGTERM: stopping")
        stop.set()
    return handle


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 whatever was or was not read (prefetch is an optimisation); 2 on a bad set list."""
    parser = argparse.ArgumentParser(
        prog="python -m wan_worker.prefetch",
        description="Read model sets into the page cache so ComfyUI's first load is fast.")
    parser.add_argument("--sets", default=None, metavar="SETS",
                        help=f"auto, all, or a list of {', '.join(MODEL_SETS)} (default: PREFETCH_MODELS)")
    parser.add_argument("--threads", type=int, default=None, help="reads in flight (default: PREFETCH_THREADS)")
    parser.add_argument("--meminfo", default="/proc/meminfo", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="[prefetch] %(message)s", force=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, _on_sigterm(stop))
    try:
        settings = load_settings()
        spec = args.sets if args.sets is not None else settings.prefetch_models
        prefetch(settings, spec, args.meminfo, args.threads or settings.prefetch_threads, stop)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except WorkerError as exc:
        log.error("%s", exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
