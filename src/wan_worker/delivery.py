"""Turning fetched output bytes into the job's result fields (base64 for now)."""
from __future__ import annotations

import base64
import mimetypes
from typing import Any

VIDEO_MIME = "video/mp4"


def mime_type(filename: str) -> str:
    if filename.lower().endswith(".mp4"):
        return VIDEO_MIME
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def inline_video(data: bytes, filename: str) -> dict[str, Any]:
    """The I2V result's video fields, with the MP4 inline as base64."""
    return {
        "video": base64.b64encode(data).decode("ascii"),
        "mime_type": mime_type(filename),
        "filename": filename,
        "bytes": len(data),
    }


def inline_file(data: bytes, filename: str) -> dict[str, Any]:
    """One entry of workflow mode's `images` list, shaped as worker-comfyui returns it."""
    return {"filename": filename, "type": "base64", "data": base64.b64encode(data).decode("ascii")}
