"""A slow network volume on this machine: a read-only FUSE passthrough of a folder whose every read
request waits a fixed latency, then shares one capped link (one request at a time at `bandwidth`
bytes/s), so many requests in flight hide the latency and one at a time pays it every time, as on
RunPod's network volumes. Needs /dev/fuse, libfuse 3 (Debian's `fuse3`) and mfusepy (the test
extra). `python -m bench.fusevol ROOT MOUNTPOINT [--latency-ms 2] [--mbps 400]` serves until
unmounted or SIGTERM; `SlowVolume` does both for code (`make bench BENCH_ARGS=--cold`)."""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MB = 1000**2


def unavailable() -> str | None:
    """Why a FUSE mount cannot work here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine (a container without the FUSE device)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "no fusermount3 (install Debian's fuse3 package: apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401 - loads libfuse through ctypes
    except ImportError:
        return "the mfusepy binding is not installed (pip install -e '.[test]')"
    except OSError as exc:  # mfusepy found no libfuse
        return f"libfuse is missing ({exc}; install Debian's fuse3 package)"
    return None


class Link:
    """The simulated volume's timing: per-request latency, one shared link of capped bandwidth."""

    def __init__(self, latency_s: float, bandwidth: float) -> None:
        self.latency_s, self.bandwidth = latency_s, bandwidth
        self.lock = threading.Lock()
        self.busy_until = 0.0
        self.requests = 0
        self.bytes = 0

    def wait(self, size: int) -> None:
        arrive = time.monotonic() + self.latency_s
        with self.lock:
            start = max(arrive, self.busy_until)
            self.busy_until = start + size / self.bandwidth
            done = self.busy_until
            self.requests += 1
            self.bytes += size
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def make_operations(root: str, link: Link) -> Any:
    """A read-only passthrough of `root` whose reads go through `link`."""
    import mfusepy as fuse

    class SlowPassthrough(fuse.Operations):
        use_ns = True

        def _full(self, path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._full(path))
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno or errno.EIO) from None
            return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid",
                                                 "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._full(path))

        def open(self, path: str, flags: int) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            return os.open(self._full(path), os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            data = os.pread(fh, size, offset)
            link.wait(len(data))
            return data

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(root)
            return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                 "f_files", "f_ffree", "f_favail", "f_namemax")}

    return SlowPassthrough()


def serve(root: str, mountpoint: str, latency_s: float, bandwidth: float) -> Link:
    """Mount and serve until unmounted (blocks). Multithreaded: requests wait in parallel."""
    import mfusepy as fuse

    link = Link(latency_s, bandwidth)
    fuse.FUSE(make_operations(os.path.realpath(root), link), mountpoint, foreground=True, nothreads=False,
              ro=True, fsname="slowvol", default_permissions=True,
              kernel_cache=True)  # keep pages across opens, as a network filesystem's client cache does
    return link


class SlowVolume:
    """`with SlowVolume(root, mountpoint, latency_s=0.002, bandwidth=400e6): ...`: the folder served
    slowly at `mountpoint` by a child process, unmounted (and the child gone) on exit."""

    def __init__(self, root: Path | str, mountpoint: Path | str, latency_s: float = 0.002,
                 bandwidth: float = 400 * MB, log: Path | None = None) -> None:
        self.root, self.mountpoint = Path(root), Path(mountpoint)
        self.latency_s, self.bandwidth, self.log = latency_s, bandwidth, log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SlowVolume":
        self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def mount(self, timeout: float = 15.0) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        repo = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fusevol", str(self.root), str(self.mountpoint),
             "--latency-ms", str(self.latency_s * 1000), "--mbps", str(self.bandwidth / MB)],
            cwd=repo, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the FUSE volume exited ({self.proc.returncode}) before mounting")
            if time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"the FUSE volume did not mount at {self.mountpoint} in {timeout:.0f} s")
            time.sleep(0.05)

    def unmount(self, timeout: float = 15.0) -> None:
        """fusermount3 -u, which ends the serving process; SIGTERM, then SIGKILL, if it lingers."""
        if self.proc is None:
            return
        if os.path.ismount(self.mountpoint):
            tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
            subprocess.run([tool, "-u", "-z", str(self.mountpoint)], check=False, capture_output=True)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fusevol", description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("mountpoint")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="added to every read request")
    parser.add_argument("--mbps", type=float, default=400.0, help="the volume's bandwidth, MB/s")
    args = parser.parse_args(argv)
    why = unavailable()
    if why:
        print(f"fusevol: cannot mount: {why}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:  # unmount: the FUSE loop then returns
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
        subprocess.run([tool, "-u", "-z", args.mountpoint], check=False, capture_output=True)

    signal.signal(signal.SIGTERM, on_term)
    link = serve(args.root, args.mountpoint, args.latency_ms / 1000, args.mbps * MB)
    print(f"fusevol: unmounted after {link.requests} read requests, {link.bytes / MB:.1f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
