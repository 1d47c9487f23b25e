"""Audio and video inputs (avmedia.load_av): recognised by content, measured, guarded like images.

Every file here is a real one made with PyAV (tests/avgen.py); URLs go to a server on 127.0.0.1.
"""
from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.avgen import AUDIO_FORMATS, VIDEO_FORMATS, audio_file, video_file
from wan_worker.avmedia import load_av
from wan_worker.errors import INVALID_INPUT, WorkerError
from wan_worker.settings import Settings

SETTINGS = Settings()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(value: str, kind: str, settings: Settings = SETTINGS, field: str = "audio") -> WorkerError:
    with pytest.raises(WorkerError) as info:
        load_av(value, settings, field, kind)
    assert info.value.code == INVALID_INPUT
    assert f"`{field}`" in info.value.message or field in info.value.message
    return info.value


@pytest.mark.parametrize("fmt", sorted(AUDIO_FORMATS))
def test_audio_formats_by_content_with_their_duration(fmt: str) -> None:
    got = load_av(b64(audio_file(fmt, seconds=2.0)), SETTINGS, "audio", "audio")
    assert got.format == fmt and got.extension == "." + fmt.lower()
    assert got.duration_s == pytest.approx(2.0, abs=0.12)  # AAC and Opus add their priming samples
    assert got.audio is not None and got.audio.channels == 1 and got.video is None
    assert got.check()["duration_s"] == round(got.duration_s, 3) and "data" not in got.check()


@pytest.mark.parametrize("fmt", sorted(VIDEO_FORMATS))
def test_video_formats_with_frames_fps_and_sound(fmt: str) -> None:
    got = load_av(f"data:video/anything;base64,{b64(video_file(fmt, frames=24, fps=12, audio_seconds=2.0))}",
                  SETTINGS, "video", "video")
    assert got.format == fmt and got.extension == "." + fmt.lower()
    assert got.video is not None and (got.video.frames, got.video.fps) == (24, 12.0)
    assert (got.video.width, got.video.height) == (64, 64)
    assert got.duration_s == pytest.approx(2.0)
    assert got.audio is not None
    assert load_av(b64(video_file(fmt, frames=8)), SETTINGS, "video", "video").audio is None


def test_a_video_with_sound_serves_as_audio() -> None:
    got = load_av(b64(video_file("MP4", frames=16, audio_seconds=1.0)), SETTINGS, "audio", "audio")
    assert got.format == "MP4" and got.audio is not None and got.video is not None


@pytest.mark.parametrize("data, why", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "cannot be read as audio"),
    (b"just some text that is not a sound at all" * 10, "cannot be read as audio"),
    (audio_file("WAV", 1.0)[:40], "cannot be read as audio"),  # a header and nothing after it
])
def test_not_audio_is_refused_naming_the_field(data: bytes, why: str) -> None:
    err = refused(b64(data), "audio")
    assert why in err.message and "WAV, MP3, FLAC, OGG or M4A/AAC" in err.message


def test_empty_input_is_refused() -> None:
    refused("", "audio")
    refused("   ", "video", field="video")


def test_truncated_video_is_refused() -> None:
    whole = video_file("MP4", frames=32)
    err = refused(b64(whole[: len(whole) // 2]), "video", field="video")
    assert "MP4, MOV or WebM" in err.message


def test_wrong_kind_is_refused() -> None:
    err = refused(b64(video_file("MP4", frames=8)), "audio")
    assert "without sound" in err.message
    err = refused(b64(audio_file("M4A", 1.0)), "video", field="video")
    assert "sound only" in err.message


def test_size_cap_comes_before_decoding() -> None:
    small = Settings(max_input_mb=0.01)  # 10 kB
    err = refused(b64(audio_file("WAV", 2.0)), "audio", small)
    assert "MAX_INPUT_MB" in err.message


@pytest.fixture
def server() -> Iterator[str]:
    body = audio_file("FLAC", 1.0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "audio/flac")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/voice.flac"
    httpd.shutdown()
    httpd.server_close()


def test_url_fetched_when_allowed_and_private_address_refused(server: str) -> None:
    open_ = Settings(allow_http_image_urls=True, allow_private_image_urls=True)
    assert load_av(server, open_, "audio", "audio").format == "FLAC"
    err = refused(server, "audio", Settings(allow_http_image_urls=True, allow_private_image_urls=False))
    assert "ALLOW_PRIVATE_IMAGE_URLS" in err.message
