"""Real audio and video files for tests, made with PyAV in memory: a tone in any of the audio
formats the worker takes, and a short moving video with or without sound."""
from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import numpy as np

# our format name -> (PyAV container format, audio codec)
AUDIO_FORMATS = {"WAV": ("wav", "pcm_s16le"), "MP3": ("mp3", "libmp3lame"), "FLAC": ("flac", "flac"),
                 "OGG": ("ogg", "libopus"), "M4A": ("ipod", "aac")}
# our format name -> (container, video codec, pixel format)
VIDEO_FORMATS = {"MP4": ("mp4", "libx264", "yuv420p"), "MOV": ("mov", "libx264", "yuv420p"),
                 "WEBM": ("webm", "libvpx", "yuv420p")}


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone that wavers (voice-like enough for wav2vec2's front end), float32, (channels, n)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * math.pi * freq * t + 3 * np.sin(2 * math.pi * 3 * t))
    return np.repeat(wave[None, :], channels, axis=0).astype(np.float32)


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  samples: np.ndarray) -> None:
    """Encode float samples (channels, n) into `stream`, resampled to what its codec takes."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    codec = stream.codec_context.codec
    resampler = av.AudioResampler(format=codec.audio_formats[0].name if codec.audio_formats else "fltp",
                                  layout=layout, rate=stream.rate)
    frames = []
    for start in range(0, samples.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                           layout=layout)
        frame.sample_rate = stream.rate
        frames.extend(resampler.resample(frame))
    frames.extend(resampler.resample(None))
    for frame in [*frames, None]:
        for packet in stream.encode(frame):
            container.mux(packet)


def audio_file(fmt: str = "WAV", seconds: float = 1.0, rate: int = 16000, freq: float = 440.0,
               channels: int = 1) -> bytes:
    """A tone of `seconds` as a file of `fmt` (WAV, MP3, FLAC, OGG, M4A)."""
    container_format, codec = AUDIO_FORMATS[fmt]
    if codec == "libopus":
        rate = 48000
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
        _encode_audio(container, stream, tone(seconds, rate, freq, channels))
    return buf.getvalue()


def video_file(fmt: str = "MP4", frames: int = 16, fps: int = 16, width: int = 64, height: int = 64,
               audio_seconds: float | None = None) -> bytes:
    """A square moving over a gradient, `frames` frames at `fps`; with sound when `audio_seconds`."""
    container_format, codec, pix = VIDEO_FORMATS[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix
        audio = None
        if audio_seconds is not None:
            audio = container.add_stream("aac" if fmt != "WEBM" else "libopus",
                                         rate=16000 if fmt != "WEBM" else 48000, layout="mono")
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
            x = (i * 4) % max(1, width - 16)
            img[height // 4:height // 4 + 16, x:x + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None and audio_seconds is not None:
            _encode_audio(container, audio, tone(audio_seconds, audio.rate))
    return buf.getvalue()

