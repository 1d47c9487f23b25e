"""Image input -> normalized RGB PNG bytes: base64, data URI or a guarded URL fetch, then Pillow.

Everything a client sends is untrusted: sizes are capped before the work that would cost memory
(string length before base64 decoding, Content-Length and a running count while downloading,
header dimensions before pixel decoding), URLs may only reach public addresses, and only the three
formats ComfyUI's LoadImage is fed here (PNG, JPEG, WebP) are ever parsed.
"""
from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import logging
import re
import socket
import struct
import time
import warnings
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from .errors import IMAGE_UNREADABLE, INVALID_INPUT, WorkerError
from .settings import Settings

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_REDIRECTS = 5
MAX_CONNECT_TIMEOUT_S = 10.0
_CHUNK = 64 * 1024
_PNG_COMPRESS_LEVEL = 1  # the PNG only travels over loopback to ComfyUI: favour speed over size
_HEADERS = {
    "User-Agent": "wan-worker (image fetch)",
    "Accept": "image/png,image/jpeg,image/webp,image/*;q=0.8",
    "Accept-Encoding": "identity",  # so the byte cap counts exactly what we hold in memory
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]{0,31}):")
_URLSAFE = str.maketrans("-_", "+/")
_METADATA_IPS = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_IMAGE_EXCEPTIONS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_SNIFF = (  # magic bytes of formats people send by mistake, for a better message
    (0, b"GIF8", "a GIF image"),
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"%PDF", "a PDF document"),
    (4, b"ftypavif", "an AVIF image"),
    (4, b"ftyphei", "a HEIC image"),
    (4, b"ftypmif1", "a HEIF image"),
    (0, b"<svg", "an SVG drawing"),
    (0, b"<?xml", "an XML/SVG document"),
    (0, b"<!doctype html", "an HTML page"),
    (0, b"<html", "an HTML page"),
)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to upload to ComfyUI: the pixels ComfyUI's LoadImage will see are upright RGB."""

    data: bytes  # the client's own file when LoadImage reads it alike, else a normalized RGB PNG
    extension: str  # of `data`: png, jpg or webp
    width: int  # after EXIF transpose
    height: int
    source: str  # "base64" | "data_uri" | "url"
    format: str  # original format: "PNG", "JPEG" or "WEBP"

    @property
    def mime_type(self) -> str:
        return {"jpg": "image/jpeg", "webp": "image/webp"}.get(self.extension, "image/png")


def load_image(value: str, settings: Settings, field: str = "image") -> PreparedImage:
    """Read an image reference (base64, data URI or URL), check that it decodes, and make sure
    ComfyUI gets upright RGB pixels.

    LoadImage applies the EXIF orientation and converts to RGB itself, so a plain RGB or grey
    PNG/JPEG/WebP goes up as sent (no 30 ms PNG re-encode, a fifth of the bytes); anything else
    (transparency, palette, 16-bit, CMYK, animation, broken EXIF) is normalized to an RGB PNG.

    Raises WorkerError: INVALID_INPUT when `value` is not an acceptable image reference or breaks
    a limit, IMAGE_UNREADABLE when it cannot be fetched or decoded as PNG/JPEG/WebP.
    """
    data, source = _read_bytes(value, settings, field)
    return load_prepared(data, source, settings, field)


def load_prepared(data: bytes, source: str, settings: Settings, field: str) -> PreparedImage:
    """Decode bytes already read (see load_image) into what ComfyUI gets."""
    image = _decode(data, settings, field)
    fmt = "JPEG" if image.format == "MPO" else (image.format or "?")  # MPO: a phone's multi-JPEG
    upright = _usable_as_sent(image)
    if upright is not None:
        (width, height), out, extension = upright, data, _EXTENSIONS[image.format]
    else:
        (out, width, height), extension = _normalize(image, field), "png"
    log.info("%s: %s %dx%d from %s (%d bytes in, %d bytes %s up)",
             field, fmt, width, height, source, len(data), len(out), extension)
    return PreparedImage(data=out, extension=extension, width=width, height=height, source=source, format=fmt)


