"""Statistics, budgets and the results table (Markdown, so it reads in a terminal and pastes into
docs/performance.md)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

MB = 1_000_000

# The budgets of ../shared/DESIGN.md ("Budgets").
OVERHEAD_MS = 50.0  # plus the output's transfer, for a 10 MB MP4
RATIO = 1.10  # worker overhead / floor overhead
MEM_BASE64 = 2.5  # peak worker memory, multiples of the output size
S3_FLAT_SLOPE = 0.10  # "flat": peak grows by at most 10 % of the output's growth (1 -> 50 MB)
VOLUME_WARM_MS = 20.0
READY_MS = 100.0
PHASES = ("validate", "image", "upload", "queue", "execute", "deliver")  # the handler's timings_ms
BUDGET_SIZE_MB = 10  # the size the overhead and ratio budgets are stated for


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


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _stat_row(measure: str, config: str, s: dict[str, float], budget: str = "", result: str = "") -> Row:
    return Row(measure, config, _ms(s["median"]), _ms(s["min"]), _ms(s["max"]), budget, result)


def verdict(ok: bool, budget_row: bool = True) -> str:
    if budget_row:
        return "pass" if ok else "MISS"
    return "(pass)" if ok else "(miss)"


def job_rows(config: dict[str, Any]) -> list[Row]:
    """The rows of one (size, delivery) configuration."""
    size_mb, mode = config["size_mb"], config["mode"]
    label = f"{size_mb:g} MB {mode}"
    budget_row = size_mb == BUDGET_SIZE_MB
    w, f = config["worker"], config["floor"]
    transfer = f["transfer_ms"]["median"]
    limit = OVERHEAD_MS + transfer
    ratio = config["ratio"]
    rows = [
        _stat_row("handler wall time, ms", label, w["wall_ms"]),
        _stat_row("ComfyUI execute (timings_ms), ms", label, w["execute_ms"]),
        _stat_row("worker overhead = wall - execute, ms", label, w["overhead_ms"],
                  f"<= 50 + {transfer:.0f} transfer", verdict(w["overhead_ms"]["median"] <= limit, budget_row)),
        _stat_row("floor overhead (bare client), ms", label, f["overhead_ms"]),
        Row("ratio worker / floor overhead", label, f"{ratio:.2f}", "", "", f"<= {RATIO:.2f}",
            verdict(ratio <= RATIO, budget_row)),
    ]
    mem = config["worker_memory"]
    grown = mem["peak_minus_baseline"]
    times = grown / config["size"]
    if mode == "base64":
        rows.append(Row("worker peak memory - baseline", label, f"{grown / MB:.1f} MB = {times:.2f}x", "", "",
                        f"<= {MEM_BASE64:g}x output", verdict(times <= MEM_BASE64)))
        sdk = mem.get("peak_with_sdk_send_minus_baseline")
        if sdk is not None:
            rows.append(Row("  worker + RunPod SDK's result send", label,
                            f"{sdk / MB:.1f} MB = {sdk / config['size']:.2f}x", "", "", "", "(info)"))
        floor_grown = config["floor_memory"]["peak_minus_baseline"]
        rows.append(Row("  floor (bare client), for comparison", label,
                        f"{floor_grown / MB:.1f} MB = {floor_grown / config['size']:.2f}x", "", "", "", "(info)"))
    else:
        rows.append(Row("worker peak memory - baseline", label, f"{grown / MB:.1f} MB = {times:.2f}x", "", "",
                        "flat (see growth row)", ""))
    return rows


def s3_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every S3 configuration's memory, smallest output first (the memory-only run included)."""
    points = [c for c in [*results.get("jobs", []), *results.get("memory_only", [])] if c["mode"] == "s3"]
    return sorted(points, key=lambda c: c["size"])


def s3_growth_row(results: dict[str, Any]) -> Row | None:
    """"Flat": between the two largest S3 outputs, peak memory grows by at most 10 % of the growth.

    (From one PUT to multipart, boto3's upload threads add a fixed few MB; what must not happen is
    memory that keeps growing with the file.)"""
    points = s3_points(results)
    if len(points) < 2:
        return None
    small, big = points[-2], points[-1]
    growth = big["worker_memory"]["peak_minus_baseline"] - small["worker_memory"]["peak_minus_baseline"]
    slope = growth / (big["size"] - small["size"])
    curve = " / ".join(f"{p['worker_memory']['peak_minus_baseline'] / MB:.1f}" for p in points)
    sizes = "/".join(f"{p['size_mb']:g}" for p in points)
    return Row(f"S3 peak - baseline at {sizes} MB", "s3", f"{curve} MB", "", "",
               f"{small['size_mb']:g}->{big['size_mb']:g} MB: {slope:+.2f}x <= {S3_FLAT_SLOPE:.2f}x",
               verdict(slope <= S3_FLAT_SLOPE))


def table(results: dict[str, Any]) -> str:
    rows: list[Row] = []
    for config in results.get("jobs", []):
        rows.extend(job_rows(config))
    growth = s3_growth_row(results)
    if growth:
        rows.append(growth)
    vol = results.get("volume")
    if vol:
        rows.append(_stat_row("volume check, cold (fresh process), ms", "6 files, 38 GB", vol["cold_ms"]))
        rows.append(_stat_row("volume check, warm, ms", "6 files, 38 GB", vol["warm_ms"],
                              f"<= {VOLUME_WARM_MS:g} ms", verdict(vol["warm_ms"]["median"] <= VOLUME_WARM_MS
                                                                   and vol["warm_ms"]["max"] <= VOLUME_WARM_MS)))
        rows.append(_stat_row("volume check, one file changed, ms", "6 files, 38 GB", vol["changed_ms"]))
    ready = results.get("ready")
    if ready:
        rows.append(_stat_row("ready after ComfyUI answers, ms", "wait_until_ready", ready["gap_ms"],
                              f"<= {READY_MS:g} ms", verdict(ready["gap_ms"]["max"] <= READY_MS)))
    return render(rows)


