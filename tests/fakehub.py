"""A stand-in Hugging Face Hub on 127.0.0.1 for the download tests.

It answers the two endpoints `wan_worker.download` uses through huggingface_hub 2.x, the way the
real hub does:

- `POST /api/models/{repo}/paths-info/{revision}` (form field `paths`, repeated): one JSON entry
  per existing path, with `size`, git `oid` and `lfs: {oid: sha256, size, pointerSize}`;
- `GET|HEAD /{repo}/resolve/{revision}/{path}`: a 302 to a content-addressed "CDN" URL with
  `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`, like LFS files on the hub; the CDN honours
  `Range: bytes=N-` with 206 + `Content-Range`.

Files are small generated safetensors (a few KB, valid headers) under the manifest's repo paths.
Knobs, set as attributes while it runs: `cut_once` (path -> bytes sent before the connection is
dropped, once), `corrupt` (paths served with a flipped byte, so only the sha256 can tell),
`token` (require `Authorization: Bearer <token>`, else 401), `redirect`. `requests` records
every request (method, path, Range header, whether it carried a token).
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from wan_worker.models import MANIFEST

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def safetensors_bytes(label: str, n_floats: int) -> bytes:
    """A valid safetensors file: one F32 tensor of deterministic, label-specific bytes."""
    header = {"__metadata__": {"label": label},
              "w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    seed = hashlib.sha256(label.encode()).digest()
    data = (seed * (4 * n_floats // len(seed) + 1))[: 4 * n_floats]
    return struct.pack("<Q", len(raw)) + raw + data


def manifest_files() -> dict[tuple[str, str], bytes]:
    """(repo, path) -> bytes for every manifest file, each a different small size."""
    return {(m.repo, m.repo_path): _maker(m.name)(m.name, 700 + 131 * i) for i, m in enumerate(MANIFEST)}


def _maker(name: str) -> Callable[[str, int], bytes]:
    if name.endswith(".onnx"):
        return onnx_bytes
    return torch_zip_bytes if name.endswith(".pth") else safetensors_bytes


def torch_zip_bytes(label: str, n_floats: int) -> bytes:
    """A zip laid out as torch.save writes one (<name>/data.pkl, <name>/data/0), as the torch file
    check reads it: the zip directory at the end, a data.pkl inside."""
    seed = hashlib.sha256(label.encode()).digest()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", (seed * (4 * n_floats // len(seed) + 1))[: 4 * n_floats])
    return buffer.getvalue()


def onnx_bytes(label: str, n_floats: int) -> bytes:
    """Bytes that start like an ONNX ModelProto (ir_version first), as the ONNX file check reads them."""
    seed = hashlib.sha256(label.encode()).digest()
    return b"\x08\x08" + (seed * (4 * n_floats // len(seed) + 1))[: 4 * n_floats]


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=manifest_files)
    token: str | None = None
    redirect: bool = True
    cut_once: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what tests look at ---

    def body_gets(self) -> list[Seen]:
        """GETs that transfer file bytes (the CDN, or resolve when not redirecting)."""
        return [r for r in self.requests if r.method == "GET" and
                (r.path.startswith("/cdn/") or (not self.redirect and "/resolve/" in r.path))]

    def ranges(self) -> list[str]:
        return [r.range for r in self.requests if r.range]

    def served_bytes(self, repo_path: str) -> bytes:
        for (_, path), data in self.files.items():
            if path == repo_path:
                return self._payload(path, data)
        raise KeyError(repo_path)

    def _payload(self, path: str, data: bytes) -> bytes:
        if path in self.corrupt:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def _find(self, repo: str, path: str) -> bytes | None:
        return self.files.get((repo, path))

    def _by_sha(self, sha: str) -> tuple[str, bytes] | None:
        for (_, path), data in self.files.items():
            if hashlib.sha256(data).hexdigest() == sha:
                return path, data
        return None


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        # --- routing ---

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_POST(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            hub.requests.append(Seen(self.command, path, self.headers.get("Range"),
                                     auth.startswith("Bearer ")))
            if path.startswith("/cdn/"):
                return self._cdn(path.removeprefix("/cdn/"), head)
            if not self._authorized(auth):
                return
            if self.command == "POST" and "/paths-info/" in path:
                return self._paths_info(path)
            if "/resolve/" in path:
                return self._resolve(path, head)
            self._error(404, "Not Found")

        def _authorized(self, auth: str) -> bool:
            if hub.token is None:
                return True
            if not auth:
                self._error(401, "Invalid username or password.")
                return False
            if auth != f"Bearer {hub.token}":
                self._error(401, "Invalid credentials in Authorization header")
                return False
            return True

        # --- endpoints ---

        def _paths_info(self, path: str) -> None:
            repo = path.removeprefix("/api/models/").split("/paths-info/")[0]
            if not any(r == repo for r, _ in hub.files):
                return self._error(404, "Repository not found", code="RepoNotFound")
            form = parse_qs(self.body.decode())
            entries = []
            for p in form.get("paths", []):
                data = hub._find(repo, p)
                if data is None:
                    continue
                pointer_oid = hashlib.sha1(data).hexdigest()  # stands in for the LFS pointer's
                entries.append({"type": "file", "path": p, "size": len(data), "oid": pointer_oid,
                                "lfs": {"oid": hashlib.sha256(data).hexdigest(),
                                        "size": len(data), "pointerSize": 134}})
            self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

        def _resolve(self, path: str, head: bool) -> None:
            repo, rest = path.lstrip("/").split("/resolve/", 1)
            _revision, file_path = rest.split("/", 1)
            data = hub._find(repo, file_path)
            if data is None:
                known = any(r == repo for r, _ in hub.files)
                code = "EntryNotFound" if known else "RepoNotFound"
                return self._error(404, "Entry not found", code=code)
            sha = hashlib.sha256(data).hexdigest()
            meta = {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)), "ETag": f'"{sha}"'}
            if hub.redirect:
                meta["Location"] = f"{hub.endpoint}/cdn/{sha}"
                return self._send(302, b"", meta)
            self._serve_bytes(file_path, hub._payload(file_path, data), head, meta)

        def _cdn(self, sha: str, head: bool) -> None:
            found = hub._by_sha(sha)
            if found is None:
                return self._error(404, "No such object")
            file_path, data = found
            self._serve_bytes(file_path, hub._payload(file_path, data), head, {})

        def _serve_bytes(self, file_path: str, data: bytes, head: bool,
                         extra: dict[str, str]) -> None:
            start, status = 0, 200
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                       **extra}
            wanted = self.headers.get("Range")
            if wanted:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    headers["Content-Range"] = f"bytes */{len(data)}"
                    return self._send(416, b"", headers)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = None if head else hub.cut_once.pop(file_path, None)
            if cut is None:
                return self._send(status, b"" if head else body, headers, length=len(body))
            self._send_head(status, headers, len(body))
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

        # --- plumbing ---

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str],
                  length: int | None = None) -> None:
            self._send_head(status, headers, len(body) if length is None else length)
            if body:
                self.wfile.write(body)

        def _send_head(self, status: int, headers: dict[str, str], length: int) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()

    return Handler


if __name__ == "__main__":  # handy for poking at it by hand: python tests/fakehub.py
    import time

    with FakeHub() as hub:
        print(hub.endpoint, flush=True)
        while True:
            time.sleep(3600)