_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def _usable_as_sent(image: Image.Image) -> tuple[int, int] | None:
    """The upright size when ComfyUI's LoadImage gets exactly the pixels _normalize would give
    it from the client's own bytes (one 8-bit RGB or grey frame, no transparency; LoadImage
    applies the EXIF orientation itself, as _upright does); else None."""
    if not (image.format in _EXTENSIONS and getattr(image, "n_frames", 1) == 1
            and image.mode in ("RGB", "L") and "transparency" not in image.info):
        return None
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (*_IMAGE_EXCEPTIONS, KeyError, TypeError):
        return None  # broken EXIF: normalize, as LoadImage might stumble on it
    if orientation not in range(1, 9):
        return None
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else (image.width, image.height)


# ---------------------------------------------------------------- reference -> bytes


def _read_bytes(value: object, settings: Settings, field: str) -> tuple[bytes, str]:
    return read_reference(value, settings, image_policy(settings, field), ("image/",))


def read_reference(value: object, settings: Settings, policy: FetchPolicy,
                   data_types: tuple[str, ...]) -> tuple[bytes, str]:
    """Bytes of base64, a data URI (of one of `data_types`) or a URL, and which form it was.
    The length check comes first so huge strings cost nothing."""
    field, limit = policy.field, policy.limit_bytes
    if not isinstance(value, str):
        raise _not_a_reference(field, "it is not a string", policy.what)
    if len(value) > _max_text_len(limit):
        raise _too_large(field, limit, policy.limit_name, policy.what)
    text = value.strip()
    if not text:
        raise _not_a_reference(field, "it is empty", policy.what)
    match = _SCHEME_RE.match(text)
    if match is None:  # base64 has no ':' so anything with a scheme is a URI
        return _decode_base64(text, policy), "base64"
    scheme = match.group(1).lower()
    if scheme == "data":
        return _decode_data_uri(text, policy, data_types), "data_uri"
    if scheme in ("http", "https"):
        return _fetch_url(text, settings, field, policy), "url"
    raise WorkerError(
        INVALID_INPUT,
        f"{field} uses the unsupported scheme '{scheme}:'; send base64, a data:...;base64 URI "
        "or an https:// URL.",
        {"field": field, "scheme": scheme},
    )


def _max_text_len(max_bytes: int) -> int:
    """Longest string that can still decode to at most max_bytes (line breaks and a prefix allowed)."""
    encoded = (max_bytes + 2) // 3 * 4
    return encoded + encoded // 38 + 1024


def _decode_base64(text: str, policy: FetchPolicy) -> bytes:
    """Standard or urlsafe alphabet, whitespace anywhere, padding optional."""
    field = policy.field
    compact = "".join(text.split()).rstrip("=")
    if (len(compact) * 3) // 4 > policy.limit_bytes:
        raise _too_large(field, policy.limit_bytes, policy.limit_name, policy.what)
    if len(compact) % 4 == 1:
        raise _not_a_reference(field, "it is not valid base64 (wrong length)", policy.what)
    if "-" in compact or "_" in compact:
        compact = compact.translate(_URLSAFE)
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _not_a_reference(field, "it is neither valid base64 nor a URL", policy.what) from None
    if not data:
        raise _not_a_reference(field, "it decodes to no bytes", policy.what)
    return data


def _decode_data_uri(text: str, policy: FetchPolicy, data_types: tuple[str, ...]) -> bytes:
    field = policy.field
    comma = text.find(",", 0, 256)
    if comma < 0:
        raise _not_a_reference(field, "the data URI has no ',' after its media type", policy.what)
    params = [p.strip().lower() for p in text[5:comma].split(";")]
    media_type = params[0]
    if "base64" not in params[1:]:
        raise _not_a_reference(field, "the data URI is not base64-encoded (use ;base64,)", policy.what)
    if media_type and not (media_type.startswith(data_types) or media_type == "application/octet-stream"):
        raise _not_a_reference(field, f"the data URI holds '{media_type}', not an {policy.what}"
                               if policy.what[0] in "aeiou" else
                               f"the data URI holds '{media_type}', not a {policy.what}", policy.what)
    return _decode_base64(text[comma + 1:], policy)


