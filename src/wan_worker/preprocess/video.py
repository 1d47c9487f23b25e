"""Frames -> MP4 bytes (H.264, yuv420p, 16 fps, near-lossless: wan_worker.avmedia.encode_h264):
for upload to ComfyUI and for `return_preprocessed`."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..avmedia import encode_h264

FPS = 16


def encode_mp4(frames: Sequence[np.ndarray], fps: int = FPS) -> bytes:
    """An MP4 of `frames` (each HxWx3 uint8 RGB, or HxW gray; all one size, width and height even)."""
    import av  # noqa: PLC0415 - lazy: a few hundred ms of import

    if not frames:
        raise ValueError("no frames to encode")
    height, width = frames[0].shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 in yuv420p needs an even width and height, got {width}x{height}")
    rgb = (np.repeat(f[:, :, None], 3, 2) if f.ndim == 2 else f for f in frames)
    return encode_h264((av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in rgb),
                       width, height, fps)
