"""The slow-volume simulation of `make bench BENCH_ARGS=--cold` (bench/fusevol.py): it mounts,
serves the folder's bytes unchanged at the stated latency and bandwidth, and unmounts cleanly.
Skipped, with the reason, where FUSE cannot work (no /dev/fuse, no libfuse 3, no mfusepy)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import fusevol

WHY = fusevol.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"FUSE simulation unavailable: {WHY}")


def test_mounts_serves_slowly_and_unmounts_cleanly(tmp_path: Path):
    root, mnt = tmp_path / "root", tmp_path / "mnt"
    (root / "models").mkdir(parents=True)
    data = os.urandom(4 * 1000**2)
    (root / "models" / "w.safetensors").write_bytes(data)
    log = tmp_path / "fusevol.log"
    vol = fusevol.SlowVolume(root, mnt, latency_s=0.005, bandwidth=20 * fusevol.MB, log=log)
    with vol:
        assert os.path.ismount(mnt)
        assert os.listdir(mnt / "models") == ["w.safetensors"]
        assert (mnt / "models" / "w.safetensors").stat().st_size == len(data)
        t0 = time.monotonic()
        assert (mnt / "models" / "w.safetensors").read_bytes() == data
        spent = time.monotonic() - t0
        assert spent >= 0.9 * len(data) / (20 * fusevol.MB), spent  # the bandwidth cap holds
        t0 = time.monotonic()
        assert (mnt / "models" / "w.safetensors").read_bytes() == data  # again: from the page cache
        assert time.monotonic() - t0 < spent / 4
        with pytest.raises(OSError):
            (mnt / "models" / "new").write_bytes(b"x")  # read-only
        proc = vol.proc
    assert not os.path.ismount(mnt)
    assert proc is not None and proc.returncode == 0, log.read_text()
    assert "unmounted after" in log.read_text()


def test_latency_is_paid_per_request_and_hidden_by_parallel_requests():
    link = fusevol.Link(latency_s=0.02, bandwidth=1e12)
    t0 = time.monotonic()
    for _ in range(5):
        link.wait(4096)
    serial = time.monotonic() - t0
    import threading
    threads = [threading.Thread(target=link.wait, args=(4096,)) for _ in range(5)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parallel = time.monotonic() - t0
    assert serial >= 0.1 and parallel < 0.08, (serial, parallel)