# ---------------------------------------------------------------- guarded URL fetch


@dataclass(frozen=True)
class FetchPolicy:
    """What one kind of download may do: its byte cap, its deadline, the error a failure becomes,
    and the headers each host gets (a token goes only to the host it belongs to)."""

    field: str
    limit_bytes: int
    limit_name: str  # the setting behind the cap, for messages
    timeout_s: float
    timeout_name: str  # the setting behind the deadline
    failure_code: str = IMAGE_UNREADABLE
    too_large_code: str = INVALID_INPUT
    what: str = "image"
    headers_for: Callable[[str], dict[str, str]] = dataclasses.field(default=lambda host: {})


def image_policy(settings: Settings, field: str) -> FetchPolicy:
    return FetchPolicy(field, settings.max_image_bytes, "MAX_IMAGE_BYTES", settings.image_fetch_timeout_s,
                       "IMAGE_FETCH_TIMEOUT_S")


def _fetch_url(url: str, settings: Settings, field: str, policy: FetchPolicy | None = None) -> bytes:
    body = bytearray()
    fetch(url, settings, policy or image_policy(settings, field), body.extend)
    return bytes(body)


def fetch(url: str, settings: Settings, policy: FetchPolicy, sink: Callable[[bytes], object]) -> int:
    """Download `url` into `sink` chunk by chunk; returns the byte count.

    Redirects are followed by hand, so every hop's scheme and address are re-checked, and each
    hop gets only its own host's headers.

    Limitation: the host is resolved and checked here, then resolved again by requests when it
    connects, so a DNS server that answers differently the second time (DNS rebinding) could
    still steer the request. Pinning the checked address would need custom TLS/SNI handling; the
    short TTL window and the public-address check on every hop keep the risk small.
    """
    field = policy.field
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        host = _check_url(current, settings, field, redirected=hop > 0)
        response = _get(current, host, deadline, policy)
        with response:
            if response.is_redirect:
                current = urljoin(current, response.headers["location"])
                log.info("%s: %s redirects (HTTP %d)", field, host, response.status_code)
                continue
            if not 200 <= response.status_code < 300:
                raise WorkerError(
                    policy.failure_code,
                    f"{field} URL on {host} answered HTTP {response.status_code} "
                    f"{response.reason or ''}".rstrip()
                    + "; check that the URL is public and still valid"
                    + (" and that the token for that host is set." if response.status_code in (401, 403)
                       else "."),
                    {"field": field, "host": host, "status": response.status_code},
                )
            count = _read_capped(response, host, deadline, policy, sink)
        log.info("%s: downloaded %d bytes from %s", field, count, host)
        return count
    raise WorkerError(
        policy.failure_code,
        f"{field} URL redirected more than {MAX_REDIRECTS} times; give the {policy.what}'s final URL.",
        {"field": field},
    )


def _check_url(url: str, settings: Settings, field: str, redirected: bool = False) -> str:
    """Scheme and address policy for one hop; returns the host for messages and logs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.allow_http_image_urls:
        what = "URL redirects to an http:// URL" if redirected else "is an http:// URL"
        raise WorkerError(
            INVALID_INPUT,
            f"{field} {what}; use https:// (or set ALLOW_HTTP_IMAGE_URLS=true on the endpoint).",
            {"field": field, "scheme": scheme},
        )
    if scheme not in ("http", "https"):
        raise _not_a_reference(field, f"the URL redirects to the unsupported scheme '{scheme}:'")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise _not_a_reference(field, "the URL's port is not valid") from None
    if not host:
        raise _not_a_reference(field, "the URL has no host")
    if not settings.allow_private_image_urls:
        port = port or (443 if scheme == "https" else 80)
        blocked = [str(ip) for ip in _resolve(host, port, field) if not _is_public(ip)]
        if blocked:
            raise WorkerError(
                INVALID_INPUT,
                f"{field} URL host {host} resolves to a non-public address ({blocked[0]}); input "
                "URLs (images, audio, video) must be on the public internet (or set ALLOW_PRIVATE_IMAGE_URLS=true).",
                {"field": field, "host": host, "addresses": blocked},
            )
    return host


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _resolve(host: str, port: int, field: str) -> list[IPAddress]:
    """Every address the host resolves to; a literal IP needs no DNS at all."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WorkerError(
            IMAGE_UNREADABLE,
            f"{field} URL host {host} could not be resolved; check the URL.",
            {"field": field, "host": host},
        ) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (metadata endpoints never)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_IPS:
        return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )


