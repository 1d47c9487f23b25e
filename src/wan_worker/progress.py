"""Progress of a running job, from ComfyUI's events to RunPod progress updates.

A 1-5 minute job should not look dead: each phase (loading models, high-noise sampling, low-noise
sampling, decoding, encoding, uploading) and each sampler step becomes an update like
`{"phase": "sampling_high", "step": 2, "steps": 4, "percent": 37}`: each phase change at once,
step updates at most one a second.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]

# Where each phase sits on the 0-100 scale of a whole I2V job; sampling takes most of the time.
BANDS = {
    "loading_models": (0, 10),
    "sampling_high": (10, 50),
    "sampling_low": (50, 90),
    "decoding": (90, 95),
    "encoding": (95, 98),
    "uploading": (98, 100),
}
INTERVAL_S = 1.0


class Progress:
    """Turns events into throttled updates. `phases` maps node ids to phase names; nodes not in it
    count as `default_phase`."""

    def __init__(self, send: Send, phases: dict[str, str] | None = None,
                 default_phase: str = "loading_models", interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.send, self.phases, self.default_phase = send, phases or {}, default_phase
        self.interval_s, self.clock = interval_s, clock
        self.state: dict[str, Any] = {}
        self.last_sent: float | None = None
        self.sent_state: dict[str, Any] | None = None

    def phase(self, name: str) -> None:
        self._update({"phase": name, "percent": BANDS.get(name, (0, 0))[0]})

    def on_event(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "executing" and data.get("node") is not None:
            name = self.phases.get(str(data["node"]), self.default_phase)
            if self._forward(name):
                self.phase(name)
        elif kind == "progress" and data.get("max"):
            name = self.phases.get(str(data.get("node")), self.default_phase)
            if name != self.state.get("phase") and not self._forward(name):
                return
            step, steps = int(data["value"]), int(data["max"])
            low, high = BANDS.get(name, (0, 100))
            self._update({"phase": name, "step": step, "steps": steps,
                          "percent": round(low + (high - low) * step / steps)})

    def _forward(self, name: str) -> bool:
        """Phases only move forward: ComfyUI loads the low-noise model after high-noise sampling,
        which must not send the job back to `loading_models` and 0 %."""
        current = self.state.get("phase")
        if current is None:
            return True
        return name != current and BANDS.get(name, (0, 0))[0] >= BANDS.get(current, (0, 0))[0]

    def _update(self, state: dict[str, Any]) -> None:
        """Send a new phase at once (a job has six), a new step at most once per interval."""
        self.state = state
        now = self.clock()
        if state == self.sent_state:
            return
        new_phase = self.sent_state is None or state["phase"] != self.sent_state["phase"]
        if not new_phase and self.last_sent is not None and now - self.last_sent < self.interval_s:
            return
        self.last_sent, self.sent_state = now, dict(state)
        try:
            self.send(dict(state))
        except Exception:  # noqa: BLE001 - a lost progress update must never fail the job
            log.warning("progress update failed", exc_info=True)
