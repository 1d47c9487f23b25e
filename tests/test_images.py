"""images.load_image: every accepted form, every refusal, and the guarded URL fetch (loopback only)."""
from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest
from PIL import Image, ImageOps

from wan_worker import images
from wan_worker.errors import IMAGE_UNREADABLE, INVALID_INPUT, WorkerError
from wan_worker.images import PreparedImage, load_image
from wan_worker.settings import Settings

FIELD = "images[1].image"


def settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def encode(im: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def two_colors(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue: shows where a rotation moved things."""
    im = Image.new("RGB", size, (255, 0, 0))
    im.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return im


def noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.frombytes("RGB", size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3)))


def decoded(prepared: PreparedImage) -> Image.Image:
    """The pixels ComfyUI's LoadImage gets from the upload: EXIF transpose, then RGB."""
    im = Image.open(io.BytesIO(prepared.data))
    assert {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[im.format] == prepared.extension
    im = ImageOps.exif_transpose(im).convert("RGB")
    assert im.size == (prepared.width, prepared.height)
    return im


def refused(value: str, code: str, s: Settings | None = None, field: str = FIELD) -> WorkerError:
    with pytest.raises(WorkerError) as info:
        load_image(value, s or settings(), field)
    err = info.value
    assert err.code == code, err
    assert field in err.message
    assert len(err.message) < 400
    return err


# ---------------------------------------------------------------- accepted forms


def test_png_base64() -> None:
    p = load_image(b64(encode(two_colors(), "PNG")), settings())
    assert (p.width, p.height, p.source, p.format) == (40, 20, "base64", "PNG")
    assert decoded(p).getpixel((0, 0)) == (255, 0, 0)


def test_jpeg_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90° clockwise
    p = load_image(b64(encode(two_colors(), "JPEG", exif=exif, quality=95)), settings())
    assert (p.width, p.height, p.format) == (20, 40, "JPEG")
    im = decoded(p)
    top, bottom = im.getpixel((10, 2)), im.getpixel((10, 37))
    assert top[0] > 200 and top[2] < 60  # red, the stored left half, is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_plain_rgb_images_go_up_as_sent() -> None:
    """No 30 ms PNG re-encode (and five times the bytes) when LoadImage would see the same pixels."""
    for fmt, ext, mime in (("JPEG", "jpg", "image/jpeg"), ("PNG", "png", "image/png"),
                           ("WEBP", "webp", "image/webp")):
        data = encode(two_colors(), fmt)
        p = load_image(b64(data), settings())
        assert (p.data, p.extension, p.mime_type) == (data, ext, mime)


def test_transparency_and_odd_modes_are_normalized_to_rgb_png() -> None:
    for im in (Image.new("RGBA", (4, 4)), Image.new("P", (4, 4)), Image.new("I;16", (4, 4)),
               Image.new("LA", (4, 4))):
        p = load_image(b64(encode(im, "PNG")), settings())
        assert p.extension == "png" and Image.open(io.BytesIO(p.data)).mode == "RGB"


def test_webp() -> None:
    p = load_image(b64(encode(two_colors(), "WEBP", lossless=True)), settings())
    assert (p.width, p.height, p.format) == (40, 20, "WEBP")
    assert decoded(p).getpixel((0, 0)) == (255, 0, 0)


def test_rgba_is_composited_on_white() -> None:
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    im.putpixel((1, 1), (255, 0, 0, 128))
    im.putpixel((2, 2), (0, 0, 255, 255))
    out = decoded(load_image(b64(encode(im, "PNG")), settings()))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    r, g, b = out.getpixel((1, 1))
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135
    assert out.getpixel((2, 2)) == (0, 0, 255)


def test_la_image() -> None:
    im = Image.new("LA", (3, 3), (0, 0))
    im.putpixel((0, 0), (0, 255))
    out = decoded(load_image(b64(encode(im, "PNG")), settings()))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_transparency() -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((3, 3), 1)
    data = encode(im, "PNG", transparency=0)
    out = decoded(load_image(b64(data), settings()))
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent green -> white
    assert out.getpixel((3, 3)) == (255, 0, 0)


def test_palette_without_transparency() -> None:
    im = Image.new("P", (2, 2), 0)
    im.putpalette([10, 20, 30] + [0] * 765)
    assert decoded(load_image(b64(encode(im, "PNG")), settings())).getpixel((0, 0)) == (10, 20, 30)


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    im = Image.new("I;16", (4, 2), 32768)
    im.putpixel((0, 0), 65535)
    data = encode(im, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decoded(load_image(b64(data), settings()))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert all(120 <= c <= 135 for c in out.getpixel((1, 1)))


def test_cmyk_jpeg() -> None:
    out = decoded(load_image(b64(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")),
                             settings()))
    r, g, b = out.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_data_uri() -> None:
    p = load_image("data:image/png;base64," + b64(encode(two_colors(), "PNG")), settings())
    assert (p.source, p.format, p.width) == ("data_uri", "PNG", 40)


def test_data_uri_media_type_need_not_match() -> None:
    p = load_image("data:image/jpeg;base64," + b64(encode(two_colors(), "PNG")), settings())
    assert p.format == "PNG"


def test_urlsafe_base64_without_padding_and_with_line_breaks() -> None:
    data = encode(noise(), "PNG")
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in text or "_" in text
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    p = load_image("  " + wrapped + "\r\n", settings())
    assert (p.width, p.height, p.source) == (64, 64, "base64")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("value", ["", "   \n\t"])
def test_empty(value: str) -> None:
    assert "empty" in refused(value, INVALID_INPUT).message


@pytest.mark.parametrize("value", ["file:///etc/passwd", "ftp://example.com/a.png",
                                   "C:\\images\\cat.png", "gopher://x"])
def test_other_schemes(value: str) -> None:
    assert "unsupported scheme" in refused(value, INVALID_INPUT).message


@pytest.mark.parametrize("value", ["!!! not an image at all !!!", "/tmp/cat.png", "abcde"])
def test_not_base64(value: str) -> None:
    refused(value, INVALID_INPUT)


def test_data_uri_that_is_not_base64_or_not_an_image() -> None:
    refused("data:image/png,%89PNG", INVALID_INPUT)
    refused("data:text/plain;base64," + b64(encode(two_colors(), "PNG")), INVALID_INPUT)
    refused("data:image/png;base64" + "A" * 300, INVALID_INPUT)


def test_garbage_bytes_are_unreadable() -> None:
    err = refused(b64(b"this is plain text, not pixels at all"), IMAGE_UNREADABLE)
    assert "not a PNG, JPEG or WebP" in err.message


def test_gif_is_named() -> None:
    gif = encode(Image.new("P", (2, 2)), "GIF")
    err = refused(b64(gif), IMAGE_UNREADABLE)
    assert "GIF" in err.message and err.details["field"] == FIELD


def test_html_page_is_named() -> None:
    assert "HTML" in refused(b64(b"<!DOCTYPE html><html></html>"), IMAGE_UNREADABLE).message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = encode(noise((128, 128)), fmt, **({"quality": 95} if fmt != "PNG" else {}))
    refused(b64(data[: len(data) // 2]), IMAGE_UNREADABLE)


def test_message_never_holds_the_base64() -> None:
    payload = b64(b"\x00\x01garbage" * 50)
    err = refused(payload, IMAGE_UNREADABLE)
    assert payload[:20] not in err.message and payload[:20] not in str(err.details)


def test_oversize_decoded() -> None:
    data = encode(noise((64, 64)), "PNG")
    err = refused(b64(data), INVALID_INPUT, settings(max_image_bytes=len(data) - 1))
    assert "MAX_IMAGE_BYTES" in err.message
    load_image(b64(data), settings(max_image_bytes=len(data)))  # exactly the cap is fine


def test_huge_string_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> bytes:
        raise AssertionError("decoded a string that was obviously too long")

    monkeypatch.setattr(images.base64, "b64decode", boom)
    refused("A" * 5_000_000, INVALID_INPUT, settings(max_image_bytes=1000))
    refused("data:image/png;base64," + "A" * 5_000_000, INVALID_INPUT, settings(max_image_bytes=1000))


def test_pixel_cap_from_the_header() -> None:
    err = refused(b64(encode(noise((64, 64)), "PNG")), INVALID_INPUT, settings(max_image_pixels=4000))
    assert "64x64" in err.message and "MAX_IMAGE_PIXELS" in err.message


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares the given size, with one tiny (far too short) IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 5_000), (7_000, 7_000)])
def test_pixel_bomb_header(size: tuple[int, int]) -> None:
    """Above Pillow's own bomb limit, between its warning and ours, and just above ours."""
    start = time.perf_counter()
    err = refused(b64(png_header_only(*size)), INVALID_INPUT)
    assert "MAX_IMAGE_PIXELS" in err.message
    assert time.perf_counter() - start < 1.0


def test_pixel_bomb_does_not_depend_on_pillows_global(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    refused(b64(png_header_only(10_000, 10_000)), INVALID_INPUT)


def test_http_refused_unless_allowed(server: "Server") -> None:
    err = refused(server.url("/img.png"), INVALID_INPUT, settings(allow_private_image_urls=True))
    assert "ALLOW_HTTP_IMAGE_URLS" in err.message
    assert server.requests == []


# ---------------------------------------------------------------- URL fetch (127.0.0.1 only)

PNG = encode(two_colors(), "PNG")
Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A tiny HTTP server on 127.0.0.1 whose routes the tests choose; records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        self.routes: dict[str, Route] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                route = outer.routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404, "Not Found")
                    else:
                        route(self)
                except OSError:
                    pass  # the client gave up, as it should

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def send(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
         length: bool = True) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return route


@pytest.fixture
def server() -> Server:
    s = Server()
    s.routes["/img.png"] = send(200, PNG, {"Content-Type": "image/png"})
    s.thread.start()
    yield s
    s.release.set()
    s.httpd.shutdown()
    s.httpd.server_close()


OPEN = settings(allow_http_image_urls=True, allow_private_image_urls=True)
GUARDED = settings(allow_http_image_urls=True, allow_private_image_urls=False)


def test_url_fetch(server: Server) -> None:
    p = load_image(server.url("/img.png"), OPEN, FIELD)
    assert (p.source, p.format, p.width, p.height) == ("url", "PNG", 40, 20)
    assert server.requests == ["/img.png"]


def test_url_redirect_followed(server: Server) -> None:
    server.routes["/a"] = send(302, headers={"Location": "/b"})
    server.routes["/b"] = send(301, headers={"Location": server.url("/img.png", "localhost")})
    assert load_image(server.url("/a"), OPEN).width == 40
    assert server.requests == ["/a", "/b", "/img.png"]


def test_url_redirect_loop(server: Server) -> None:
    server.routes["/loop"] = send(302, headers={"Location": "/loop"})
    err = refused(server.url("/loop"), IMAGE_UNREADABLE, OPEN)
    assert "redirected more than" in err.message
    assert len(server.requests) == images.MAX_REDIRECTS + 1


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("a refused URL was fetched")

    monkeypatch.setattr(images.requests, "get", boom)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254",
                                  "[::1]", "[::ffff:127.0.0.1]", "[fd00:ec2::254]", "0.0.0.0",
                                  "2130706433", "192.168.1.1", "224.0.0.1", "100.64.0.1"])
def test_private_hosts_refused_without_connecting(server: Server, no_connections: None,
                                                  host: str) -> None:
    err = refused(server.url("/img.png", host), INVALID_INPUT, GUARDED)
    assert "ALLOW_PRIVATE_IMAGE_URLS" in err.message and err.details["addresses"]
    assert server.requests == []


def test_metadata_endpoint_refused_even_by_public_check() -> None:
    import ipaddress

    assert not images._is_public(ipaddress.ip_address("169.254.169.254"))
    assert not images._is_public(ipaddress.ip_address("fd00:ec2::254"))
    assert images._is_public(ipaddress.ip_address("8.8.8.8"))
    assert images._is_public(ipaddress.ip_address("2606:4700:4700::1111"))


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png",
                                    "http://[::1]:1/x.png"])
def test_redirect_to_private_host_refused(server: Server, monkeypatch: pytest.MonkeyPatch,
                                          target: str) -> None:
    """127.0.0.1 plays a public host here; the hop it redirects to must be checked again."""
    is_public = images._is_public
    monkeypatch.setattr(images, "_is_public", lambda ip: str(ip) == "127.0.0.1" or is_public(ip))
    server.routes["/go"] = send(302, headers={"Location": target})
    refused(server.url("/go"), INVALID_INPUT, GUARDED)
    assert server.requests == ["/go"]


def test_redirect_to_other_scheme_refused(server: Server) -> None:
    server.routes["/go"] = send(302, headers={"Location": "file:///etc/passwd"})
    refused(server.url("/go"), INVALID_INPUT, OPEN)


def test_redirect_to_http_refused_when_http_not_allowed() -> None:
    with pytest.raises(WorkerError) as info:
        images._check_url("http://127.0.0.1/x", settings(allow_private_image_urls=True), FIELD,
                          redirected=True)
    assert info.value.code == INVALID_INPUT and "redirects to an http://" in info.value.message


def test_404(server: Server) -> None:
    err = refused(server.url("/nope.png"), IMAGE_UNREADABLE, OPEN)
    assert "404" in err.message and err.details["status"] == 404


def test_500(server: Server) -> None:
    server.routes["/err"] = send(500, b"boom")
    assert "500" in refused(server.url("/err"), IMAGE_UNREADABLE, OPEN).message


def test_declared_length_over_cap_refused_before_reading(server: Server) -> None:
    server.routes["/big"] = send(200, b"x" * 10, {"Content-Length": str(10**9)}, length=False)
    refused(server.url("/big"), INVALID_INPUT, OPEN)


def test_byte_cap_enforced_while_streaming(server: Server) -> None:
    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()  # no Content-Length: the body ends when the connection closes
        for _ in range(64):
            h.wfile.write(b"\x89" * 65536)

    server.routes["/stream"] = endless
    capped = settings(allow_http_image_urls=True, allow_private_image_urls=True,
                      max_image_bytes=100_000)
    err = refused(server.url("/stream"), INVALID_INPUT, capped)
    assert "MAX_IMAGE_BYTES" in err.message


def test_timeout_when_server_stalls(server: Server) -> None:
    server.routes["/stall"] = lambda h: server.release.wait(10)
    quick = settings(allow_http_image_urls=True, allow_private_image_urls=True,
                     image_fetch_timeout_s=0.3)
    start = time.perf_counter()
    err = refused(server.url("/stall"), IMAGE_UNREADABLE, quick)
    assert "0.3 s" in err.message
    assert time.perf_counter() - start < 3


def test_timeout_when_server_drips(server: Server) -> None:
    """Each byte arrives within the read timeout; the overall deadline still ends it."""
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        while not server.release.wait(0.05):
            h.wfile.write(b"\x89")
            h.wfile.flush()

    server.routes["/drip"] = drip
    quick = settings(allow_http_image_urls=True, allow_private_image_urls=True,
                     image_fetch_timeout_s=0.4)
    start = time.perf_counter()
    refused(server.url("/drip"), IMAGE_UNREADABLE, quick)
    assert time.perf_counter() - start < 3


def test_connection_refused(server: Server) -> None:
    port = server.port
    server.httpd.shutdown()
    server.httpd.server_close()
    err = refused(f"http://127.0.0.1:{port}/img.png", IMAGE_UNREADABLE, OPEN)
    assert "ConnectionError" in err.message


def test_url_that_is_not_an_image(server: Server) -> None:
    server.routes["/page"] = send(200, b"<html><body>hi</body></html>", {"Content-Type": "text/html"})
    assert "HTML" in refused(server.url("/page"), IMAGE_UNREADABLE, OPEN).message
