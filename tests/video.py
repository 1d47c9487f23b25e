"""Decode an MP4 the worker returned, frame by frame (PyAV): what tests look at, not "success"."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass
class Video:
    frames: list[np.ndarray]  # RGB, height x width x 3, uint8
    fps: Fraction
    codec: str

    @property
    def width(self) -> int:
        return self.frames[0].shape[1]

    @property
    def height(self) -> int:
        return self.frames[0].shape[0]

    def pixels(self) -> np.ndarray:
        return np.stack(self.frames)

    def is_blank(self) -> bool:
        """One flat colour (black, or what NaNs turn into) everywhere: a failed generation."""
        return float(self.pixels().astype(np.float32).std()) < 2.0

    def same_frames(self, other: "Video") -> bool:
        return len(self.frames) == len(other.frames) and bool(np.array_equal(self.pixels(), other.pixels()))

    def mean_abs_diff(self, other: "Video") -> float:
        return float(np.abs(self.pixels().astype(np.int16) - other.pixels().astype(np.int16)).mean())


def decode(data: bytes) -> Video:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return Video(frames, Fraction(stream.average_rate), stream.codec_context.name)


def decode_result(result: dict[str, Any]) -> Video:
    """The video of a successful I2V result delivered as base64."""
    assert "error" not in result, result
    return decode(base64.b64decode(result["video"]))


def audio_track_s(result: dict[str, Any]) -> tuple[str, float]:
    """(codec, seconds) of the sound of a result's MP4, every sample decoded."""
    import av

    with av.open(io.BytesIO(base64.b64decode(result["video"]))) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.codec_context.sample_rate
