"""Workflow mode's input files: images (decoded by images.py), videos and audio (checked by signature).

ComfyUI's `/upload/image` stores any file in input/, where LoadVideo and LoadAudio find it by name;
they list files by the name's extension. So a video or audio file is accepted only when its first
bytes say what it is and the name's extension agrees; only images are decoded (Pillow), since the
worker never plays a video or an audio file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import IMAGE_UNREADABLE, INVALID_INPUT, WorkerError
from .images import FetchPolicy, PreparedImage, load_prepared, read_reference
from .settings import Settings

log = logging.getLogger(__name__)

MB = 1_000_000

# kind -> {extension: mime type}; the extensions ComfyUI's LoadVideo / LoadAudio list as that kind
EXTENSIONS: dict[str, dict[str, str]] = {
    "image": {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"},
    "video": {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"},
    "audio": {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
              ".oga": "audio/ogg", ".opus": "audio/ogg"},
}


@dataclass(frozen=True)
class Media:
    """One checked input file, ready for ComfyUI's input folder."""

    name: str
    kind: str  # image | video | audio
    format: str  # PNG, JPEG, WEBP, MP4, MOV, WEBM, WAV, MP3, FLAC, OGG
    data: bytes
    mime_type: str
    width: int | None = None  # images only
    height: int | None = None

    def check(self) -> dict[str, object]:
        """What a dry run reports about it."""
        info: dict[str, object] = {"name": self.name, "kind": self.kind, "format": self.format,
                                   "bytes": len(self.data)}
        if self.width is not None:
            info.update(width=self.width, height=self.height)
        return info


def sniff(data: bytes) -> tuple[str, str] | None:
    """(kind, format) from the file's signature, or None when it is none of the accepted kinds."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "WEBP"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio", "WAV"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video", "MOV"
        if brand.startswith((b"M4A", b"M4B")):
            return None  # AAC audio in an MP4 box: not one of the accepted audio formats
        return "video", "MP4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video", "MOV"  # older QuickTime files start with an atom other than ftyp
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "WEBM"
    if head.startswith(b"fLaC"):
        return "audio", "FLAC"
    if head.startswith(b"OggS"):
        return "audio", "OGG"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio", "MP3"
    return None


def kind_of_name(name: str) -> str | None:
    ext = PurePosixPath(name).suffix.lower()
    return next((kind for kind, exts in EXTENSIONS.items() if ext in exts), None)


def load_media(name: str, value: str, settings: Settings, field: str) -> Media:
    """Read one `images[n]` entry: an image is decoded and normalized as in I2V mode; a video or
    audio file is checked by signature, size (MAX_INPUT_MB) and the name's extension."""
    limit = max(settings.max_image_bytes, int(settings.max_input_mb * MB))
    policy = FetchPolicy(field, limit, "MAX_INPUT_MB", settings.image_fetch_timeout_s, "IMAGE_FETCH_TIMEOUT_S",
                         what="input file")
    data, source = read_reference(value, settings, policy, ("image/", "video/", "audio/"))
    sniffed = sniff(data)
    named = kind_of_name(name)
    if sniffed is None or sniffed[0] == "image":
        if named not in (None, "image"):
            found = "an image" if sniffed else f"not a {named} file this worker accepts (bad signature)"
            raise _mismatch(name, named, found, field)
        if len(data) > settings.max_image_bytes:
            raise _too_large(field, settings.max_image_bytes, "MAX_IMAGE_BYTES")
        return _image(name, load_prepared(data, source, settings, field))
    kind, fmt = sniffed
    if named != kind:
        raise _mismatch(name, named or "unknown", f"a {fmt} {kind} file", field)
    if len(data) > int(settings.max_input_mb * MB):
        raise _too_large(field, int(settings.max_input_mb * MB), "MAX_INPUT_MB")
    log.info("%s: %s %s of %d bytes from %s", field, fmt, kind, len(data), source)
    ext = PurePosixPath(name).suffix.lower()
    return Media(name, kind, fmt, data, EXTENSIONS[kind][ext])


def _image(name: str, image: PreparedImage) -> Media:
    return Media(name, "image", image.format, image.data, image.mime_type, image.width, image.height)


def _too_large(field: str, limit: int, setting: str) -> WorkerError:
    return WorkerError(INVALID_INPUT, f"{field} is larger than the {limit / MB:g} MB limit ({setting}); "
                                      "send a smaller file.", {"field": field, "limit_bytes": limit})


def _mismatch(name: str, named: str, found: str, field: str) -> WorkerError:
    exts = ", ".join(ext for exts in EXTENSIONS.values() for ext in exts)
    return WorkerError(
        IMAGE_UNREADABLE if named == "image" else INVALID_INPUT,
        f"{field} is {found}, but its name {name!r} says {named}; ComfyUI's loaders go by the name, so "
        f"send a file whose name ends in the extension of its content ({exts}).",
        {"field": field, "name": name, "content": found, "name_kind": named},
    )
