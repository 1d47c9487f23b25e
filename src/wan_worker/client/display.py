"""What the user sees while a job waits and runs: a progress bar on a terminal, plain lines elsewhere.

A job takes minutes, so the bar is fed by everything the endpoint tells: the queue (IN_QUEUE), the
worker's progress updates (`{"phase": "sampling_high", "step": 2, "steps": 4, "percent": 37}`)
and the time spent. When stderr is not a terminal (CI, logs, pipes) a line is written only when
the state changes, so a log stays short and readable.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

PHASE_NAMES = {
    "loading_models": "loading models",
    "sampling_high": "sampling (high noise)",
    "sampling_low": "sampling (low noise)",
    "decoding": "decoding",
    "upscaling": "upscaling",
    "interpolating": "interpolating",
    "encoding": "encoding",
    "uploading": "uploading",
    "running": "running",
}
BAR_TEXT_WIDTH = 26  # the longest state text, "sampling (high noise) 2/4", so the bar stays put
# what graphs made of parts call a part, outermost first: a story's segments, S2V's chunks, Animate's windows
PART_UNITS = ("segment", "chunk", "window")
STATUS_NAMES = {
    "SUBMITTING": "sending",
    "IN_QUEUE": "queued",
    "IN_PROGRESS": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMED_OUT": "timed out",
}


_LINES = threading.Lock()


@dataclass(frozen=True)
class State:
    """One observation of a job: its RunPod status and, while running, the worker's progress."""

    status: str
    phase: str | None = None
    step: int | None = None
    steps: int | None = None
    percent: float | None = None
    part: str | None = None  # "segment 2/4", "chunk 2/3", "window 1/4": graphs made of parts

    @classmethod
    def from_status(cls, body: dict[str, Any]) -> "State":
        status = str(body.get("status") or "UNKNOWN")
        out = body.get("output")
        if status != "IN_PROGRESS" or not isinstance(out, dict) or "phase" not in out:
            return cls(status)
        return cls(status, str(out["phase"]), _int(out.get("step")), _int(out.get("steps")),
                   _num(out.get("percent")), _part(out))

    def text(self) -> str:
        """`queued`, `sampling (high noise) 2/4`, `sampling chunk 2/3 1/4`,
        `sampling (low noise) segment 2/4 3/4`, `completed`."""
        if self.phase is None:
            return STATUS_NAMES.get(self.status, self.status.lower())
        name = PHASE_NAMES.get(self.phase, self.phase.replace("_", " "))
        if self.part:
            name = f"{name} {self.part}"
        return f"{name} {self.step}/{self.steps}" if self.step is not None and self.steps else name

    def line_key(self) -> tuple[Any, ...]:
        """What makes a new plain line: a new status, phase, part or step (not a repeated poll)."""
        return (self.status, self.phase, self.part, self.step)


def _part(out: dict[str, Any]) -> str | None:
    """`chunk 2/3` from `{"chunk": 2, "chunks": 3}` (or segment/segments, window/windows; each
    unit an update names, outermost first)."""
    found = []
    for unit in PART_UNITS:
        part, parts = _int(out.get(unit)), _int(out.get(f"{unit}s"))
        if part is not None and parts:
            found.append(f"{unit} {part}/{parts}")
    return " ".join(found) or None


def human_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _width(stream: IO[str]) -> dict[str, Any]:
    """Follow the terminal's width, unless it reports none (a bare pty, some CI runners): there a
    zero-column bar would print nothing, so use 100 columns."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 100}


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class JobDisplay:
    """Shows one job's progress: a tqdm bar on a terminal, one line per change otherwise.

    `label` prefixes plain lines (the job's name in a batch). `bar=False` forces plain lines;
    `quiet=True` shows nothing. Use as a context manager.
    """

    def __init__(self, label: str = "", *, bar: bool | None = None, quiet: bool = False,
                 stream: IO[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.quiet = quiet
        self.use_bar = (is_terminal(self.stream) if bar is None else bar) and not quiet
        self.clock = clock
        self.start = clock()
        self.last_key: tuple[Any, ...] | None = None
        self.percent = 0.0
        self.text_width = BAR_TEXT_WIDTH  # grows to the longest text shown, so the bar never moves back
        self._bar: Any = None
        self._ticker: threading.Event | None = None

    def __enter__(self) -> "JobDisplay":
        if self.use_bar:
            from tqdm import tqdm  # lazy: only a terminal needs it

            self._bar = tqdm(total=100, file=self.stream, leave=True, **_width(self.stream),
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")
            self._start_ticker()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_ticker(self) -> None:
        """Keep the elapsed time moving while a request blocks (the local server's /status)."""
        stop = self._ticker = threading.Event()

        def tick() -> None:
            while not stop.wait(1.0):
                bar = self._bar
                if bar is not None:
                    bar.refresh()

        threading.Thread(target=tick, name="wan-video-bar", daemon=True).start()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def update(self, state: State, note: str = "") -> None:
        """Show a new observation; `note` adds context (e.g. "no progress from a local server")."""
        if self.quiet:
            return
        if state.percent is not None:
            self.percent = max(self.percent, state.percent)  # the bar never goes backwards
        if state.status == "COMPLETED":
            self.percent = 100.0
        text = state.text() + (f" ({note})" if note else "")
        if self._bar is not None:
            self._bar.n = self.percent
            prefix = f"{self.label}: " if self.label else ""
            self.text_width = max(self.text_width, len(text))
            self._bar.set_description_str(f"{prefix}{text:<{self.text_width}}", refresh=False)
            self._bar.refresh()
            return
        if state.line_key() != self.last_key:
            self.last_key = state.line_key()
            self.line(text + (f" {self.percent:.0f}%" if state.phase else ""))

    def line(self, text: str) -> None:
        """A plain progress line: `[  12s] label: text`."""
        if self.quiet:
            return
        prefix = f"{self.label}: " if self.label else ""
        message = f"[{self.elapsed():5.0f}s] {prefix}{text}"
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
            return
        with _LINES:  # batch jobs write from several threads; print() would interleave halves
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ByteDisplay:
    """A download's own bar (bytes, speed) on a terminal; one line when done otherwise."""

    def __init__(self, what: str, total: int | None, *, quiet: bool = False,
                 stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.what, self.total, self.quiet = what, total, quiet
        self.done = 0
        self.start = time.monotonic()
        self._bar: Any = None
        if is_terminal(self.stream) and not quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                             file=self.stream, leave=True, **_width(self.stream))

    def add(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self, ok: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
        elif ok and not self.quiet:
            spent = time.monotonic() - self.start
            print(f"[{spent:5.1f}s] {self.what}: {human_size(self.done)} downloaded", file=self.stream, flush=True)
