"""Every environment variable the worker reads, parsed once into one frozen object.

Defaults are the container's layout (ComfyUI in /comfyui, models on /runpod-volume), so a
deployed endpoint needs no settings at all. Nothing else in the package reads os.environ.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Mapping

from .errors import STARTUP_FAILED, WorkerError

def bundled_workflows_dir() -> Path:
    """The graphs of workflows/ (repository root): built into the package as wan_worker/workflows
    (wheel, image); a source checkout or editable install reads the repository's folder itself."""
    installed = Path(str(resources.files("wan_worker"))) / "workflows"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "workflows"


@dataclass(frozen=True)
class Settings:
    comfy_host: str = "127.0.0.1:8188"
    comfy_start_timeout_s: float = 600.0
    comfy_pid_file: str = "/tmp/comfyui.pid"
    comfy_dir: str = "/comfyui"
    extra_model_paths: str = ""  # empty: <comfy_dir>/extra_model_paths.yaml
    workflows_dir: str = ""  # empty: the bundled graphs (workflows/ of the repository)
    job_timeout_s: float = 900.0
    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    allow_private_image_urls: bool = False
    allow_http_image_urls: bool = False
    image_fetch_timeout_s: float = 20.0  # whole download of an image URL, redirects included
    # Workflow mode's video and audio inputs (images keep MAX_IMAGE_BYTES); ComfyUI's own upload
    # limit is 100 MB.
    max_input_mb: float = 100.0
    max_audio_s: float = 60.0  # sound-to-video: the longest part of `audio` one job may cover
    max_video_s: float = 30.0  # Animate: the longest driving `video` one job may follow
    # A story in one job (`segments`): how many parts, and the whole video's frames. ComfyUI holds
    # each segment's decoded frames and the whole video's as float32 (12 bytes a pixel) until the
    # job's next prompt: 801 frames at 832x480 is about 8 GB of RAM.
    max_segments: int = 10
    max_total_frames: int = 801
    # LoRAs given by URL: downloaded once into a folder ComfyUI's `loras` search path includes.
    lora_cache_dir: str = ""  # empty: <first existing loras folder>/wan-worker-cache
    max_lora_mb: float = 2048.0
    lora_fetch_timeout_s: float = 900.0  # one LoRA download, redirects included
    hf_token: str = field(default="", repr=False)  # sent only to huggingface.co hosts
    civitai_token: str = field(default="", repr=False)  # sent only to civitai.com hosts
    log_level: str = "INFO"
    # S3-compatible delivery, with RunPod's variable names. The bucket may instead be part of the
    # endpoint URL (https://<bucket>.s3.<region>.amazonaws.com or https://host/<bucket>).
    bucket_endpoint_url: str = ""
    bucket_access_key_id: str = field(default="", repr=False)  # repr=False: never in a log line
    bucket_secret_access_key: str = field(default="", repr=False)
    bucket_name: str = ""
    bucket_region: str = ""  # empty: from the endpoint URL, else us-east-1
    bucket_public_url: str = ""  # set: return <BUCKET_PUBLIC_URL>/<key>, not a presigned URL
    presigned_url_expiry_s: int = 604800  # 7 days, the most SigV4 allows
    # Base64 results above this go to S3 (auto) or fail with OUTPUT_TOO_LARGE: RunPod caps a
    # /runsync result at about 20 MB, and 15 MB of MP4 is 20 MB of base64.
    max_inline_output_mb: float = 15.0
    websocket_reconnect_attempts: int = 5
    websocket_reconnect_delay_s: float = 3.0
    # Cold start (docs/cold-start.md): read model sets into the page cache while ComfyUI boots
    # (off, auto = the complete sets, or a set list), and run one tiny job of a kind at start.
    prefetch_models: str = ""
    prefetch_threads: int = 8
    warmup: str = ""
    refresh_worker: bool = False  # ask RunPod for a fresh worker after every job
    # Set by RunPod on its workers; progress updates are only sent where it exists.
    runpod_webhook_post_output: str = ""

    @property
    def s3_configured(self) -> bool:
        """True when outputs can go to a bucket: an endpoint and both keys are set."""
        return bool(self.bucket_endpoint_url and self.bucket_access_key_id and self.bucket_secret_access_key)

    @property
    def comfy_url(self) -> str:
        return f"http://{self.comfy_host}"

    @property
    def comfy_ws_url(self) -> str:
        return f"ws://{self.comfy_host}/ws"

    @property
    def extra_model_paths_file(self) -> Path:
        return Path(self.extra_model_paths or Path(self.comfy_dir) / "extra_model_paths.yaml")

    @property
    def workflows_path(self) -> Path:
        return Path(self.workflows_dir) if self.workflows_dir else bundled_workflows_dir()

    @property
    def comfy_input_dir(self) -> Path:
        return Path(self.comfy_dir) / "input"

    @property
    def comfy_output_dir(self) -> Path:
        return Path(self.comfy_dir) / "output"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(raw: str, kind: type, allow_zero: bool = False) -> object:
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("expected true or false")
    value = kind(text)
    if kind in (int, float) and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError("must be 0 or more" if allow_zero else "must be greater than 0")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from the environment; a bad value is a clear start-up error."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        name = f.name.upper()
        if name not in env:
            continue
        kind = type(f.default)
        try:
            values[f.name] = _parse(env[name], kind, allow_zero=name.endswith("_ATTEMPTS"))
        except ValueError as exc:
            raise WorkerError(
                STARTUP_FAILED,
                f"Setting {name}={env[name]!r} is not valid ({exc}); fix the endpoint's environment.",
                {"setting": name},
            ) from None
    if "WORKFLOW_PATH" in env:  # read before 0.2: one file; there is a graph per job kind now
        raise WorkerError(
            STARTUP_FAILED,
            "Setting WORKFLOW_PATH is no longer read; set WORKFLOWS_DIR to a folder holding wan22_i2v.json, "
            "wan22_flf2v.json, wan22_t2v.json, wan22_ti2v_5b.json and wan22_s2v.json, or unset it to use the "
            "bundled graphs.",
            {"setting": "WORKFLOW_PATH"},
        )
    if "COMFY_HOST" not in env and "COMFY_PORT" in env:
        values["comfy_host"] = f"127.0.0.1:{env['COMFY_PORT'].strip()}"
    return Settings(**values)  # type: ignore[arg-type]
