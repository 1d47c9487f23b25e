"""Audio and video inputs of a job (S2V's `audio`, Animate's driving video): read, recognised by
content, measured before anything is queued.

They come the way images do (base64, a data URI or an https URL) through the same guarded reader
(images.read_reference: size cap before decoding, private addresses refused), under MAX_INPUT_MB.
PyAV opens the bytes in memory: the container says what the file is, whatever its name, and the
streams say how long it lasts. Anything PyAV cannot open, or without the stream the job needs, is
an INVALID_INPUT that names the field; the job's own rules (a duration cap, a part to cut) build on
the `AVInput` this returns.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import INVALID_INPUT, WorkerError, invalid
from .images import FetchPolicy, read_reference
from .settings import Settings

log = logging.getLogger(__name__)

MB = 1_000_000
KINDS = ("audio", "video")

# PyAV's demuxer name -> our format name, the extension ComfyUI's loaders list it under, its mime type
_CONTAINERS: dict[str, tuple[str, str, str]] = {
    "wav": ("WAV", ".wav", "audio/wav"),
    "mp3": ("MP3", ".mp3", "audio/mpeg"),
    "flac": ("FLAC", ".flac", "audio/flac"),
    "ogg": ("OGG", ".ogg", "audio/ogg"),
    "matroska,webm": ("WEBM", ".webm", "video/webm"),
}
_ISO = "mov,mp4,m4a,3gp,3g2,mj2"  # one demuxer for MP4, M4A and QuickTime: the file's brand tells them apart


@dataclass(frozen=True)
class AudioStream:
    sample_rate: int
    channels: int
    codec: str


@dataclass(frozen=True)
class VideoStream:
    width: int
    height: int
    fps: float
    frames: int
    codec: str


@dataclass(frozen=True)
class AVInput:
    """One audio or video input, checked: its bytes and what they hold."""

    field: str
    kind: str  # "audio" | "video": what the job asked for
    format: str  # WAV, MP3, FLAC, OGG, M4A, MP4, MOV, WEBM
    data: bytes
    duration_s: float
    extension: str  # the name ComfyUI's loaders need to list it: ".wav", ".mp4", ...
    mime_type: str
    audio: AudioStream | None
    video: VideoStream | None

    def check(self) -> dict[str, Any]:
        """What a dry run reports about it (never the bytes)."""
        info: dict[str, Any] = {"format": self.format, "bytes": len(self.data),
                                "duration_s": round(self.duration_s, 3)}
        if self.audio is not None:
            info["audio"] = {"sample_rate": self.audio.sample_rate, "channels": self.audio.channels,
                             "codec": self.audio.codec}
        if self.video is not None:
            v = self.video
            info["video"] = {"width": v.width, "height": v.height, "fps": round(v.fps, 3), "frames": v.frames,
                             "codec": v.codec}
        return info


def load_av(value: Any, settings: Settings, field: str, kind: str) -> AVInput:
    """Read `value` (base64, data URI or URL) as an audio or video input, within MAX_INPUT_MB."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    limit = int(settings.max_input_mb * MB)
    policy = FetchPolicy(field, limit, "MAX_INPUT_MB", settings.image_fetch_timeout_s, "IMAGE_FETCH_TIMEOUT_S",
                         what=f"{kind} file")
    data, source = read_reference(value, settings, policy, ("audio/", "video/"))
    found = probe(data, field, kind)
    log.info("%s: %s %s, %.2f s, %d bytes from %s", field, found.format, kind, found.duration_s, len(data), source)
    return found


