"""`python -m bench --segments [N]`: a story of N segments (default 3) told two ways on the REAL
ComfyUI through one warm worker: A, one job with `segments`; B, N jobs chained by hand through
`return_last_frame`, as a user does without it. Same seeds, prompts, size, length and steps;
rounds alternate who goes first. Per side: wall time, ComfyUI's execute, the worker's part, CPU
seconds; every MP4 decoded and its frames counted. Method and runs: bench/results/segments.md."""
from __future__ import annotations

import base64
import io
import os
import statistics
import time
from typing import Any, Callable

import numpy as np

from .harness import PHASES, BenchError, Child, Mode, RealComfyUI, Row, columns, log, render, side, summary, verdict

SIDE, LENGTH, STEPS, SWITCH_STEP, SEED = 128, 5, 2, 1, 7
SEGMENTS = 3
JOB_TIMEOUT_S = 900  # the first warm-up job pays the cold text encode (1-2.5 min on 2 busy cores)
SAME = 1.5  # per pixel, 0-255: two encodes of the same frames (CPU noise and H.264), as the real tier


def base_input(image: str, prompt: str, negative: str, seed: int) -> dict[str, Any]:
    return {"image": image, "prompt": prompt, "negative_prompt": negative, "width": SIDE, "height": SIDE,
            "length": LENGTH, "seed": seed, "steps": STEPS, "switch_step": SWITCH_STEP, "output": "base64"}


def decode(b64: str) -> tuple[list[np.ndarray], float]:
    """An MP4 (base64) as RGB frames and its frame rate."""
    from tests.video import decode as decode_mp4

    video = decode_mp4(base64.b64decode(b64))
    return video.frames, float(video.fps)


def join(videos: list[str]) -> tuple[bytes, int, float]:
    """What a user does with B's MP4s: decode each, drop every later one's first frame (it is the
    previous one's last frame again), encode one MP4. Returns (mp4, frames, ms)."""
    import av

    t0 = time.perf_counter()
    frames: list[np.ndarray] = []
    fps = 16.0
    for n, b64 in enumerate(videos):
        part, fps = decode(b64)
        frames.extend(part if n == 0 else part[1:])
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue(), len(frames), (time.perf_counter() - t0) * 1000


def diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference per pixel (0-255) of two equally long frame lists."""
    if len(a) != len(b) or not a:
        return float("nan")
    return float(np.abs(np.stack(a).astype(np.int16) - np.stack(b).astype(np.int16)).mean())


class Story:
    """The two sides, through one worker process."""

    def __init__(self, worker: Child, comfy_pid: int, image: str, prompt: str, negative: str, n: int,
                 log: Callable[[str], None]) -> None:
        self.worker, self.comfy_pid, self.n, self.log = worker, comfy_pid, n, log
        self.image, self.prompt, self.negative = image, prompt, negative

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by ComfyUI and by the worker."""
        return cpu_s(self.comfy_pid), cpu_s(self.worker.pid)

    def timed(self, name: str, tag: str) -> dict[str, Any]:
        """One side's story, with the CPU seconds ComfyUI and the worker spent on it (the bench's
        own decoding in between is in neither)."""
        before = self.cpu()
        story = self.one_job(tag) if name == "A" else self.chained(tag)
        after = self.cpu()
        story["comfy_cpu_s"], story["worker_cpu_s"] = after[0] - before[0], after[1] - before[1]
        return story

    def call(self, job_id: str, job_input: dict[str, Any]) -> dict[str, Any]:
        answer = self.worker.call({"cmd": "run", "job": {"id": job_id, "input": job_input}}, timeout=JOB_TIMEOUT_S)
        result = answer["result"]
        if "error" in result:
            raise BenchError(f"job {job_id} failed: {result.get('error_code')}: {result['error']}")
        return {"wall_ms": answer["wall_ms"], "result": result}

    def one_job(self, tag: str) -> dict[str, Any]:
        """A: one job, N segments, one MP4."""
        job = base_input(self.image, self.prompt, self.negative, SEED) | {"segments": [{} for _ in range(self.n)]}
        got = self.call(f"seg-A-{tag}", job)
        result = got["result"]
        frames, _fps = decode(result["video"])
        return {"side": "A", "wall_ms": got["wall_ms"], "jobs": [self.job_record(got)],
                "length": result.get("length"), "segments": result.get("segments"), "frames": len(frames),
                "mp4_frames": [len(frames)], "bytes": result["bytes"], "blank": is_blank(frames),
                "_video": result["video"], "_frames": frames}

    def chained(self, tag: str) -> dict[str, Any]:
        """B: N jobs, each from the last frame of the one before, N MP4s."""
        image = self.image
        jobs, videos, counts, blank = [], [], [], False
        for k in range(self.n):
            job = base_input(image, self.prompt, self.negative, SEED + k)
            if k < self.n - 1:
                job["return_last_frame"] = True
            got = self.call(f"seg-B-{tag}-{k + 1}", job)
            result = got["result"]
            jobs.append(self.job_record(got))
            videos.append(result["video"])
            frames, _fps = decode(result["video"])
            counts.append(len(frames))
            blank = blank or is_blank(frames)
            if k < self.n - 1:
                if not result.get("last_frame"):
                    raise BenchError(f"job seg-B-{tag}-{k + 1} returned no last_frame")
                image = result["last_frame"]
        return {"side": "B", "wall_ms": sum(j["wall_ms"] for j in jobs), "jobs": jobs, "frames": sum(counts),
                "mp4_frames": counts, "bytes": sum(j["bytes"] for j in jobs), "blank": blank, "_videos": videos}

    @staticmethod
    def job_record(got: dict[str, Any]) -> dict[str, Any]:
        result = got["result"]
        return {"wall_ms": got["wall_ms"], "timings_ms": result.get("timings_ms") or {}, "bytes": result["bytes"],
                "prompt_id": result.get("prompt_id")}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads, waited-for children) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def is_blank(frames: list[np.ndarray]) -> bool:
    return float(np.stack(frames).astype(np.float32).std()) < 2.0