def _get(url: str, host: str, deadline: float, policy: FetchPolicy) -> requests.Response:
    remaining = _remaining(deadline, host, policy)
    try:
        return requests.get(
            url, headers={**_HEADERS, **policy.headers_for(host)}, stream=True, allow_redirects=False,
            timeout=(min(remaining, MAX_CONNECT_TIMEOUT_S), remaining),
        )
    except requests.Timeout:
        raise _timed_out(host, policy) from None
    except requests.RequestException as exc:
        raise WorkerError(
            policy.failure_code,
            f"{policy.field} URL on {host} could not be downloaded ({type(exc).__name__}); check that "
            "the URL is reachable.",
            {"field": policy.field, "host": host, "reason": type(exc).__name__},
        ) from None


def _read_capped(response: requests.Response, host: str, deadline: float, policy: FetchPolicy,
                 sink: Callable[[bytes], object]) -> int:
    """Read the body into `sink`, refusing it as soon as it passes the cap or the deadline."""
    limit = policy.limit_bytes
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(policy.field, limit, policy.limit_name, policy.what, policy.too_large_code)
    count = 0
    try:
        for chunk in _chunks(response):
            count += len(chunk)
            if count > limit:
                raise _too_large(policy.field, limit, policy.limit_name, policy.what, policy.too_large_code)
            sink(chunk)
            _remaining(deadline, host, policy)
    except requests.RequestException as exc:
        if "timed out" in str(exc).lower() or isinstance(exc, requests.Timeout):
            raise _timed_out(host, policy) from None
        raise WorkerError(
            policy.failure_code,
            f"{policy.field} URL on {host} broke off while downloading ({type(exc).__name__}); try again.",
            {"field": policy.field, "host": host, "reason": type(exc).__name__},
        ) from None
    if declared.isdigit() and count != int(declared):
        raise WorkerError(policy.failure_code,
                          f"{policy.field} URL on {host} broke off after {count} of {declared} bytes; try again.",
                          {"field": policy.field, "host": host, "reason": "truncated"})
    if not count:
        raise WorkerError(policy.failure_code, f"{policy.field} URL on {host} returned an empty body.",
                          {"field": policy.field, "host": host})
    return count


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """Yield whatever each receive brings, so a slow drip still meets the deadline check."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2
        yield from response.iter_content(_CHUNK)
        return
    try:
        while chunk := raw.read1(_CHUNK, decode_content=True):
            yield chunk
    except ReadTimeoutError as exc:  # urllib3 errors -> requests' types, as iter_content does
        raise requests.ConnectionError("read timed out") from exc
    except (ProtocolError, OSError) as exc:
        raise requests.ConnectionError(type(exc).__name__) from exc


def _remaining(deadline: float, host: str, policy: FetchPolicy) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(host, policy)
    return remaining


def _timed_out(host: str, policy: FetchPolicy) -> WorkerError:
    return WorkerError(
        policy.failure_code,
        f"{policy.field} URL on {host} did not deliver the {policy.what} within {policy.timeout_s:g} s "
        f"({policy.timeout_name}); use a faster host"
        + (" or send the image as base64." if policy.what == "image" else "."),
        {"field": policy.field, "host": host, "timeout_s": policy.timeout_s},
    )


# ---------------------------------------------------------------- bytes -> RGB PNG


def _decode(data: bytes, settings: Settings, field: str) -> Image.Image:
    """Open with the three accepted formats only, check pixels from the header, then decode fully."""
    try:
        with warnings.catch_warnings():  # the pixel cap is ours, not Pillow's process-wide one
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(field, None, settings.max_image_pixels) from None
    except UnidentifiedImageError:
        raise _unreadable(field, _sniff(data)) from None
    except _IMAGE_EXCEPTIONS as exc:
        raise _unreadable(field, _reason(exc)) from None
    width, height = image.size
    if width * height > settings.max_image_pixels:
        raise _too_many_pixels(field, (width, height), settings.max_image_pixels)
    if width <= 0 or height <= 0:
        raise _unreadable(field, "it has no pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(field, (width, height), settings.max_image_pixels) from None
    except _IMAGE_EXCEPTIONS as exc:
        raise _unreadable(field, f"it is truncated or corrupt ({_reason(exc)})") from None
    return image


def _normalize(image: Image.Image, field: str) -> tuple[bytes, int, int]:
    """Upright (EXIF), RGB on white, metadata dropped, fast PNG."""
    rgb = _to_rgb(_upright(image, field))
    rgb.info = {}  # no EXIF/ICC/text: the PNG is pixels only (ComfyUI ignores them anyway)
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue(), rgb.width, rgb.height


def _upright(image: Image.Image, field: str) -> Image.Image:
    """Apply the EXIF orientation, as phones rely on it; broken EXIF leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image) or image
    except (*_IMAGE_EXCEPTIONS, KeyError, TypeError) as exc:
        log.warning("%s: EXIF orientation ignored (%s)", field, _reason(exc))
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for ComfyUI: transparency composited on white, 16-bit scaled (not clipped) to 8-bit."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# ---------------------------------------------------------------- errors


