"""One job from submission to its end: send, poll /status, show progress, cancel when told to stop.

Stopping comes two ways and ends the same: Ctrl-C (KeyboardInterrupt in the main thread) or the
`stop` event (a batch stopping its jobs from the main thread). Either way the job is cancelled on
the endpoint so it stops costing GPU time, and `Interrupted` says whether that worked.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .api import FINAL_STATES, Api, WaitExpired
from .display import JobDisplay, State
from .results import Outcome, outcome_from

__all__ = ["Interrupted", "WaitExpired", "WaitOptions", "run_job"]

log = logging.getLogger("wan_worker.client")


class Interrupted(Exception):
    """The user stopped the wait (Ctrl-C, or a batch stopping); the message says what became of the job."""


@dataclass(frozen=True)
class WaitOptions:
    poll_s: float = 2.0  # between /status calls on a hosted endpoint
    max_wait_s: float | None = None  # None: wait as long as the job runs


def run_job(api: Api, job_input: dict[str, Any], display: JobDisplay, options: WaitOptions,
            stop: threading.Event | None = None) -> Outcome:
    """Send the job and wait for its end. Raises Interrupted, WaitExpired or ApiError."""
    stop = stop or threading.Event()
    start = time.monotonic()
    job_id: str | None = None
    try:
        display.update(State("SUBMITTING"))
        job_id, status = api.submit(job_input)
        log.debug("job %s sent to %s", job_id, api.label)
        note = "" if api.reports_progress else "a local server sends no progress"
        display.update(State(status), note if status == "IN_PROGRESS" else "")
        body = _wait(api, job_id, display, options, stop, start, note)
    except KeyboardInterrupt:
        raise Interrupted(_cancel(api, job_id)) from None
    return outcome_from(job_id, body, time.monotonic() - start)


def _wait(api: Api, job_id: str, display: JobDisplay, options: WaitOptions, stop: threading.Event,
          start: float, note: str) -> dict[str, Any]:
    while True:
        if stop.is_set():
            raise Interrupted(_cancel(api, job_id))
        body = api.status(job_id)
        state = State.from_status(body)
        display.update(state, note if state.status == "IN_PROGRESS" else "")
        if state.status in FINAL_STATES:
            return body
        if options.max_wait_s is not None and time.monotonic() - start > options.max_wait_s:
            raise WaitExpired(f"the job did not end within --wait {options.max_wait_s:g} s; "
                              + _cancel(api, job_id))
        if stop.wait(options.poll_s):
            raise Interrupted(_cancel(api, job_id))


def _cancel(api: Api, job_id: str | None) -> str:
    """Cancel on the endpoint; never raises (the user is leaving either way)."""
    if job_id is None:
        return "stopped before the endpoint gave the job an id; if it was queued, it will still run"
    try:
        return api.cancel(job_id)
    except Exception as exc:  # noqa: BLE001 - ApiError or worse: report it and leave
        return f"could not cancel job {job_id} ({exc}); cancel it in the RunPod console"
