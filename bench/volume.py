"""A model volume of six sparse stand-in files (the i2v-14b set), and the volume check a job of that
set runs, timed cold and warm.

Each file has the real name, folder and size (14.3 GB per expert, 38 GB in all) but is sparse: a
valid safetensors header whose one tensor's data_offsets cover the whole file, then a hole made by
truncate(). It costs no disk space and passes the worker's check exactly as a real file does.
The layout is the deployed one: <volume>/runpod-slim/ComfyUI/models/<folder>/<file>, found
through a copy of the repository's extra_model_paths.yaml whose /runpod-volume and /workspace
point into the bench's temporary folder.

    python -m bench.volume --runs N   (in a child whose environment points the worker at the volume)

prints one JSON line: the first check_volume() in this fresh process (cold: YAML not parsed yet,
no header cached; the OS page cache is warm, as on a worker that has checked before) and N more
(warm).
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

from . import REPO


def write_sparse_safetensors(path: Path, size: int) -> None:
    """A `size`-byte safetensors file: real header, tensor data as a hole (no disk used)."""
    data = size - 8
    for _ in range(5):  # the header's length depends on the number of digits in it
        header = json.dumps({"__metadata__": {"format": "pt", "note": "wan-worker bench stand-in"},
                             "weight": {"dtype": "U8", "shape": [data], "data_offsets": [0, data]}}).encode()
        new = size - 8 - len(header)
        if new == data:
            break
        data = new
    else:
        raise RuntimeError(f"no stable safetensors header for {size} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(size)


def make_volume(root: Path) -> Path:
    """The set's six files under root/runpod-volume/..., and the extra_model_paths.yaml that finds them."""
    from wan_worker.models import safetensors_problem

    models = root / "runpod-volume" / "runpod-slim" / "ComfyUI" / "models"
    for model in bench_set().files:
        path = models / model.folder / model.name
        write_sparse_safetensors(path, model.approx_bytes)
        problem = safetensors_problem(str(path), path.stat().st_size)
        if problem:
            raise RuntimeError(f"stand-in {path} is not a valid safetensors file: {problem}")
    text = (REPO / "extra_model_paths.yaml").read_text()
    text = text.replace("/runpod-volume", str(root / "runpod-volume")).replace("/workspace", str(root / "workspace"))
    yaml_path = root / "extra_model_paths.yaml"
    yaml_path.write_text(text)
    return yaml_path


def bench_set() -> Any:
    """The set whose check every I2V job runs (a job checks its own set only)."""
    from wan_worker.models import DEFAULT_SET, MODEL_SETS

    return MODEL_SETS[DEFAULT_SET]


def main(argv: list[str] | None = None) -> int:
    from . import procs

    procs.die_with_parent()
    runs = int((argv if argv is not None else sys.argv[1:] or ["200"])[-1])
    from wan_worker.models import check_volume
    from wan_worker.settings import load_settings

    settings = load_settings()
    names, model_set = bench_set().names, bench_set().name
    t0 = time.perf_counter()
    report = check_volume(settings, names, model_set)
    cold = (time.perf_counter() - t0) * 1000
    if not report.ok:
        print(json.dumps({"fatal": f"volume check failed: {report.to_dict()}"}), flush=True)
        return 1
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        report = check_volume(settings, names, model_set)
        warm.append((time.perf_counter() - t0) * 1000)
        assert report.ok
    # A file that changed (new mtime) has its header read again: the cost of one re-read.
    path = Path(report.files[0].path or "")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    t0 = time.perf_counter()
    assert check_volume(settings, names, model_set).ok
    changed = (time.perf_counter() - t0) * 1000
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    print(json.dumps({"cold_ms": cold, "warm_ms": warm, "changed_ms": changed,
                      "files": [f.path for f in report.files]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