def render(rows: list[Row]) -> str:
    """Rows as one Markdown table, numbers right-aligned (shared by the stand-in and real benches)."""
    head = Row("measure", "config", "median", "min", "max", "budget", "result")
    cells = [[r.measure, r.config, r.median, r.low, r.high, r.budget, r.result] for r in [head, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(7)]
    right = {2, 3, 4}

    def line(c: list[str]) -> str:
        return "| " + " | ".join(c[i].rjust(widths[i]) if i in right else c[i].ljust(widths[i])
                                 for i in range(7)) + " |"

    sep = "|" + "|".join(("-" * (widths[i] + 1) + ":") if i in right else "-" * (widths[i] + 2)
                         for i in range(7)) + "|"
    out = [line(cells[0]), sep, *(line(c) for c in cells[1:])]
    return "\n".join(out)


def _config_label(c: dict[str, Any]) -> str:
    return f"{c['size_mb']:g} MB {c['mode']}"


def breakdown(results: dict[str, Any], label: Callable[[dict[str, Any]], str] = _config_label) -> str:
    """Median ms of each handler phase (timings_ms) and the floor's transfer, per configuration."""
    phases = ("validate", "image", "upload", "queue", "execute", "deliver", "unaccounted")
    head = ["config", *phases, "wall", "| floor: transfer", "floor wall"]
    rows = [head]
    for c in results.get("jobs", []):
        w = c["worker"]
        rows.append([label(c), *(_ms(w["phases_ms"].get(p, 0.0)) for p in phases),
                     _ms(w["wall_ms"]["median"]), "| " + _ms(c["floor"]["transfer_ms"]["median"]),
                     _ms(c["floor"]["wall_ms"]["median"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(r[i].rjust(widths[i]) if i else r[i].ljust(widths[i]) for i in range(len(head)))
                     for r in rows)


def verdicts(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """(budget, met) for the budgets of DESIGN.md, as stated (overhead and ratio at 10 MB)."""
    out: list[tuple[str, bool]] = []
    for c in results.get("jobs", []):
        label = f"{c['size_mb']:g} MB {c['mode']}"
        if c["size_mb"] == BUDGET_SIZE_MB:
            limit = OVERHEAD_MS + c["floor"]["transfer_ms"]["median"]
            out.append((f"overhead {label}", c["worker"]["overhead_ms"]["median"] <= limit))
            out.append((f"ratio {label}", c["ratio"] <= RATIO))
        if c["mode"] == "base64":
            out.append((f"memory {label}", c["worker_memory"]["peak_minus_baseline"] / c["size"] <= MEM_BASE64))
    growth = s3_growth_row(results)
    if growth:
        out.append(("memory s3 flat", growth.result == "pass"))
    if results.get("volume"):
        w = results["volume"]["warm_ms"]
        out.append(("volume check warm", w["median"] <= VOLUME_WARM_MS and w["max"] <= VOLUME_WARM_MS))
    if results.get("ready"):
        out.append(("ready", results["ready"]["gap_ms"]["max"] <= READY_MS))
    return out


def summarize(size_mb: float, size: int, mode: str, samples: dict[str, list[dict[str, Any]]],
              baseline: dict[str, int], memory: dict[str, int], floor_baseline: dict[str, int],
              floor_memory: dict[str, int]) -> dict[str, Any]:
    w, f = samples["worker"], samples["floor"]
    w_exec = [s["timings_ms"].get("execute", 0.0) for s in w]
    w_over = [s["wall_ms"] - e for s, e in zip(w, w_exec)]
    f_over = [s["wall_ms"] - s["execute_ms"] for s in f]
    phases = {p: summary([s["timings_ms"].get(p, 0.0) for s in w])["median"] for p in PHASES}
    phases["unaccounted"] = summary([s["wall_ms"] - sum(s["timings_ms"].get(p, 0.0) for p in PHASES)
                                     for s in w])["median"]
    worker = {"wall_ms": summary([s["wall_ms"] for s in w]), "execute_ms": summary(w_exec),
              "overhead_ms": summary(w_over), "phases_ms": phases,
              "samples": [{"wall_ms": s["wall_ms"], "timings_ms": s["timings_ms"]} for s in w]}
    floor = {"wall_ms": summary([s["wall_ms"] for s in f]), "execute_ms": summary([s["execute_ms"] for s in f]),
             "overhead_ms": summary(f_over), "transfer_ms": summary([s["transfer_ms"] for s in f]),
             "samples": f}
    return {
        "size_mb": size_mb, "size": size, "mode": mode, "jobs": len(w),
        "worker": worker, "floor": floor,
        "ratio": worker["overhead_ms"]["median"] / floor["overhead_ms"]["median"],
        "worker_memory": {"baseline_rss": baseline["rss"], "peak": memory["hwm"],
                          "peak_minus_baseline": memory["hwm"] - baseline["rss"], "rss_after": memory["rss"],
                          "ru_maxrss": memory["ru_maxrss"]},
        "floor_memory": {"baseline_rss": floor_baseline["rss"], "peak": floor_memory["hwm"],
                         "peak_minus_baseline": floor_memory["hwm"] - floor_baseline["rss"]},
    }
