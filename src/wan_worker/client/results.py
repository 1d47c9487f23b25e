"""A finished job: what it says (success or the worker's error) and its files saved to disk.

Files are written to `<name>.part` and renamed when complete, so a failed or interrupted download
never leaves a half video under the name a script is waiting for.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from ..errors import split_error
from .api import ApiError, RetryPolicy, strip_query, with_retries
from .display import ByteDisplay, human_size

# Result fields that hold whole files as base64: never printed, replaced by the saved path.
FILE_FIELDS = {"video": "video_path", "last_frame": "last_frame_path", "pose_video": "pose_video_path",
               "face_video": "face_video_path"}
# Animate's own control videos (return_preprocessed): result key -> what they are, for the summary
PREPROCESSED = {"pose_video": "pose video the worker made", "face_video": "face video the worker made"}


class SaveError(Exception):
    """The job succeeded but its result could not be written or downloaded."""


@dataclass
class Outcome:
    """How a job ended, from the endpoint's last /status answer."""

    job_id: str
    status: str
    output: Any = None
    error: str | None = None
    error_code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    delay_ms: float | None = None  # RunPod: time in the queue
    execution_ms: float | None = None  # RunPod: time on a worker

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and self.error is None


def outcome_from(job_id: str, body: dict[str, Any], elapsed_s: float) -> Outcome:
    """RunPod keeps only a failed job's `error` string, which the worker begins with its code
    (`CODE: sentence`); `error_code` and `details` come only from an output that still has them
    (a worker that did not go through the SDK's error path: a COMPLETED output holding `error` is
    a failure too)."""
    status, output = str(body.get("status")), body.get("output")
    error = body.get("error")
    out = output if isinstance(output, dict) else {}
    if error is None and out.get("error"):
        error = out["error"]
    if error is None and status in ("CANCELLED", "TIMED_OUT"):
        error = ("the job was cancelled" if status == "CANCELLED" else
                 "RunPod timed the job out (its execution timeout, or no worker took it in time)")
    if error is not None and status == "COMPLETED":
        status = "FAILED"
    details = out.get("details")
    code, text = split_error(_error_text(error)) if error is not None else (None, None)
    return Outcome(job_id, status, output, error=text,
                   error_code=out.get("error_code") or code,
                   details=details if isinstance(details, dict) else {},
                   elapsed_s=elapsed_s, delay_ms=_ms(body.get("delayTime")),
                   execution_ms=_ms(body.get("executionTime")))


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _error_text(error: Any) -> str:
    """The SDK reports a handler crash as a JSON string with a traceback: keep its message only."""
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            return error
        if isinstance(parsed, dict) and parsed.get("error_message"):
            return f"{parsed.get('error_type', 'error')}: {parsed['error_message']}"
        return error
    return json.dumps(error)


# -- saving ----------------------------------------------------------------------------------

@dataclass
class Saved:
    """Where a result's files went."""

    paths: dict[str, Path] = field(default_factory=dict)  # "video", "last_frame", "pose_video"... -> path
    images: list[Path] = field(default_factory=list)  # workflow mode outputs


def write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise SaveError(f"could not write {path}: {exc.strerror or exc}") from None
    return path


def decode_to(path: Path, b64: str, what: str) -> Path:
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise SaveError(f"the result's {what} is not valid base64") from None
    return write_atomic(path, data)


def download(url: str, path: Path, policy: RetryPolicy, *, quiet: bool = False,
             session: requests.Session | None = None) -> Path:
    """Stream `url` to `path` with its own progress bar; retried from the start after trouble."""
    http = session or requests.Session()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")

    def fetch() -> Path:
        with http.get(url, stream=True, timeout=(10, 60)) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("Content-Length") or 0) or None
            shown = ByteDisplay(f"downloading {path.name}", total, quiet=quiet)
            ok = False
            try:
                with part.open("wb") as f:
                    for block in resp.iter_content(1 << 20):
                        f.write(block)
                        shown.add(len(block))
                if total is not None and shown.done != total:
                    raise requests.ConnectionError("the download ended early")
                ok = True
            finally:
                shown.close(ok)
        os.replace(part, path)
        return path

    try:
        return with_retries(fetch, f"downloading {strip_query(url)}", policy)
    except ApiError as exc:
        raise SaveError(str(exc)) from None
    except OSError as exc:
        raise SaveError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)


def save_result(output: dict[str, Any], video_path: Path, last_frame_path: Path | None,
                policy: RetryPolicy, quiet: bool = False) -> Saved:
    """Decode or download the video (and last frame, Animate's pose and face videos, workflow-mode
    outputs) to disk."""
    saved = Saved()
    wanted = {"video": video_path, "last_frame": last_frame_path}
    wanted.update({key: preprocessed_path(video_path, key) for key in PREPROCESSED})
    for key, path in wanted.items():
        if path is not None:
            found = save_file(output, key, path, policy, quiet)
            if found is not None:
                saved.paths[key] = found
    for item in output.get("images") or []:
        if isinstance(item, dict) and isinstance(item.get("data"), str):
            name = Path(str(item.get("filename") or "output")).name
            dest = video_path.with_name(f"{video_path.stem}_{name}")
            saved.images.append(decode_to(dest, item["data"], name) if item.get("type") == "base64"
                                else download(item["data"], dest, policy, quiet=quiet))
    return saved


