"""Handing outputs to the client: inline base64 or an S3 URL, chosen by the job and the size.

RunPod caps a result at about 20 MB (/runsync; less for /run), so an output too big to inline
goes to the bucket when one is configured, and is a clear OUTPUT_TOO_LARGE when not.
"""
from __future__ import annotations

import base64
import logging
import mimetypes
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import OUTPUT_TOO_LARGE, WorkerError
from .settings import Settings

log = logging.getLogger(__name__)

VIDEO_MIME = "video/mp4"
MB = 1_000_000


def mime_type(filename: str) -> str:
    if filename.lower().endswith(".mp4"):
        return VIDEO_MIME
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def use_s3(output: str, settings: Settings, inline_bytes: int) -> bool:
    """S3 when asked, or in auto mode when a bucket is configured; else base64 if it fits."""
    if output == "s3" or (output == "auto" and settings.s3_configured):
        return True
    limit = int(settings.max_inline_output_mb * MB)
    if inline_bytes > limit:
        fix = ("send `output: \"auto\"` or `\"s3\"` to get a URL instead" if settings.s3_configured else
               "configure the BUCKET_* settings so large outputs are delivered as S3 URLs")
        raise WorkerError(OUTPUT_TOO_LARGE,
                          f"The output is {inline_bytes / MB:.1f} MB, more than the {limit / MB:g} MB that "
                          f"can be returned inline (MAX_INLINE_OUTPUT_MB); {fix}, or lower `length` or the size.",
                          {"bytes": inline_bytes, "limit_bytes": limit})
    return False


def b64_file(path: Path) -> str:
    """The file as base64 text; the raw bytes are dropped before the text copy is made."""
    encoded = base64.b64encode(path.read_bytes())
    return encoded.decode("ascii")


def _s3() -> ModuleType:
    """wan_worker.s3, imported on first use: boto3 and botocore add ~9 MB to every worker process
    (measured, VmHWM), and a worker that returns base64 never needs them."""
    from . import s3

    return s3


def deliver_video(path: Path, filename: str, job_id: str, output: str, settings: Settings,
                  also_inline: int = 0) -> dict[str, Any]:
    """The I2V result's video fields: `video` (base64) or `video_url`. `also_inline` counts bytes
    that travel with it (the last frame), so the inline result stays under RunPod's cap."""
    size = path.stat().st_size
    fields: dict[str, Any] = {"mime_type": mime_type(filename), "filename": filename, "bytes": size}
    if use_s3(output, settings, size + also_inline):
        s3 = _s3()
        fields["video_url"] = s3.upload_file(path, s3.object_key(job_id, filename), settings,
                                             fields["mime_type"]).url
    else:
        fields["video"] = b64_file(path)
    return fields


def deliver_files(files: list[tuple[Path, str]], job_id: str, output: str,
                  settings: Settings) -> list[dict[str, Any]]:
    """Workflow mode's `images` list, shaped as worker-comfyui returns it."""
    total = sum(path.stat().st_size for path, _ in files)
    if use_s3(output, settings, total):
        s3 = _s3()
        return [{"filename": name, "type": "s3_url",
                 "data": s3.upload_file(path, s3.object_key(job_id, name), settings, mime_type(name)).url}
                for path, name in files]
    return [{"filename": name, "type": "base64", "data": b64_file(path)} for path, name in files]


def deliver_last_frame(png: bytes, video_filename: str, job_id: str, as_url: bool,
                       settings: Settings) -> dict[str, Any]:
    """The video's last frame (for chaining clips): `last_frame_url` beside a `video_url`, else
    `last_frame` as base64."""
    name = video_filename.rsplit(".", 1)[0] + "_last.png"
    return deliver_beside(png, name, "last_frame", job_id, as_url, settings)


def deliver_beside(data: bytes, name: str, key: str, job_id: str, as_url: bool,
                   settings: Settings) -> dict[str, Any]:
    """A file that travels with the video (its last frame, Animate's pose and face videos):
    `<key>_url` beside a `video_url`, else `<key>` as base64."""
    if not as_url:
        return {key: base64.b64encode(data).decode("ascii")}
    s3 = _s3()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return {f"{key}_url": s3.upload_file(path, s3.object_key(job_id, name), settings, mime_type(name)).url}