def side_record(story: dict[str, Any]) -> dict[str, Any]:
    """What is kept of one side's story: times summed over its jobs, per phase."""
    jobs = story["jobs"]
    phases = {p: sum(j["timings_ms"].get(p, 0.0) for j in jobs) for p in (*PHASES, "model_load")}
    execute = phases["execute"]
    out = {k: v for k, v in story.items() if not k.startswith("_")}
    out.update(execute_ms=execute, overhead_ms=story["wall_ms"] - execute, phases_ms=phases,
               unaccounted_ms=story["wall_ms"] - sum(phases[p] for p in PHASES))
    return out


def run(bench: Any, n_segments: int, quick: bool, rounds_override: int | None) -> None:
    """Start ComfyUI and one worker, warm both sides up, run the rounds; results in bench.results['segments']."""
    from tests.comfyui.conftest import NEGATIVE, PROMPT, start_image

    if n_segments < 2:
        raise BenchError("--segments needs at least 2 segments")
    rounds = rounds_override or (1 if quick else 3)
    png = start_image(SIDE, SIDE)
    image = base64.b64encode(png).decode("ascii")
    bench.results["input_image"] = {"format": "PNG", "width": SIDE, "height": SIDE, "bytes": len(png)}
    out: dict[str, Any] = {"n": n_segments, "rounds": rounds, "side": SIDE, "length": LENGTH, "steps": STEPS,
                           "switch_step": SWITCH_STEP, "seed": SEED, "A": [], "B": [], "order": [], "join": [],
                           "first_segment_diff": [], "warmup": {}, "loadavg": []}
    bench.results["segments"] = out
    comfy = RealComfyUI(bench.tmp)
    try:
        started = time.monotonic()
        comfy.start()
        bench.results["comfyui_start_s"] = round(time.monotonic() - started, 1)
        worker = side("segments-worker", "worker", {}, comfy.worker_env(JOB_TIMEOUT_S), bench.logs)
        out["worker_start"] = worker.recv(120)
        story = Story(worker, comfy.proc.pid, image, PROMPT, NEGATIVE, n_segments, log)
        for name in ("A", "B"):
            t0 = time.monotonic()
            warm = story.timed(name, "warmup")
            out["warmup"][name] = {"wall_ms": warm["wall_ms"], "frames": warm["frames"]}
            log(f"warm-up {name}: {warm['wall_ms'] / 1000:.1f} s ({time.monotonic() - t0:.0f} s with decoding)")
        for r in range(rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            out["order"].append("".join(order))
            done: dict[str, dict[str, Any]] = {}
            for name in order:
                done[name] = story.timed(name, f"r{r}")
                out[name].append(side_record(done[name]))
            mp4, joined_frames, join_ms = join(done["B"]["_videos"])
            out["join"].append({"ms": join_ms, "frames": joined_frames, "bytes": len(mp4)})
            out["first_segment_diff"].append(diff(done["A"]["_frames"][:LENGTH], decode(done["B"]["_videos"][0])[0]))
            out["loadavg"].append(os.getloadavg())
            a, b = out["A"][-1], out["B"][-1]
            log(f"round {r + 1}/{rounds} ({out['order'][-1]}): A {a['wall_ms'] / 1000:.1f} s, B "
                f"{b['wall_ms'] / 1000:.1f} s, B/A {b['wall_ms'] / a['wall_ms']:.2f}; CPU s A {cpu(a):.1f}, B "
                f"{cpu(b):.1f}, B/A {cpu(b) / cpu(a):.2f}; load average "
                f"{os.getloadavg()[0]:.2f}")
        worker.stop()
    finally:
        comfy.stop()


# -- the report -----------------------------------------------------------------------------------

def cpu(side: dict[str, Any]) -> float:
    """CPU seconds ComfyUI and the worker spent on one side's story."""
    return side["comfy_cpu_s"] + side["worker_cpu_s"]


def med(values: list[float]) -> float:
    return statistics.median(values)


def summarize(seg: dict[str, Any]) -> dict[str, Any]:
    a, b, n = seg["A"], seg["B"], seg["n"]
    ratios = [y["wall_ms"] / x["wall_ms"] for x, y in zip(a, b)]
    return {
        "wall_s": {k: summary([s["wall_ms"] / 1000 for s in seg[k]]) for k in ("A", "B")},
        "per_segment_s": {k: summary([s["wall_ms"] / 1000 / n for s in seg[k]]) for k in ("A", "B")},
        "execute_s": {k: summary([s["execute_ms"] / 1000 for s in seg[k]]) for k in ("A", "B")},
        "overhead_ms": {k: summary([s["overhead_ms"] for s in seg[k]]) for k in ("A", "B")},
        "ratio": summary(ratios),
        "cpu_s": {k: summary([cpu(s) for s in seg[k]]) for k in ("A", "B")},
        "worker_cpu_s": {k: summary([s["worker_cpu_s"] for s in seg[k]]) for k in ("A", "B")},
        "ratio_cpu": summary([cpu(y) / cpu(x) for x, y in zip(a, b)]),
        "ratio_execute": summary([y["execute_ms"] / x["execute_ms"] for x, y in zip(a, b)]),
        "phases_ms": {k: {p: med([s["phases_ms"][p] for s in seg[k]]) for p in (*PHASES, "model_load")}
                      | {"unaccounted": med([s["unaccounted_ms"] for s in seg[k]])} for k in ("A", "B")},
    }


def expected_frames(n: int) -> tuple[int, int]:
    """(A's frames, B's frames before the join): 5 + 4 (n - 1), and 5 n."""
    return LENGTH + (LENGTH - 1) * (n - 1), LENGTH * n


def table(results: dict[str, Any]) -> str:
    seg = results.get("segments")
    if not seg or not seg["A"] or not seg["B"]:
        return "(no segments results)"
    s, n = summarize(seg), seg["n"]
    a_frames, b_frames = expected_frames(n)
    la, lb = f"A: 1 job, {n} segments", f"B: {n} chained jobs"

    def both(measure: str, key: str, digits: int = 2) -> list[Row]:
        return [Row(measure, label, *(f"{s[key][side][k]:.{digits}f}" for k in ("median", "min", "max")))
                for label, side in ((la, "A"), (lb, "B"))]

    def ratio(measure: str, key: str) -> Row:
        return Row(f"ratio B / A, {measure}", "per round", *(f"{s[key][k]:.2f}" for k in ("median", "min", "max")),
                   "", "(info)")

    joined = seg["join"]
    rows = [
        *both("story wall time (handler calls), s", "wall_s"), *both("seconds per segment", "per_segment_s"),
        ratio("story wall time", "ratio"),
        *both("ComfyUI execute (timings_ms, summed), s", "execute_s"), ratio("execute", "ratio_execute"),
        *both("CPU time, ComfyUI + worker, s", "cpu_s"), ratio("CPU time", "ratio_cpu"),
        *both("  of which the worker's process, s", "worker_cpu_s"),
        *both("wall - execute (the worker's per-job part), ms", "overhead_ms", 1),
        Row("frames of video", la, f"{seg['A'][-1]['frames']} in 1 MP4", "", "", f"= {a_frames}",
            verdict(all(x["frames"] == a_frames and x.get("length") == a_frames for x in seg["A"]))),
        Row("frames of video", lb, f"{seg['B'][-1]['frames']} in {n} MP4s", "", "", f"= {b_frames}",
            verdict(all(x["frames"] == b_frames and x["mp4_frames"] == [LENGTH] * n for x in seg["B"]))),
        Row("  after the user joins them", lb, f"{joined[-1]['frames']}", "", "", f"= {a_frames}",
            verdict(all(j["frames"] == a_frames for j in joined))),
        Row("MP4 bytes delivered", la, f"{med([x['bytes'] for x in seg['A']]) / 1000:.1f} kB"),
        Row("MP4 bytes delivered", lb, f"{med([x['bytes'] for x in seg['B']]) / 1000:.1f} kB in {n}"),
        Row("joining B's MP4s (decode, drop, libx264), ms", "this process",
            f"{med([j['ms'] for j in joined]):.1f}", f"{min(j['ms'] for j in joined):.1f}",
            f"{max(j['ms'] for j in joined):.1f}", "", "(info)"),
        Row("segment 1 of A vs job 1 of B, mean abs diff, 0-255", "same seed and image",
            f"{max(seg['first_segment_diff']):.2f}", "", "", f"< {SAME:g}",
            verdict(max(seg["first_segment_diff"]) < SAME)),
    ]
    return render(rows)


def breakdown(results: dict[str, Any]) -> str:
    """Median ms per handler phase, summed over a side's jobs (timings_ms)."""
    seg = results.get("segments")
    if not seg or not seg["A"] or not seg["B"]:
        return ""
    s = summarize(seg)
    cols = (*PHASES, "unaccounted", "model_load")
    rows = [["side", *cols, "wall"]]
    for k, label in (("A", "A (1 job)"), ("B", f"B ({seg['n']} jobs)")):
        rows.append([label, *(f"{s['phases_ms'][k][p]:.1f}" for p in cols), f"{s['wall_s'][k]['median'] * 1000:.1f}"])
    return columns(rows)


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    seg = results.get("segments")
    if not seg or not seg["A"] or not seg["B"] or len(seg["A"]) != seg["rounds"] or len(seg["B"]) != seg["rounds"]:
        return [("every round ran", False)]
    a_frames, b_frames = expected_frames(seg["n"])
    return [
        (f"A: {a_frames} frames in one MP4", all(x["frames"] == a_frames and x.get("length") == a_frames
                                                 for x in seg["A"])),
        (f"B: {seg['n']} MP4s of {LENGTH} frames", all(x["mp4_frames"] == [LENGTH] * seg["n"] for x in seg["B"])),
        (f"B joined: {a_frames} frames", all(j["frames"] == a_frames for j in seg["join"])),
        ("no blank video", not any(x["blank"] for x in (*seg["A"], *seg["B"]))),
        ("segment 1 of A = job 1 of B (within noise)", max(seg["first_segment_diff"]) < SAME),
    ]


def detail(args: Any, results: dict[str, Any]) -> str:
    seg = results.get("segments", {})
    return (f"{seg.get('n', args.segments)} segments of {LENGTH} frames at {SIDE}x{SIDE}, {STEPS} steps, "
            f"{len(seg.get('A', []))} rounds (orders {', '.join(seg.get('order', []))}) after one warm-up of each "
            f"side; ComfyUI up in {results.get('comfyui_start_s', 0):.0f} s; ")


MODE = Mode(
    title="segments bench on the real ComfyUI", strict=True, word="checks", detail=detail,
    run=lambda b, a: run(b, a.segments, a.quick, a.jobs), verdicts=verdicts,
    sections=lambda r: [table(r), "Median ms per handler phase, summed over a side's jobs (timings_ms; model_load "
                                  "is within execute):\n" + breakdown(r)],
    note=RealComfyUI.note,
)