def preprocessed_path(video_path: Path, key: str) -> Path:
    """Where an Animate job's own pose or face video goes: beside the MP4 (out.mp4 -> out_pose.mp4)."""
    return video_path.with_name(f"{video_path.stem}_{key.removesuffix('_video')}.mp4")


def save_file(output: dict[str, Any], key: str, path: Path, policy: RetryPolicy, quiet: bool) -> Path | None:
    """`key` as base64 in the result, or `<key>_url` (S3 delivery), written to `path`; None when absent."""
    what = key.replace("_", " ")
    if isinstance(output.get(key), str):
        return decode_to(path, output[key], what)
    if isinstance(output.get(f"{key}_url"), str):
        return download(output[f"{key}_url"], path, policy, quiet=quiet)
    return None


# -- reporting -------------------------------------------------------------------------------

def summary(outcome: Outcome, saved: Saved | None) -> dict[str, Any]:
    """The result for `--json`: everything the worker said, base64 replaced by saved paths."""
    base: dict[str, Any] = {"job_id": outcome.job_id, "status": outcome.status}
    if not outcome.ok:
        base.update(error=outcome.error, error_code=outcome.error_code, details=outcome.details)
    out = outcome.output if isinstance(outcome.output, dict) else ({} if outcome.output is None
                                                                   else {"output": outcome.output})
    for key, value in out.items():
        if key in FILE_FIELDS:
            continue
        if key == "images" and isinstance(value, list):
            value = [{k: v for k, v in i.items() if not (k == "data" and i.get("type") == "base64")}
                     if isinstance(i, dict) else i for i in value]
        base.setdefault(key, value)
    if saved is not None:
        for key, path in saved.paths.items():
            base[FILE_FIELDS[key]] = str(path)
        if saved.images:
            base["image_paths"] = [str(p) for p in saved.images]
    base["client"] = {"elapsed_s": round(outcome.elapsed_s, 2), "queue_ms": outcome.delay_ms,
                      "execution_ms": outcome.execution_ms}
    return base


def describe_success(outcome: Outcome, saved: Saved) -> list[str]:
    """Lines for a person: what was saved, the video's shape, the seed and where time went."""
    out = outcome.output if isinstance(outcome.output, dict) else {}
    lines = []
    shape = _shape(out)
    if "video" in saved.paths:
        size = human_size(saved.paths["video"].stat().st_size)
        lines.append(f"saved {saved.paths['video']} ({size}{', ' + shape if shape else ''})")
    elif out.get("dry_run"):
        models = (out.get("checks") or {}).get("models") or {}
        lines.append(f"dry run: {shape}; models {'ok' if models.get('ok') else 'NOT ok (see --json)'}; "
                     f"workflow of {len(out.get('workflow') or {})} nodes; nothing saved")
    else:
        lines.append("the job returned no video")
    if "last_frame" in saved.paths:
        lines.append(f"saved {saved.paths['last_frame']} (last frame)")
    lines += [f"saved {saved.paths[key]} ({what})" for key, what in PREPROCESSED.items() if key in saved.paths]
    lines += [f"saved {p}" for p in saved.images]
    if "seed" in out:
        lines.append(f"seed {out['seed']}")
    lines.append(timing_line(outcome))
    return lines


def _shape(out: dict[str, Any]) -> str:
    if not {"width", "height"} <= out.keys():
        return ""
    text = f"{out['width']}x{out['height']}"
    if "length" in out and "fps" in out:
        text += f", {out['length']} frames at {out['fps']:g} fps"
    if "duration_s" in out:
        text += f" = {out['duration_s']:g} s"
    for unit in ("segment", "chunk", "window"):  # graphs made of parts (a story's segments, S2V's chunks)
        count = out.get(f"{unit}s")
        if isinstance(count, list):  # `segments`: one entry per segment
            count = len(count)
        if isinstance(count, int) and not isinstance(count, bool):
            text += f" in {count} {unit}{'s' if count != 1 else ''}"
    if out.get("audio") is True:
        text += ", with sound"
    return text


def timing_line(outcome: Outcome) -> str:
    parts = [f"job {outcome.job_id}"]
    if outcome.delay_ms is not None:
        parts.append(f"{outcome.delay_ms / 1000:.1f} s queued")
    if outcome.execution_ms is not None:
        parts.append(f"{outcome.execution_ms / 1000:.1f} s running")
    out = outcome.output if isinstance(outcome.output, dict) else {}
    timings = out.get("timings_ms") or {}
    if isinstance(timings, dict) and "execute" in timings:
        parts.append(f"ComfyUI {timings['execute'] / 1000:.1f} s")
    parts.append(f"{outcome.elapsed_s:.1f} s in all")
    return ", ".join(parts)


def describe_failure(outcome: Outcome) -> list[str]:
    """The worker's code and sentence, and each field problem for INVALID_INPUT."""
    code = f"{outcome.error_code}: " if outcome.error_code else ""
    lines = [f"job {outcome.job_id} {outcome.status.lower().replace('_', ' ')}: {code}{outcome.error}"]
    for problem in outcome.details.get("errors") or []:
        if isinstance(problem, dict):
            lines.append(f"  {problem.get('field')}: {problem.get('message')}")
    return lines
