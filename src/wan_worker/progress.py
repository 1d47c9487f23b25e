"""Progress of a running job, from ComfyUI's events to RunPod progress updates.

A 1-5 minute job should not look dead: each phase (downloading LoRAs, loading models, high-noise sampling, low-noise
sampling, decoding, encoding, uploading) and each sampler step becomes an update like
`{"phase": "sampling_high", "step": 2, "steps": 4, "percent": 37}`. Updates go out at most once a
second, and the newest state always goes out within that second (a timer sends what an early
event left pending), so a long first step never shows the previous phase. The spacing also keeps
updates in order: the SDK sends each one from a thread of its own.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol

from . import background

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]
Schedule = Callable[[float, Callable[[], None]], Callable[[], None]]  # (delay, fn) -> cancel

# Where each phase sits on the 0-100 scale of a whole I2V job; sampling takes most of the time.
BANDS = {
    "preprocessing": (0, 4),  # Animate from a plain video: pose/face/mask made by the worker, per frame
    "downloading_loras": (4, 5),  # only when a job's LoRA URLs are not cached yet
    "loading_models": (5, 10),
    "sampling_high": (10, 50),
    "sampling_low": (50, 90),
    "sampling": (10, 90),  # a one-model graph (5B)
    "decoding": (90, 95),
    "upscaling": (95, 96),  # post-processing (wan_worker.postprocess), when a job asks for it
    "interpolating": (96, 97),
    "encoding": (97, 98),
    "uploading": (98, 100),
}
INTERVAL_S = 1.0


@dataclass(frozen=True)
class Phase:
    """A phase that a graph of several parts (S2V chunks, Animate windows, a story's segments) goes
    through once per part: its band is shared out between the parts, and updates say which part it
    is, e.g. `{"phase": "sampling", "chunk": 2, "chunks": 3, "step": 1, "steps": 4, "percent": 40}`.
    Where a part goes through several phases (`cycle`: a segment samples high, then low), the part's
    slice spans their bands together, so percent keeps rising from one part to the next."""

    name: str
    part: int
    parts: int
    unit: str  # "chunk", "window", "segment"
    cycle: tuple[str, ...] = ()  # the phases each part goes through, in order; () = this one alone

    def detail(self) -> dict[str, int]:
        return {self.unit: self.part, f"{self.unit}s": self.parts}

    def position(self, done: float = 0.0) -> float:
        """Where `done` (0..1) of this part sits on the job's 0-100 scale."""
        names = self.cycle or (self.name,)
        low, high = BANDS.get(names[0], (0, 100))[0], BANDS.get(names[-1], (0, 100))[1]
        a, b = BANDS.get(self.name, (low, high))
        span = max(high - low, 1)
        within = (a - low + (b - a) * done) / span
        return low + span * (self.part - 1 + within) / self.parts

    def percent(self, done: float = 0.0) -> int:
        return round(self.position(done))


class Timed(Protocol):
    """The handler's timings: `with timings.phase("image"): ...` adds to the result's timings_ms."""

    def phase(self, name: str) -> ContextManager[None]: ...


def _key(phase: str | Phase) -> float:
    """Phases only move forward along the job's scale (a part's phases, then the next part's)."""
    if isinstance(phase, Phase):
        return phase.position()
    return BANDS.get(phase, (0, 0))[0]


def _timer(delay: float, fn: Callable[[], None]) -> Callable[[], None]:
    """On the worker's one background thread: a thread per pending update cost ~1.7 ms a job."""
    return background.schedule(delay, fn)


class Progress:
    """Turns events into throttled updates. `phases` maps node ids to phase names (or per-part
    `Phase`s); nodes not in it count as `default_phase`. Use as a context manager: leaving it drops
    any pending update."""

    def __init__(self, send: Send, phases: dict[str, str | Phase] | None = None,
                 default_phase: str = "loading_models", interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, schedule: Schedule = _timer) -> None:
        self.send, self.phases, self.default_phase = send, phases or {}, default_phase
        self.interval_s, self.clock, self.schedule = interval_s, clock, schedule
        self.state: dict[str, Any] = {}
        self.at: str | Phase | None = None  # the phase the state is in
        self.sent_state: dict[str, Any] | None = None
        self.last_sent: float | None = None
        self.cancel_pending: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.closed = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.closed = True
            if self.cancel_pending:
                self.cancel_pending()

    def follow(self, phases: dict[str, str | Phase], default_phase: str) -> None:
        """Which node ids start which phase, for the graph about to run."""
        self.phases, self.default_phase = phases, default_phase

    def phase(self, name: str | Phase, **detail: Any) -> None:
        """Enter a phase; `detail` (e.g. bytes downloaded) rides along in the update."""
        self.at = name
        if isinstance(name, Phase):
            self._update({"phase": name.name, **name.detail(), "percent": name.percent(), **detail})
        else:
            self._update({"phase": name, "percent": BANDS.get(name, (0, 0))[0], **detail})

    def preprocessing(self, done: int, total: int) -> None:
        """Frames preprocessed so far (wan_worker.preprocess's `progress` callback): an update like
        {"phase": "preprocessing", "frame": 40, "frames": 81, "percent": 2}, throttled as the rest."""
        low, high = BANDS["preprocessing"]
        self._update({"phase": "preprocessing", "frame": done, "frames": total,
                      "percent": round(low + (high - low) * done / max(total, 1))})

    def on_event(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "executing" and data.get("node") is not None:
            at = self.phases.get(str(data["node"]), self.default_phase)
            if self._forward(at):
                self.phase(at)
        elif kind == "progress" and data.get("max"):
            at = self.phases.get(str(data.get("node")), self.default_phase)
            if at != self.at and not self._forward(at):
                return
            self.at = at
            step, steps = int(data["value"]), int(data["max"])
            if isinstance(at, Phase):
                self._update({"phase": at.name, **at.detail(), "step": step, "steps": steps,
                              "percent": at.percent(step / steps)})
                return
            low, high = BANDS.get(at, (0, 100))
            self._update({"phase": at, "step": step, "steps": steps,
                          "percent": round(low + (high - low) * step / steps)})

    def _forward(self, at: str | Phase) -> bool:
        """Phases only move forward: ComfyUI loads the low-noise model after high-noise sampling,
        which must not send the job back to `loading_models` and 0 %; chunk 2 follows chunk 1."""
        if self.at is None:
            return True
        return at != self.at and _key(at) >= _key(self.at)

    def _update(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.state = state
            if self.closed or self.cancel_pending or state == self.sent_state:
                return  # a pending timer will send the newest state
            wait = 0.0 if self.last_sent is None else self.interval_s - (self.clock() - self.last_sent)
            if wait > 0:
                self.cancel_pending = self.schedule(wait, self._flush)
                return
            self._send_locked()

    def _flush(self) -> None:
        with self.lock:
            self.cancel_pending = None
            if not self.closed and self.state != self.sent_state:
                self._send_locked()

    def _send_locked(self) -> None:
        self.last_sent, self.sent_state = self.clock(), dict(self.state)
        try:
            self.send(dict(self.state))
        except Exception:  # noqa: BLE001 - a lost progress update must never fail the job
            log.warning("progress update failed", exc_info=True)