def probe(data: bytes, field: str, kind: str) -> AVInput:
    """What the bytes are and how long they last. Audio is decoded (cheap: seconds of sound in
    milliseconds) because headers of WAV/MP3 files often guess the length; video is only demuxed:
    its packets count the frames without decoding a pixel."""
    import av  # PyAV: only jobs with audio or video need it

    if not data:
        raise _unreadable(field, kind, "it is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            fmt, ext, mime = _format(container, data)
            audio_s = container.streams.audio[0] if container.streams.audio else None
            video_s = container.streams.video[0] if container.streams.video else None
            if kind == "audio" and audio_s is None:
                raise _wrong_kind(field, kind, f"a {fmt} file without sound")
            if kind == "video" and video_s is None:
                raise _wrong_kind(field, kind, f"a {fmt} file with sound only" if audio_s else f"an empty {fmt} file")
            if video_s is not None:
                video = _video(container, video_s, field)
                audio = _audio_facts(audio_s)
                duration = video.frames / video.fps if video.fps else 0.0
            else:
                audio, duration = _decode_audio(container, audio_s, field)
                video = None
    except WorkerError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError, OSError) as exc:
        raise _unreadable(field, kind, _reason(exc)) from None
    if duration <= 0:
        raise _unreadable(field, kind, "it holds no samples" if kind == "audio" else "it holds no frames")
    if video is None and fmt == "MP4":
        fmt, ext, mime = "M4A", ".m4a", "audio/mp4"
    return AVInput(field, kind, fmt, data, duration, ext, mime, audio, video)


def _format(container: Any, data: bytes) -> tuple[str, str, str]:
    name = container.format.name
    if name == _ISO:
        brand = data[8:12]
        if brand == b"qt  ":
            return "MOV", ".mov", "video/quicktime"
        if brand.startswith((b"M4A", b"M4B")):
            return "M4A", ".m4a", "audio/mp4"
        return "MP4", ".mp4", "video/mp4"
    if name in _CONTAINERS:
        return _CONTAINERS[name]
    raise ValueError(f"it is a {name} file, which this worker does not take")


def _audio_facts(stream: Any) -> AudioStream | None:
    if stream is None:
        return None
    ctx = stream.codec_context
    return AudioStream(int(ctx.sample_rate or 0), int(ctx.channels or 0), ctx.name)


def _decode_audio(container: Any, stream: Any, field: str) -> tuple[AudioStream, float]:
    """Every sample counted: the duration the video will be made to cover."""
    samples, rate = 0, int(stream.codec_context.sample_rate or 0)
    for frame in container.decode(stream):
        samples += frame.samples
        rate = frame.sample_rate or rate
    if not rate:
        raise _unreadable(field, "audio", "it has no sample rate")
    facts = _audio_facts(stream)
    assert facts is not None
    return AudioStream(rate, facts.channels, facts.codec), samples / rate


def _video(container: Any, stream: Any, field: str) -> VideoStream:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(Fraction(rate)) if rate else 0.0
    frames = sum(1 for packet in container.demux(stream) if packet.size)
    if not fps:
        raise _unreadable(field, "video", "it has no frame rate")
    ctx = stream.codec_context
    return VideoStream(int(ctx.width or 0), int(ctx.height or 0), fps, frames, ctx.name)


def _reason(exc: BaseException) -> str:
    text = str(exc).split(":", 1)[-1].strip() if isinstance(exc, OSError) else str(exc)
    return (text or type(exc).__name__)[:200]


def _unreadable(field: str, kind: str, why: str) -> WorkerError:
    accepted = "WAV, MP3, FLAC, OGG or M4A/AAC" if kind == "audio" else "MP4, MOV or WebM"
    return WorkerError(INVALID_INPUT, f"`{field}` cannot be read as {kind}: {why}. Send a {accepted} file.",
                       {"field": field, "kind": kind, "reason": why})


def _wrong_kind(field: str, kind: str, found: str) -> WorkerError:
    need = "a sound track" if kind == "audio" else "video frames"
    return WorkerError(INVALID_INPUT, f"`{field}` is {found}; it needs {need}. Send the right file.",
                       {"field": field, "kind": kind, "found": found})


@dataclass(frozen=True)
class Span:
    """The part of an input a job uses: from `start_s`, for `duration_s` seconds."""

    start_s: float
    duration_s: float


