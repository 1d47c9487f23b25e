"""`python -m bench [MODE] [--quick] [--json PATH]`: the worker's costs against its budgets, one
benchmark per mode (see --help); figures and method in docs/performance.md, runs in bench/results/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .harness import run_mode

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
        from .postprocess import MODE
    elif args.preprocess:
        from .preprocess import MODE
    elif args.comfyui:
        from .real import MODE
    elif args.cold:
        from .cold import MODE
    elif args.soak:
        from .soak import MODE
    elif args.profile:
        from .profile import MODE
    elif args.segments is not None:
        from .segments import MODE
    else:
        from .overhead import MODE
    return run_mode(MODE, args)


if __name__ == "__main__":
    sys.exit(main())
