"""Launch the stand-in ComfyUI the way ComfyUI's own main.py is launched, in the foreground.

    python main.py --listen 127.0.0.1 --port 8188 --extra-model-paths-config X.yaml \
        --disable-auto-launch --disable-metadata --disable-api-nodes [other ComfyUI flags are ignored]

Like ComfyUI, it keeps `input/`, `output/`, `temp/` and `models/` next to this file unless
`--base-directory`, `--input-directory`, `--output-directory` or `--temp-directory` say otherwise,
reads `extra_model_paths.yaml` next to this file and every `--extra-model-paths-config` (a missing
file is fatal, as in ComfyUI), lists the model files really present, prints ComfyUI's start line
and exits with 0 on SIGTERM or SIGINT. It always binds 127.0.0.1, whatever `--listen` says.

This file may be copied alone into another folder (a fake /ComfyUI): it finds the stand-in through
the env var FAKECOMFY_REPO (the repository root), else through its own place in the repository.
FAKECOMFY_BOOT_DELAY=seconds makes it refuse connections that long first, like a loading ComfyUI.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def _import_fake():
    repo = os.environ.get("FAKECOMFY_REPO") or str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from tests.fakecomfy.server import FakeComfy

    return FakeComfy


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py", add_help=True)
    parser.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-directory")
    parser.add_argument("--input-directory")
    parser.add_argument("--output-directory")
    parser.add_argument("--temp-directory")
    parser.add_argument("--extra-model-paths-config", nargs="+", action="append")
    args, _unknown = parser.parse_known_args(argv)  # every other ComfyUI flag is accepted and ignored
    return args


def main(argv: list[str] | None = None, default_base: Path | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    base = Path(args.base_directory or default_base or Path(__file__).resolve().parent).resolve()
    configs = [Path(p) for group in args.extra_model_paths_config or [] for p in group]
    own = base / "extra_model_paths.yaml"
    if own.is_file():
        configs.insert(0, own)
    for config in configs:
        if not config.is_file():  # ComfyUI dies on this too
            print(f"FileNotFoundError: [Errno 2] No such file or directory: '{config}'", file=sys.stderr)
            return 1

    FakeComfy = _import_fake()
    fake = FakeComfy(base, input_dir=args.input_directory, output_dir=args.output_directory,
                     temp_dir=args.temp_directory, extra_model_paths_config=configs, scan_models=True,
                     port=args.port, argv=["main.py", *argv])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.listen not in ("127.0.0.1", "localhost"):
        print(f"fakecomfy: binding 127.0.0.1 instead of {args.listen}", flush=True)
    print(f"ComfyUI version: 0.3.64 (fakecomfy)\nStarting server\n", flush=True)
    fake.start(boot_delay=float(os.environ.get("FAKECOMFY_BOOT_DELAY", "0") or 0))
    if float(os.environ.get("FAKECOMFY_BOOT_DELAY", "0") or 0) > 0:
        fake._ready.wait()  # print the start line only once it listens, as ComfyUI
    print(f"To see the GUI go to: http://127.0.0.1:{fake.port}", flush=True)
    while not stop.wait(0.2):
        if not fake.alive:
            return 1
    fake.stop()
    print("\nStopped server", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