def _sniff(data: bytes) -> str:
    """Why Pillow could not identify the bytes, naming the format when it is a common mistake."""
    head = data[:32]
    lowered = head.lstrip().lower()
    for offset, magic, name in _SNIFF:
        if head[offset:offset + len(magic)] == magic or (offset == 0 and lowered.startswith(magic)):
            return f"it is {name}, and only PNG, JPEG and WebP are accepted"
    return "its bytes are not a PNG, JPEG or WebP image"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def _not_a_reference(field: str, why: str, what: str = "image") -> WorkerError:
    kind = "image/..." if what == "image" else "<type>/..."
    article = "an" if what[0] in "aeiou" else "a"
    return WorkerError(
        INVALID_INPUT,
        f"{field} is not {article} {what}: {why}; send base64, a data:{kind};base64 URI or an "
        "https:// URL.",
        {"field": field},
    )


def _unreadable(field: str, why: str) -> WorkerError:
    return WorkerError(
        IMAGE_UNREADABLE,
        f"{field} could not be read as an image: {why}; send a valid PNG, JPEG or WebP.",
        {"field": field, "reason": why},
    )


def _too_large(field: str, limit: int, setting: str = "MAX_IMAGE_BYTES", what: str = "image",
               code: str = INVALID_INPUT) -> WorkerError:
    return WorkerError(
        code,
        f"{field} is larger than the {limit / 1e6:g} MB limit ({setting}); send a smaller {what}.",
        {"field": field, "limit_bytes": limit},
    )


def _too_many_pixels(field: str, size: tuple[int, int] | None, limit: int) -> WorkerError:
    shown = f"{size[0]}x{size[1]} pixels" if size else "too many pixels"
    return WorkerError(
        INVALID_INPUT,
        f"{field} has {shown}, more than the {limit:,} pixel limit (MAX_IMAGE_PIXELS); send a "
        "smaller image.",
        {"field": field, "limit_pixels": limit, **({"size": list(size)} if size else {})},
    )
