"""Talking to an endpoint: RunPod's hosted queue API, or the SDK's local test server.

Both offer `/run` and `/status/<job>`; they differ where it matters to a waiting user:
- hosted (`https://api.runpod.ai/v2/<id>`): `/status` answers at once, with the worker's progress
  updates as `output` while IN_PROGRESS; `/cancel/<job>` stops a job; a bearer key is required.
- local (`--rp_serve_api`): `/run` only stores the job; the job runs inside the `POST /status`
  request that asks for it, which answers when the job has ended. No progress, no `/cancel`.

Network trouble (refused or dropped connections, timeouts, 429 and 5xx answers) is retried with
exponential backoff (honouring Retry-After); what is left becomes one `ApiError` with a sentence.
"""
from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

log = logging.getLogger("wan_worker.client")

T = TypeVar("T")

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """The endpoint could not be reached or refused the request; the message says what to do."""


class WaitExpired(Exception):
    """The client's own wait limit (--wait) ran out."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is repeated after network trouble."""

    attempts: int = 6  # tries in all, the first included
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def wait_s(self, retry: int, retry_after: float | None = None) -> float:
        """Exponential backoff with a little jitter, or what the server asked for (capped)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait_s)
        base = self.first_wait_s * 2 ** retry
        return min(base * random.uniform(0.8, 1.2), self.max_wait_s)


def strip_query(url: str) -> str:
    """A URL fit for a message: presigned S3 URLs carry their signature in the query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None  # unreadable: our own backoff applies


def _reason(exc: BaseException) -> str:
    """A short cause, without URLs (they may hold signatures) or headers (the API key)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason or ''}".strip()
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "refused" in text.lower():
            return "connection refused"
        if "RemoteDisconnected" in text or "reset" in text.lower() or "aborted" in text.lower():
            return "connection dropped"
        return "connection failed"
    return type(exc).__name__


def with_retries(call: Callable[[], T], what: str, policy: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, repeated after transient trouble; then an ApiError naming `what` and the cause.

    A /run whose answer was lost (dropped connection, timeout) is sent again too: a possible second
    job is the lesser evil next to a job running unseen, with no id to fetch or cancel it by."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status not in RETRY_STATUSES:
                raise ApiError(_refusal(what, exc.response)) from None
            error: requests.RequestException = exc
            wait = policy.wait_s(attempt, _retry_after(exc.response))
        except (requests.ConnectionError, requests.Timeout) as exc:
            error, wait = exc, policy.wait_s(attempt)
        except requests.RequestException as exc:  # a bad URL and the like: retrying cannot help
            raise ApiError(f"{what}: {_reason(exc)}; check the URL") from None
        if attempt + 1 < policy.attempts:
            log.warning("%s: %s; retrying in %.1f s (%d/%d)", what, _reason(error), wait, attempt + 1,
                        policy.attempts - 1)
            sleep(wait)
    raise ApiError(f"{what} failed {policy.attempts} times ({_reason(error)}); check the endpoint "
                   "and your network, then try again")


def _refusal(what: str, response: requests.Response | None) -> str:
    """An answer that retrying will not change, as a sentence with the fix."""
    status = response.status_code if response is not None else 0
    if status == 401:
        return f"{what}: the endpoint refused the API key (HTTP 401); check RUNPOD_API_KEY"
    if status == 404:
        return f"{what}: not found (HTTP 404); check the endpoint id or URL"
    if status == 413:
        return (f"{what}: the request is too large (HTTP 413); RunPod takes at most 10 MB per /run, "
                "so send the image as an https:// URL or make it smaller")
    body = ""
    if response is not None:
        body = " ".join(response.text.split())[:200]
    return f"{what}: HTTP {status}{': ' + body if body else ''}"


class Api(Protocol):
    """What the client needs from an endpoint."""

    label: str
    reports_progress: bool
    policy: RetryPolicy

    def submit(self, job_input: dict[str, Any]) -> tuple[str, str]:
        """Send the job; its id and first status (IN_QUEUE on RunPod)."""

    def status(self, job_id: str) -> dict[str, Any]:
        """The endpoint's /status answer: `status`, and `output`/`error` as far as known."""

    def cancel(self, job_id: str) -> str:
        """Stop the job on the endpoint; a sentence saying what happened."""


