"""`wan-video IMAGE "PROMPT" -o out.mp4`: the command line, from options to a job and back to files.

Options map one to one onto the job's JSON fields and are sent only when given: the worker owns
the defaults and the validation, so a new worker field needs no new client (`--set KEY=VALUE`
sends any field). Exit codes are part of the interface (see EXIT_CODES and docs/client.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .api import Api, ApiError, HostedApi, LocalApi, RetryPolicy
from .display import JobDisplay
from .fields import (EXIT_API, EXIT_CODES, EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK, EXIT_SAVE, EXIT_USAGE,
                     EXIT_WAIT, UsageError, common_fields, image_value, parse_segment, parse_set)
from .results import PREPROCESSED, SaveError, describe_failure, describe_success, save_result, summary
from .runner import Interrupted, WaitExpired, WaitOptions, run_job

log = logging.getLogger("wan_worker.client")

API_KEY_ENV = "RUNPOD_API_KEY"
RUN_BODY_LIMIT = 10_000_000  # RunPod's documented cap on a /run request body
__all__ = ["EXIT_CODES", "build_parser", "main", "parse_segment"]  # the interface tests and docs read


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wan-video",
        usage="wan-video [IMAGE] PROMPT [-o OUT.mp4] (--endpoint ID | --url URL) [options]\n"
              "       wan-video [IMAGE] --segment PROMPT[:LENGTH] ... [-o OUT.mp4] (--endpoint ID | --url URL) "
              "[options]\n"
              "       wan-video --jobs FILE.jsonl (--endpoint ID | --url URL) [options]",
        description="Send an image and a prompt to a wan-worker endpoint, follow the job with a "
                    "progress bar, and save the MP4.",
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    p.add_argument("image", nargs="?", metavar="IMAGE",
                   help="a local PNG/JPEG/WebP file (sent as base64) or an https:// URL; "
                        "'-' (or omitted with --prompt or --segment) for text-to-video where the worker offers it")
    p.add_argument("prompt_arg", nargs="?", metavar="PROMPT",
                   help="what should happen in the video (with --segment/--segments: for the segments "
                        "that give none; may be left out)")
    p.add_argument("--prompt", help="the prompt, as an option (lets IMAGE be left out)")
    p.add_argument("-o", "--output", type=Path, metavar="PATH",
                   help="where to save the MP4 (default: the worker's file name, in this folder)")
    p.add_argument("--last-frame", type=Path, metavar="PATH",
                   help="ask for the video's last frame (return_last_frame) and save it as PNG here")
    p.add_argument("--json", action="store_true",
                   help="print the whole result as JSON on stdout (base64 replaced by saved paths)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    where = p.add_argument_group("where to send it (one of)")
    where.add_argument("--endpoint", metavar="ID",
                       help="a RunPod endpoint id (env WAN_VIDEO_ENDPOINT); needs RUNPOD_API_KEY; "
                            "RUNPOD_ENDPOINT_BASE_URL moves the API (default https://api.runpod.ai/v2)")
    where.add_argument("--url", metavar="URL",
                       help="a worker serving RunPod's local API (--rp_serve_api), e.g. "
                            "http://localhost:8000 (env WAN_VIDEO_URL)")

    job = p.add_argument_group("job fields (sent only when given; the worker checks them)")
    job.add_argument("--end-image", metavar="IMAGE", help="end_image: the last frame to aim for (file or URL)")
    job.add_argument("--audio", metavar="FILE",
                     help="audio: sound-to-video, IMAGE moves to this sound (WAV, MP3, FLAC, OGG, M4A; file or URL)")
    job.add_argument("--audio-start", type=float, metavar="SECONDS", help="audio_start_s: where in --audio to start")
    job.add_argument("--duration", type=float, metavar="SECONDS", help="duration_s: how much of --audio to cover")
    job.add_argument("--video", metavar="FILE",
                     help="video: Animate, IMAGE (the character) moves as the person in this video (MP4, WebM, "
                          "MOV; file or URL); the worker makes the pose and face videos from it, or send "
                          "--pose-video and --face-video (and for replace --background-video, --mask-video)")
    job.add_argument("--mode", help="move (default) or replace: the character takes the person's place in --video")
    job.add_argument("--pose-video", metavar="FILE", help="pose_video: the pose skeletons of --video, per frame")
    job.add_argument("--face-video", metavar="FILE", help="face_video: the face of --video, cropped per frame")
    job.add_argument("--background-video", metavar="FILE", help="background_video: --video without the person")
    job.add_argument("--mask-video", metavar="FILE", help="mask_video: the person's mask in --video, per frame")
    job.add_argument("--person", type=int, metavar="N",
                     help="person: which person of --video the worker follows, by size (0 = the largest)")
    job.add_argument("--return-preprocessed", action="store_true",
                     help="return_preprocessed: also save the pose and face videos the worker made from "
                          "--video, beside the MP4 (OUT_pose.mp4, OUT_face.mp4)")
    job.add_argument("--relight", action=argparse.BooleanOptionalAction, default=None,
                     help="relight: light the character like the scene (replace mode; on by default)")
    job.add_argument("--lora", action="append", default=[], metavar="NAME[:STRENGTH]",
                     help="loras[]: a LoRA file for both experts, or HIGH,LOW[:STRENGTH] for one per "
                          "expert; repeatable (the worker takes up to 4)")
    job.add_argument("--segment", action="append", default=[], dest="segment_texts", metavar="PROMPT[:LENGTH]",
                     help="segments[]: one part of a story told prompt by prompt in one video, in order; "
                          "repeatable; a trailing :LENGTH (frames, 4n+1) is the segment's length")
    job.add_argument("--segments", type=Path, dest="segments_file", metavar="FILE.json",
                     help="segments: a JSON file holding the list of segments (or an object with a "
                          "\"segments\" list), each {prompt, length, negative_prompt, seed, loras}")
    job.add_argument("--interpolate", type=int, metavar="N",
                     help="num_interpolated_frames: RIFE makes N frames (1-4) between each pair, fps x (N+1)")
    job.add_argument("--upscaler", metavar="NAME", help="upscaler: default (Real-ESRGAN x2plus) or a file of the "
                                                        "volume's upscale_models")
    job.add_argument("--upscale-factor", type=float, metavar="X",
                     help="upscale_factor: the output size, x the rendered")
    job.add_argument("--seed", type=int)
    job.add_argument("--length", type=int, help="frames, 4n+1 (49, 81, 121 ...)")
    job.add_argument("--fps", type=float)
    job.add_argument("--resolution", help="480p or 720p")
    job.add_argument("--model", help="14b or 5b")
    job.add_argument("--quality", action="store_true", help="fast: false (no 4-step LoRAs, 20 steps)")
    job.add_argument("--width", type=int)
    job.add_argument("--height", type=int)
    job.add_argument("--steps", type=int)
    job.add_argument("--cfg", type=float)
    job.add_argument("--shift", type=float)
    job.add_argument("--switch-step", type=int)
    job.add_argument("--sampler")
    job.add_argument("--scheduler")
    job.add_argument("--lora-strength", type=float, help="strength of the 4-step LoRAs (fast mode)")
    job.add_argument("--negative-prompt")
    job.add_argument("--output-mode", help="output: base64, s3 or auto (how the worker delivers)")
    job.add_argument("--timeout", type=float, metavar="SECONDS", help="timeout_s: the worker's limit for this job")
    job.add_argument("--dry-run", action="store_true", help="dry_run: check and build, run nothing")
    job.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any other job field; VALUE is read as JSON when it parses, else as text")

    batch = p.add_argument_group("batch")
    batch.add_argument("--jobs", type=Path, metavar="FILE.jsonl",
                       help="one job per line (see docs/client.md); job options above are defaults for every line")
    batch.add_argument("--concurrency", type=int, default=2, metavar="N", help="jobs in flight at once (2)")
    batch.add_argument("--out-dir", type=Path, default=Path("."), metavar="DIR",
                       help="where batch outputs go (default: this folder)")

    patience = p.add_argument_group("waiting and retries")
    patience.add_argument("--wait", type=float, metavar="SECONDS",
                          help="give up (and cancel) after this long; default: as long as the job runs")
    patience.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                          help="seconds between status requests (2)")
    patience.add_argument("--retries", type=int, default=5, metavar="N",
                          help="retries after network trouble, 429 or 5xx (5)")
    patience.add_argument("--retry-wait", type=float, default=1.0, metavar="SECONDS",
                          help="first wait before a retry; it doubles each time, up to 30 s (1)")
    return p


def single_input(args: argparse.Namespace) -> dict[str, Any]:
    """IMAGE PROMPT, or --prompt alone (text-to-video); one positional alone is ambiguous. With
    segments (--segment, --segments, --set segments=...) the prompt may be left out: each segment
    then brings its own."""
    if args.prompt is not None and args.prompt_arg is not None:
        raise UsageError("give the prompt once: as PROMPT or as --prompt")
    prompt = args.prompt if args.prompt is not None else args.prompt_arg
    with_segments = bool(args.segment_texts) or args.segments_file is not None or "segments" in parse_set(args.set)
    if prompt is None and not with_segments:
        raise UsageError("missing PROMPT: wan-video IMAGE \"PROMPT\", or wan-video --prompt \"PROMPT\" "
                         "for text-to-video (or --segment \"PROMPT\" ... for a story)")
    fields: dict[str, Any] = {}
    if args.image not in (None, "-"):
        fields["image"] = image_value(args.image)
    if prompt is not None:
        fields["prompt"] = prompt
    return {**fields, **common_fields(args)}


def make_api(args: argparse.Namespace) -> Api:
    """The endpoint from --endpoint/--url; from WAN_VIDEO_ENDPOINT/WAN_VIDEO_URL when neither is given."""
    policy = RetryPolicy(attempts=max(args.retries, 0) + 1, first_wait_s=args.retry_wait)
    endpoint, url = args.endpoint, args.url
    if not endpoint and not url:
        endpoint, url = os.environ.get("WAN_VIDEO_ENDPOINT"), os.environ.get("WAN_VIDEO_URL")
    if bool(endpoint) == bool(url):
        raise UsageError("say where to send the job: --endpoint ID (RunPod) or --url URL (local worker)")
    if url:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--url {url!r}: give a full URL, e.g. http://localhost:8000")
        return LocalApi(url, policy, args.wait)
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise UsageError(f"--endpoint needs an API key in {API_KEY_ENV}")
    return HostedApi(endpoint, key, policy)


def _warn_if_large(api: Api, job_input: dict[str, Any]) -> None:
    size = len(json.dumps(job_input))
    if isinstance(api, HostedApi) and size > RUN_BODY_LIMIT:
        log.warning("the request is %.1f MB; RunPod takes at most 10 MB per /run: send the image as "
                    "an https:// URL if it is refused", size / 1e6)


# -- one job ---------------------------------------------------------------------------------

def video_path(args: argparse.Namespace, output: Any, job_id: str) -> Path:
    """-o PATH; or the worker's file name, in -o's folder (when -o is one) or the working folder."""
    if args.output and not args.output.is_dir():
        return args.output
    name = output.get("filename") if isinstance(output, dict) else None
    return (args.output or Path(".")) / (Path(str(name)).name if name else f"{job_id}.mp4")


def run_single(args: argparse.Namespace, api: Api) -> int:
    job_input = single_input(args)
    _warn_if_large(api, job_input)
    options = WaitOptions(poll_s=args.poll, max_wait_s=args.wait)
    with JobDisplay(quiet=args.quiet) as display:
        outcome = run_job(api, job_input, display, options)
    if not outcome.ok:
        for line in describe_failure(outcome):
            print(line, file=sys.stderr)
        if args.json:
            print(json.dumps(summary(outcome, None), indent=2))
        return EXIT_JOB_FAILED
    output = outcome.output if isinstance(outcome.output, dict) else {}
    saved = save_result(output, video_path(args, output, outcome.job_id), args.last_frame,
                        api.policy, quiet=args.quiet)
    if args.json:
        print(json.dumps(summary(outcome, saved), indent=2))
    else:
        print("\n".join(describe_success(outcome, saved)))
    if args.last_frame and "last_frame" not in saved.paths:
        print("the worker returned no last frame (does it support return_last_frame?)", file=sys.stderr)
        return EXIT_SAVE
    if args.return_preprocessed and not output.get("dry_run") and not PREPROCESSED.keys() & saved.paths.keys():
        print("the worker returned no pose or face video (it returns the ones it made from --video)",
              file=sys.stderr)
    if "video" not in saved.paths and not saved.images and not output.get("dry_run"):
        print("the result holds no video to save", file=sys.stderr)
        return EXIT_SAVE
    return EXIT_OK


# -- entry point -----------------------------------------------------------------------------

class _StderrHandler(logging.Handler):
    """Log lines that do not tear a progress bar apart (tqdm.write when a bar may be showing)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if "tqdm" in sys.modules:
            sys.modules["tqdm"].tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)


def setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("wan-video: %(message)s"))
    for old in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
        log.removeHandler(old)  # main() may run more than once in a process
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


# How each way a command can end short of success is told, and its exit code
_ENDINGS: dict[type[Exception], tuple[str, int]] = {
    ApiError: ("wan-video: {}", EXIT_API),
    SaveError: ("wan-video: the job succeeded but {}", EXIT_SAVE),
    WaitExpired: ("wan-video: {}", EXIT_WAIT),
    Interrupted: ("\nwan-video: interrupted; {}", EXIT_INTERRUPTED),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on unknown options, as argparse does
    setup_logging(args.verbose)
    try:
        if args.jobs is not None:
            from .batch import run_batch_command

            return run_batch_command(args, lambda: make_api(args))
        return run_single(args, make_api(args))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"wan-video: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except tuple(_ENDINGS) as exc:
        form, code = next(ending for kind, ending in _ENDINGS.items() if isinstance(exc, kind))
        print(form.format(exc), file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("\nwan-video: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
