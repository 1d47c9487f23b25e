"""PREFETCH_MODELS: every byte of the chosen files read once, within the memory budget, stopping
cleanly on SIGTERM. (That it never delays readiness is in test_entrypoint.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import write_safetensors
from wan_worker import prefetch
from wan_worker.models import MODEL_SETS, files_of
from wan_worker.settings import Settings

GIB = 1024**3


def settings_for(tmp_path: Path) -> Settings:
    return Settings(comfy_dir=str(tmp_path / "comfyui"), extra_model_paths=str(tmp_path / "extra_model_paths.yaml"))


def fake_meminfo(path: Path, available: int, total: int = 64 * GIB) -> str:
    path.write_text(f"MemTotal:       {total // 1024} kB\nMemFree:        1000 kB\n"
                    f"MemAvailable:   {available // 1024} kB\nBuffers:        0 kB\n")
    return str(path)


def sized_volume(root: Path, sizes: dict[str, int]) -> None:
    """Give the named files (folder/name) exactly these sizes, as valid safetensors files."""
    for rel, size in sizes.items():
        path, payload = root / rel, size
        for _ in range(3):  # the header grows with the payload's digits: settle the payload size
            write_safetensors(path, b"\0" * payload)
            payload += size - path.stat().st_size
        write_safetensors(path, (bytes(range(256)) * (payload // 256 + 1))[:payload])
        assert path.stat().st_size == size


class Recording(prefetch.Prefetcher):
    """Notes every range read, to prove each byte is read exactly once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ranges: list[tuple[str, int, int, bytes]] = []
        self._paths: dict[int, str] = {}

    def read_range(self, fd, offset, length, buf):
        n = super().read_range(fd, offset, length, buf)
        with self._lock:
            self.ranges.append((os.readlink(f"/proc/self/fd/{fd}"), offset, n, bytes(buf[:n])))
        return n


def test_every_byte_of_the_chosen_sets_is_read_once(tmp_path, volume):
    chosen = [MODEL_SETS["i2v-14b"], MODEL_SETS["ti2v-5b"]]
    odd = {m.rel_path: 10_000 + 977 * i for i, m in enumerate(files_of(chosen))}
    sized_volume(volume, odd)
    plan = prefetch.make_plan(settings_for(tmp_path), chosen, {"MemAvailable": 64 * GIB, "MemTotal": 64 * GIB})
    assert [t.rel_path for t in plan.files] == list(odd) and not plan.skipped
    reader = Recording(plan.files, threads=4, chunk=4096)
    stats = reader.run()

    assert stats.read == sum(odd.values()) == plan.total and stats.files_done == len(odd) and not stats.errors
    for target in plan.files:
        pieces = sorted((off, n, data) for path, off, n, data in reader.ranges if path == target.path)
        assert [off for off, _, _ in pieces] == list(range(0, target.size, 4096)), target  # no gap, no overlap
        assert b"".join(data for _, _, data in pieces) == Path(target.path).read_bytes()
    other = {m.rel_path for m in files_of([MODEL_SETS["t2v-14b"]])} - set(odd)
    assert not {p for p, *_ in reader.ranges if any(p.endswith(r) for r in other)}  # other sets untouched


def test_memory_budget_skips_what_does_not_fit_and_says_so(tmp_path, volume, caplog):
    chosen = [MODEL_SETS["ti2v-5b"]]
    models = files_of(chosen)  # manifest order: the text encoder, the 5B model, the 2.2 VAE
    sizes = {models[0].rel_path: 3 * 1024 * 1024, models[1].rel_path: 6 * 1024 * 1024,
             models[2].rel_path: 1024 * 1024}
    sized_volume(volume, sizes)
    # MemTotal 20 GiB: the margin is 2 GiB; MemAvailable 2 GiB + 4.5 MiB leaves a 4.5 MiB budget.
    meminfo = fake_meminfo(tmp_path / "meminfo", 2 * GIB + int(4.5 * 1024 * 1024), total=20 * GIB)
    caplog.set_level("INFO", logger="wan_worker.prefetch")
    stats = prefetch.prefetch(settings_for(tmp_path), "ti2v-5b", meminfo_path=meminfo, threads=2)

    assert stats is not None and stats.read == sizes[models[0].rel_path] + sizes[models[2].rel_path]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped) == 1 and models[1].rel_path in skipped[0] and "memory budget" in skipped[0], skipped
    assert any("MemAvailable 2.15 GB" in r.getMessage() for r in caplog.records)


def test_auto_takes_the_complete_sets_and_off_reads_nothing(tmp_path, volume):
    settings = settings_for(tmp_path)
    assert prefetch.chosen_sets("", settings) == [] and prefetch.chosen_sets("off", settings) == []
    assert [s.name for s in prefetch.chosen_sets("auto", settings)] == list(MODEL_SETS)
    os.remove(volume / files_of([MODEL_SETS["t2v-14b"]])[0].rel_path)
    assert "t2v-14b" not in [s.name for s in prefetch.chosen_sets("auto", settings)]
    with pytest.raises(ValueError, match="PREFETCH_MODELS.*unknown: nope"):
        prefetch.chosen_sets("i2v-14b,nope", settings)


def test_missing_files_of_a_named_set_are_skipped_with_the_reason(tmp_path, volume):
    gone = files_of([MODEL_SETS["t2v-14b"]])[0]
    os.remove(volume / gone.rel_path)
    plan = prefetch.make_plan(settings_for(tmp_path), [MODEL_SETS["t2v-14b"]], {"MemAvailable": 64 * GIB})
    assert [rel for rel, _ in plan.skipped] == [gone.rel_path] and "missing" in plan.skipped[0][1]


def test_a_stop_ends_the_reads_between_chunks(tmp_path, volume):
    sized_volume(volume, {files_of([MODEL_SETS["ti2v-5b"]])[1].rel_path: 4 * 1024 * 1024})
    plan = prefetch.make_plan(settings_for(tmp_path), [MODEL_SETS["ti2v-5b"]], {"MemAvailable": 64 * GIB})
    stop = threading.Event()

    class Slow(prefetch.Prefetcher):
        def read_range(self, fd, offset, length, buf):
            stop.set()  # the first read asks to stop: no thread starts another
            return super().read_range(fd, offset, length, buf)

    stats = Slow(plan.files, threads=2, chunk=4096, stop=stop).run()
    assert stats.stopped and 0 < stats.read <= 2 * 4096


def sparse_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of `size` bytes that takes no disk space (one tensor, all holes)."""
    import json
    import struct
    n = size
    for _ in range(3):
        header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        n = size - 8 - len(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(size)


def test_the_cli_stops_cleanly_on_sigterm(tmp_path, volume):
    """`python -m wan_worker.prefetch` reading an 8 GB file: SIGTERM ends it at once, exit 0, with
    what it read in the log."""
    env = {**os.environ, "COMFY_DIR": str(tmp_path / "comfyui"),
           "EXTRA_MODEL_PATHS": str(tmp_path / "extra_model_paths.yaml"), "PREFETCH_MODELS": "ti2v-5b"}
    big = files_of([MODEL_SETS["ti2v-5b"]])[1]
    sparse_safetensors(volume / big.rel_path, 8 * GIB)
    meminfo = fake_meminfo(tmp_path / "meminfo", 64 * GIB)
    proc = subprocess.Popen([sys.executable, "-m", "wan_worker.prefetch", "--threads", "1", "--meminfo", meminfo],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        line = ""
        while "reading" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "reading 3 files" in line, line
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM: stopping" in out and "stopped after" in out, out