def _json(response: requests.Response) -> dict[str, Any]:
    response.raise_for_status()
    try:
        body = response.json()
    except ValueError:
        raise ApiError(f"the endpoint answered HTTP {response.status_code} without JSON") from None
    if not isinstance(body, dict):
        raise ApiError("the endpoint answered with JSON that is not an object")
    return body


class LocalApi:
    """The runpod SDK's local test server (`python -m wan_worker --rp_serve_api`), plain requests."""

    reports_progress = False

    def __init__(self, url: str, policy: RetryPolicy, max_wait_s: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.label = self.url
        self.policy = policy
        self.max_wait_s = max_wait_s
        self.session = requests.Session()

    def submit(self, job_input: dict[str, Any]) -> tuple[str, str]:
        body = with_retries(lambda: _json(self.session.post(f"{self.url}/run", json={"input": job_input},
                                                            timeout=60)),
                            "sending the job", self.policy)
        return _job_id(body), str(body.get("status") or "IN_QUEUE")

    def status(self, job_id: str) -> dict[str, Any]:
        """The job runs inside this request, so only --wait limits how long it may take; a timed-out
        request is not repeated (the server is busy with the job until it ends)."""
        def ask() -> dict[str, Any]:
            try:
                return _json(self.session.post(f"{self.url}/status/{job_id}", timeout=(10, self.max_wait_s)))
            except requests.ReadTimeout:
                raise WaitExpired(f"the job did not end within --wait {self.max_wait_s:g} s; "
                                  + self.cancel(job_id)) from None
        return with_retries(ask, f"asking for the status of job {job_id}", self.policy)

    def cancel(self, job_id: str) -> str:
        return "the local test server cannot cancel jobs; the worker finishes this one"


class HostedApi:
    """RunPod's hosted queue API through the runpod SDK's endpoint client.

    The SDK builds the URLs (`runpod.endpoint_url_base`, which follows RUNPOD_ENDPOINT_BASE_URL),
    sends the bearer key and turns 401 into an error. Its session retries only 408/429 and only on
    http://, so it gets plain adapters here: one retry policy, ours, for http and https alike.
    """

    reports_progress = True

    def __init__(self, endpoint_id: str, api_key: str, policy: RetryPolicy) -> None:
        import runpod  # lazy: ~1.5 s of imports, and only hosted endpoints need it
        from requests.adapters import HTTPAdapter

        self.endpoint_id = endpoint_id
        self.endpoint = runpod.Endpoint(endpoint_id, api_key=api_key)
        self.client = self.endpoint.rp_client
        for prefix in ("http://", "https://"):
            self.client.rp_session.mount(prefix, HTTPAdapter())
        self.label = f"{self.client.endpoint_url_base}/{endpoint_id}"
        self.policy = policy

    def _call(self, call: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
        try:
            return with_retries(call, what, policy or self.policy)
        except RuntimeError as exc:  # the SDK's 401
            if "401" in str(exc):
                raise ApiError(f"{what}: RunPod refused the API key (HTTP 401); check RUNPOD_API_KEY") from None
            raise
        except ValueError:
            raise ApiError(f"{what}: RunPod answered without JSON") from None

    def submit(self, job_input: dict[str, Any]) -> tuple[str, str]:
        body = self._call(lambda: self.client.post(f"{self.endpoint_id}/run", {"input": job_input}, timeout=60),
                          "sending the job")
        return _job_id(body), str(body.get("status") or "IN_QUEUE")

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call(lambda: self.client.get(f"{self.endpoint_id}/status/{job_id}", timeout=30),
                          f"asking for the status of job {job_id}")

    def cancel(self, job_id: str) -> str:
        from runpod.endpoint import Job

        job = Job(self.endpoint_id, job_id, self.client)
        quick = RetryPolicy(attempts=3, first_wait_s=min(self.policy.first_wait_s, 0.5), max_wait_s=2.0)
        body = self._call(lambda: job.cancel(timeout=10), "cancelling the job", quick)  # the user is waiting
        return f"cancelled job {job_id} on the endpoint (status {body.get('status', '?')})"


def _job_id(body: dict[str, Any]) -> str:
    job_id = body.get("id")
    if not job_id:
        raise ApiError(f"the endpoint accepted the job but sent no id (status {body.get('status')})")
    return str(job_id)

