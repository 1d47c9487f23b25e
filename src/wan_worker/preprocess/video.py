"""Frames -> MP4 bytes with PyAV (H.264, yuv420p, 16 fps): for upload to ComfyUI and for
`return_preprocessed`. Near-lossless (CRF 12): the pose's thin lines and the mask's edges survive."""
from __future__ import annotations

import io
from fractions import Fraction
from typing import Sequence

import numpy as np

FPS = 16
CRF = 12


def encode_mp4(frames: Sequence[np.ndarray], fps: int = FPS, crf: int = CRF) -> bytes:
    """An MP4 of `frames` (each HxWx3 uint8 RGB, or HxW gray; all one size, width and height even)."""
    import av  # noqa: PLC0415 - lazy: a few hundred ms of import

    if not frames:
        raise ValueError("no frames to encode")
    height, width = frames[0].shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 in yuv420p needs an even width and height, got {width}x{height}")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            rgb = np.repeat(frame[:, :, None], 3, 2) if frame.ndim == 2 else frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
