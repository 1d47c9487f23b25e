"""The job fields every `wan-video` job gets from its options, and the exit codes: one room shared
by the single job (cli) and the batch (batch), so neither imports the other."""
from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path
from typing import Any, Sequence

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
EXIT_SAVE = 4
EXIT_WAIT = 5
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "the video (and last frame) is saved; in a batch: every job succeeded",
    EXIT_JOB_FAILED: "the job failed (the worker's error_code and sentence are printed); "
                     "in a batch: at least one job did not succeed",
    EXIT_USAGE: "bad options or input files (nothing was sent)",
    EXIT_API: "the endpoint could not be reached or refused the request, after retries",
    EXIT_SAVE: "the job succeeded but its result could not be downloaded or written",
    EXIT_WAIT: "--wait ran out; the job was cancelled",
    EXIT_INTERRUPTED: "Ctrl-C; the job was cancelled on the endpoint",
}

# option dest -> the job field it fills (sent only when the option is given)
FIELDS = {
    "negative_prompt": "negative_prompt", "seed": "seed", "width": "width", "height": "height",
    "length": "length", "fps": "fps", "steps": "steps", "cfg": "cfg", "shift": "shift",
    "switch_step": "switch_step", "sampler": "sampler", "scheduler": "scheduler",
    "lora_strength": "lora_strength", "resolution": "resolution", "model": "model",
    "output_mode": "output", "timeout": "timeout_s", "audio_start": "audio_start_s", "duration": "duration_s",
    "mode": "mode", "relight": "relight", "person": "person",
    "interpolate": "num_interpolated_frames", "upscaler": "upscaler", "upscale_factor": "upscale_factor",
}
# option dest -> the job field it fills with a file (sent as base64) or a URL
FILE_OPTIONS = {"video": "video", "pose_video": "pose_video", "face_video": "face_video",
                "background_video": "background_video", "mask_video": "mask_video"}


class UsageError(Exception):
    """Bad options or input files; nothing was sent."""


# -- from options to a job -------------------------------------------------------------------

def parse_lora(text: str) -> dict[str, Any]:
    """`NAME[:STRENGTH]` -> {"name", "strength"}; `HIGH,LOW[:STRENGTH]` -> one per expert."""
    names, strength = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            names, strength = head, float(tail)
        except ValueError:
            pass  # a ':' inside the file name
    parts = [n.strip() for n in names.split(",")]
    if len(parts) == 1 and parts[0]:
        return {"name": parts[0], "strength": strength}
    if len(parts) == 2 and all(parts):
        return {"high": parts[0], "low": parts[1], "high_strength": strength, "low_strength": strength}
    raise UsageError(f"--lora {text!r}: give NAME[:STRENGTH] or HIGH,LOW[:STRENGTH]")


def image_value(value: str, base_dir: Path | None = None, *, must_exist: bool = True, what: str = "image") -> str:
    """An image (or another input file: `what`) for the job: URLs and data URIs as given, a local
    file as base64.

    With `must_exist=False` (batch files) a value that is not a file passes through, so a line may
    also hold base64 itself; on the command line a missing file is an error.
    """
    if value.startswith(("https://", "http://", "data:")):
        return value
    path = Path(value).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a long base64 string is no path
        if not must_exist:
            return value
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "cannot be read"
        raise UsageError(f"{what} {value!r}: {reason}") from None
    return base64.b64encode(data).decode("ascii")


SEGMENT_LENGTH = re.compile(r"(?P<prompt>.*):\s*(?P<length>[0-9]+)\s*", re.DOTALL)


def parse_segment(text: str) -> dict[str, Any]:
    """`PROMPT[:LENGTH]` -> {"prompt", "length"}: a trailing `:N` (an integer) is the length, any
    other `:` stays in the prompt. No prompt (`":49"`) leaves the segment the job's prompt."""
    segment: dict[str, Any] = {}
    match = SEGMENT_LENGTH.fullmatch(text)
    prompt = text
    if match:
        prompt, segment["length"] = match["prompt"].rstrip(), int(match["length"])
    if prompt.strip():
        segment = {"prompt": prompt, **segment}
    return segment


def read_segments(path: Path) -> list[Any]:
    """--segments FILE.json: a list of segments, or an object with a `segments` list. The entries
    go to the worker as they are: it checks them and names a bad one (`segments[2].length`)."""
    try:
        data = json.loads(path.expanduser().read_text())
    except OSError as exc:
        raise UsageError(f"--segments {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--segments {path}: not a text file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--segments {path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    if not isinstance(data, list):
        raise UsageError(f"--segments {path}: give a JSON list of segments "
                         "([{\"prompt\": \"...\"}, ...]) or an object with a \"segments\" list")
    return data


def segments_field(args: argparse.Namespace) -> list[Any] | None:
    """`segments` from --segment (repeatable) or --segments FILE.json; None when neither is given."""
    if args.segment_texts and args.segments_file is not None:
        raise UsageError("give the segments one way: --segment (repeatable) or --segments FILE.json")
    if args.segments_file is not None:
        return read_segments(args.segments_file)
    if args.segment_texts:
        return [parse_segment(text) for text in args.segment_texts]
    return None


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: use KEY=VALUE")
        try:
            fields[key.strip()] = json.loads(raw)
        except ValueError:
            fields[key.strip()] = raw
    return fields


def common_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields every job gets from options (everything but the image and prompt)."""
    fields = {name: getattr(args, dest) for dest, name in FIELDS.items() if getattr(args, dest) is not None}
    if args.end_image:
        fields["end_image"] = image_value(args.end_image)
    if args.audio:
        fields["audio"] = image_value(args.audio, what="audio")
    for dest, name in FILE_OPTIONS.items():
        if getattr(args, dest):
            fields[name] = image_value(getattr(args, dest), what=name.replace("_", " "))
    if args.lora:
        fields["loras"] = [parse_lora(text) for text in args.lora]
    segments = segments_field(args)
    if segments is not None:
        fields["segments"] = segments
    if args.quality:
        fields["fast"] = False
    if args.dry_run:
        fields["dry_run"] = True
    if args.last_frame:
        fields["return_last_frame"] = True
    if args.return_preprocessed:
        fields["return_preprocessed"] = True
    fields.update(parse_set(args.set))
    return fields