MIN_SPAN_S = 0.1  # shorter than this no model reads anything from a sound (wav2vec2 needs 25 ms windows)


def pick_span(found: AVInput, start_s: float | None, duration_s: float | None, max_s: float, max_setting: str,
              start_field: str, duration_field: str) -> Span:
    """The part of `found` a job asks for (`start_field`, `duration_field`; the rest of the file by
    default), checked against the file's length and a cap in seconds, before anything is queued."""
    start = start_s or 0.0
    total = found.duration_s
    if start >= total:
        raise invalid(start_field, f"is {start:g} s, but `{found.field}` lasts only {total:.2f} s; send a start "
                                   "inside it")
    rest = total - start
    if duration_s is not None and duration_s > rest + 0.001:
        raise invalid(duration_field, f"asks for {duration_s:g} s from {start:g} s, but `{found.field}` has only "
                                      f"{rest:.2f} s there; send at most {math.floor(rest * 100) / 100:g}")
    used = rest if duration_s is None else min(duration_s, rest)
    if used > max_s:
        where = duration_field if duration_s is not None else found.field
        raise invalid(where, f"covers {used:.2f} s of {found.kind}, more than this worker's limit of {max_s:g} s "
                             f"({max_setting}); pick a part with `{start_field}` and `{duration_field}`, or send "
                             "a shorter file")
    if used < MIN_SPAN_S:
        where = duration_field if duration_s is not None else found.field
        raise invalid(where, f"covers only {used:.3f} s of {found.kind}; send at least {MIN_SPAN_S:g} s")
    return Span(start, used)


def frames_at(found: AVInput, fps: float) -> int:
    """How many frames `found` (a video) lasts at `fps`."""
    return max(1, round(found.duration_s * fps))


def resampled_frames(found: AVInput, fps: int, frames: int) -> Iterator[Any]:
    """`found`'s first `frames` frames at `fps` (PyAV frames, decoded one at a time): each output
    frame is the input frame on screen at its time (k / fps)."""
    import av

    assert found.video is not None
    src_fps = found.video.fps
    written, index = 0, 0
    with av.open(io.BytesIO(found.data), mode="r") as source:
        for frame in source.decode(video=0):
            while written < frames and int(written * src_fps / fps + 1e-6) <= index:
                yield frame
                written += 1
            index += 1
            if written >= frames:
                return


def rgb_frames(found: AVInput, fps: int, frames: int) -> Iterator[Any]:
    """The same frames as resample_video's, as HxWx3 uint8 RGB arrays (for the preprocessing)."""
    for frame in resampled_frames(found, fps, frames):
        yield frame.to_ndarray(format="rgb24")


def resample_video(found: AVInput, fps: int, frames: int) -> bytes:
    """`found`'s first `frames` frames at `fps`, as an MP4 (H.264). ComfyUI's core video nodes have
    no frame-rate converter (LoadVideo gives a file's own frames), so the worker resamples before
    upload; frames are decoded and encoded one at a time, so memory stays one frame's."""
    assert found.video is not None
    return encode_h264(resampled_frames(found, fps, frames), found.video.width // 2 * 2 or 2,
                       found.video.height // 2 * 2 or 2, fps)


# Near-lossless: a pose's thin lines and a mask's edges survive the encode.
H264_OPTIONS = {"crf": "12", "preset": "veryfast"}


def encode_h264(frames: Iterable[Any], width: int, height: int, fps: int) -> bytes:
    """PyAV video frames -> MP4 bytes (H.264, yuv420p, `fps`), each scaled to width x height (both
    even), encoded as they come: the one MP4 writer of the videos the worker makes."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as sink:
        stream = sink.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(H264_OPTIONS)
        for n, frame in enumerate(frames):
            image = frame.reformat(width=width, height=height, format="yuv420p")
            image.pts, image.time_base = n, Fraction(1, fps)
            for packet in stream.encode(image):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return out.getvalue()
