"""The last frame of a finished video, as a PNG, so a client can start the next clip on it."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .errors import NO_OUTPUT, WorkerError


def last_frame_png(video: Path) -> bytes:
    """Decode every frame with PyAV (the last frame of an h264 stream needs the ones before it)
    and encode the last one as an RGB PNG. PyAV is imported here: only jobs that ask pay for it."""
    import av  # noqa: PLC0415 - lazy: a few hundred ms of import for jobs that never need it

    last: Any = None
    try:
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                last = frame
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise WorkerError(NO_OUTPUT, f"The video ComfyUI saved could not be decoded for its last frame "
                                     f"({type(exc).__name__}); send the job again without return_last_frame.",
                          {"reason": str(exc)[:200]}) from None
    if last is None:
        raise WorkerError(NO_OUTPUT, "The video ComfyUI saved has no frames, so there is no last frame; "
                                     "send the job again.", {})
    buffer = io.BytesIO()
    last.to_image().save(buffer, format="PNG")
    return buffer.getvalue()
