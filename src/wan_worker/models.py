"""The Wan2.2 model files, by set (one per kind of job): the manifest, where ComfyUI looks, the check.

Where ComfyUI looks is read from the same extra_model_paths.yaml ComfyUI reads, with ComfyUI's own
rules (utils/extra_config.py, folder_paths.py), so the check and ComfyUI never disagree. The check
stats each file and reads only its safetensors header, so it runs on every job in milliseconds.
Also a CLI: `python -m wan_worker.models [--json]` (exit 0 all ok, 1 problems, 2 start-up error).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from .errors import MODEL_DAMAGED, MODELS_MISSING, STARTUP_FAILED, WorkerError
from .settings import Settings, load_settings

log = logging.getLogger(__name__)

WAN22_REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
WAN21_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
KIJAI_FP8_REPO = "Kijai/WanVideo_comfy_fp8_scaled"  # the Animate model, as the official template loads it
KIJAI_REPO = "Kijai/WanVideo_comfy"  # the Animate template's two LoRAs
DWPOSE_REPO = "yzd-v/DWPose"  # Apache-2.0; the files ComfyUI's Animate template runs (DWPreprocessor)
RIFE_REPO = "Isi99999/Frame_Interpolation_Models"  # RIFE 4.9 (Practical-RIFE, MIT), as ComfyUI users name it
ESRGAN_REPO = "2kpr/Real-ESRGAN"  # Real-ESRGAN's released weights (BSD-3-Clause), unchanged

GB = 1000**3


@dataclass(frozen=True)
class ModelFile:
    """One file the bundled workflow loads: where ComfyUI expects it and where to get it."""

    name: str  # file name, as the workflow's loader node names it
    folder: str  # ComfyUI model folder: diffusion_models, loras, text_encoders, vae
    repo: str  # Hugging Face repository
    repo_path: str  # path of the file inside the repository
    approx_bytes: int  # for the docs and download estimates; the hub's size is authoritative
    role: str  # what it is, for reports and docs

    @property
    def rel_path(self) -> str:
        return f"{self.folder}/{self.name}"


def _wan(folder: str, name: str, approx_bytes: int, role: str) -> ModelFile:
    return ModelFile(name, folder, WAN22_REPO, f"split_files/{folder}/{name}", approx_bytes, role)


# Every file once; a file several sets load (the text encoder, the 2.1 VAE) is one entry.
HIGH_I2V = _wan("diffusion_models", "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
                "I2V high-noise expert (first sampling steps)")
LOW_I2V = _wan("diffusion_models", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
               "I2V low-noise expert (last sampling steps)")
LORA_HIGH_I2V = _wan("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", int(1.23 * GB),
                     "LightX2V 4-step LoRA for the I2V high-noise expert")
LORA_LOW_I2V = _wan("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors", int(1.23 * GB),
                    "LightX2V 4-step LoRA for the I2V low-noise expert")
TEXT_ENCODER = _wan("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", int(6.74 * GB),
                    "UMT5-XXL text encoder")
VAE21 = _wan("vae", "wan_2.1_vae.safetensors", int(0.254 * GB), "Wan 2.1 VAE")
HIGH_T2V = _wan("diffusion_models", "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
                "T2V high-noise expert (first sampling steps)")
LOW_T2V = _wan("diffusion_models", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", int(14.3 * GB),
               "T2V low-noise expert (last sampling steps)")
LORA_HIGH_T2V = _wan("loras", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", int(1.23 * GB),
                     "LightX2V 4-step LoRA for the T2V high-noise expert")
LORA_LOW_T2V = _wan("loras", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", int(1.23 * GB),
                    "LightX2V 4-step LoRA for the T2V low-noise expert")
TI2V_5B = _wan("diffusion_models", "wan2.2_ti2v_5B_fp16.safetensors", int(10.0 * GB),
               "TI2V 5B model (text and image to video, one model)")
VAE22 = _wan("vae", "wan2.2_vae.safetensors", int(1.41 * GB), "Wan 2.2 VAE (the 5B model's)")
S2V_14B = _wan("diffusion_models", "wan2.2_s2v_14B_fp8_scaled.safetensors", int(16.4 * GB),
               "S2V 14B model (sound and image to video)")
WAV2VEC2 = _wan("audio_encoders", "wav2vec2_large_english_fp16.safetensors", int(0.63 * GB),
                "wav2vec2 large audio encoder (the S2V model's sound features)")
# Animate: the official video_wan2_2_14B_animate template's files, from three repositories
ANIMATE_14B = ModelFile("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models", KIJAI_FP8_REPO,
                        "Wan22Animate/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", int(18.4 * GB),
                        "Animate 14B model (character image + pose and face videos to video)")
LORA_I2V_DISTILL = ModelFile("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras", KIJAI_REPO,
                             "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                             int(0.74 * GB), "LightX2V I2V step-distill LoRA (Animate's fast mode)")
LORA_RELIGHT = ModelFile("WanAnimate_relight_lora_fp16.safetensors", "loras", KIJAI_REPO,
                         "LoRAs/Wan22_relight/WanAnimate_relight_lora_fp16.safetensors", int(0.41 * GB),
                         "Animate relight LoRA (replace mode lights the character like the scene)")
CLIP_VISION_H = ModelFile("clip_vision_h.safetensors", "clip_vision", WAN21_REPO,
                          "split_files/clip_vision/clip_vision_h.safetensors", int(1.26 * GB),
                          "CLIP vision ViT-H (the Animate model's view of the character image)")

# Animate preprocessing (wan_worker.preprocess), run by the worker itself with onnxruntime, not by
# ComfyUI: a person detector and a whole-body pose model, in a `detection` folder of their own.
PERSON_DETECTOR = ModelFile("yolox_l.onnx", "detection", DWPOSE_REPO, "yolox_l.onnx", int(0.217 * GB),
                            "YOLOX-L person detector (Animate preprocessing)")
POSE_ESTIMATOR = ModelFile("dw-ll_ucoco_384.onnx", "detection", DWPOSE_REPO, "dw-ll_ucoco_384.onnx",
                           int(0.134 * GB), "DWPose whole-body keypoints, 133 points (Animate preprocessing)")
PREPROCESS_FILES = (PERSON_DETECTOR, POSE_ESTIMATOR)

# Post-processing (wan_worker.postprocess), in the job's own graph: RIFE runs in the worker's
# ComfyUI node (comfyui_nodes/), the upscaler in ComfyUI's core UpscaleModelLoader (spandrel).
RIFE49 = ModelFile("rife49.pth", "frame_interpolation", RIFE_REPO, "rife49.pth", int(0.0213 * GB),
                   "RIFE 4.9 frame interpolation (`num_interpolated_frames`)")
ESRGAN_X2 = ModelFile("RealESRGAN_x2plus.pth", "upscale_models", ESRGAN_REPO, "RealESRGAN_x2plus.pth",
                      int(0.0671 * GB), "Real-ESRGAN x2plus upscaler, the default `upscaler`")
POSTPROCESS_FILES = (RIFE49, ESRGAN_X2)

MANIFEST: tuple[ModelFile, ...] = (HIGH_I2V, LOW_I2V, LORA_HIGH_I2V, LORA_LOW_I2V, TEXT_ENCODER, VAE21,
                                   HIGH_T2V, LOW_T2V, LORA_HIGH_T2V, LORA_LOW_T2V, TI2V_5B, VAE22,
                                   S2V_14B, WAV2VEC2, ANIMATE_14B, LORA_I2V_DISTILL, LORA_RELIGHT, CLIP_VISION_H,
                                   *PREPROCESS_FILES, *POSTPROCESS_FILES)


@dataclass(frozen=True)
class ModelSet:
    """The files one kind of job needs: what a volume must hold to serve it, what to download."""

    name: str  # what --set, AUTO_DOWNLOAD_MODELS and MODELS_MISSING call it
    serves: str  # the job kinds it serves, for reports
    files: tuple[ModelFile, ...]

    @property
    def names(self) -> set[str]:
        return {m.name for m in self.files}


MODEL_SETS: dict[str, ModelSet] = {s.name: s for s in (
    ModelSet("i2v-14b", "image-to-video and first-last-frame, model 14b (`image`)",
             (HIGH_I2V, LOW_I2V, LORA_HIGH_I2V, LORA_LOW_I2V, TEXT_ENCODER, VAE21)),
    ModelSet("t2v-14b", "text-to-video, model 14b (no `image`)",
             (HIGH_T2V, LOW_T2V, LORA_HIGH_T2V, LORA_LOW_T2V, TEXT_ENCODER, VAE21)),
    ModelSet("ti2v-5b", "text- and image-to-video, model 5b", (TI2V_5B, VAE22, TEXT_ENCODER)),
    # The official S2V template applies the T2V high-noise 4-step LoRA to the S2V model (fast mode).
    ModelSet("s2v-14b", "sound-to-video, model 14b (`audio` + `image`)",
             (S2V_14B, WAV2VEC2, TEXT_ENCODER, VAE21, LORA_HIGH_T2V)),
    ModelSet("animate-14b", "Animate, model 14b (`video` + `image`)",
             (ANIMATE_14B, LORA_I2V_DISTILL, LORA_RELIGHT, CLIP_VISION_H, TEXT_ENCODER, VAE21,
              *PREPROCESS_FILES)),
    ModelSet("postprocess", "frame interpolation and upscaling, any family (`num_interpolated_frames`, `upscaler`)",
             POSTPROCESS_FILES),
)}
DEFAULT_SET = "i2v-14b"


def parse_sets(text: str, what: str = "--set") -> list[ModelSet]:
    """A comma-separated set list ("all" for every set), in MODEL_SETS order; ValueError names the
    unknown set and the known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(MODEL_SETS.values())
    unknown = [n for n in names if n not in MODEL_SETS]
    if unknown or not names:
        raise ValueError(f"{what} takes a comma-separated list of {', '.join(MODEL_SETS)} (or all); "
                         f"{'unknown: ' + ', '.join(unknown) if unknown else 'got nothing'}")
    return [s for s in MODEL_SETS.values() if s.name in names]


def files_of(sets: Sequence[ModelSet]) -> list[ModelFile]:
    """The files of `sets`, each once, in manifest order (a shared file is fetched once)."""
    wanted = {m for s in sets for m in s.files}
    return [m for m in MANIFEST if m in wanted]


# ---------------------------------------------------------------- where ComfyUI looks

CONFIG_NAME = "extra_model_paths.yaml"
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}  # ComfyUI's map_legacy
# ComfyUI's own folders under <comfy_dir>/models, in folder_paths.py's order; other folders: <name>
COMFY_FOLDERS = {"diffusion_models": ("unet", "diffusion_models"),
                 "text_encoders": ("text_encoders", "clip")}
# Folders the worker's ComfyUI node registers (comfyui_nodes/wan_worker_nodes) after ComfyUI read the
# YAML: its own models/<folder> comes after the YAML's paths there.
NODE_FOLDERS = ("frame_interpolation",)
MAX_HEADER_BYTES = 100 * 1000 * 1000  # real headers are well under 1 MB; more means not safetensors
FIX_MISSING = ("run scripts/download_models.sh --set {sets} to fill the volume "
               "(or set AUTO_DOWNLOAD_MODELS={sets})")
FIX_DAMAGED = "delete it and download it again with scripts/download_models.sh"

_YAML_CACHE: dict[str, tuple[int, int, Any]] = {}  # path -> (size, mtime_ns, parsed YAML)
_HEADER_CACHE: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime_ns) -> header was ok
# The warm-up thread and the first job (the SDK's thread) can check at the same moment: one lock
# keeps the caches consistent and reads each header once. Reentrant: the check loads the YAML too.
_CACHE_LOCK = threading.RLock()


def config_files(settings: Settings) -> list[Path]:
    """The YAML files ComfyUI's main.py loads, in its order.

    <comfy_dir>/extra_model_paths.yaml is read if present (ComfyUI does so by itself), then
    EXTRA_MODEL_PATHS, which the entrypoint passes as --extra-model-paths-config and must exist.
    Loading the same file twice changes nothing, as in ComfyUI.
    """
    default = Path(os.path.realpath(settings.comfy_dir)) / CONFIG_NAME
    files = [default] if default.is_file() else []
    if settings.extra_model_paths:
        explicit = Path(settings.extra_model_paths)
        if not (files and os.path.realpath(explicit) == os.path.realpath(default)):
            files.append(explicit)
    return files


def model_dirs(settings: Settings) -> dict[str, list[Path]]:
    """For each folder of the manifest, the directories ComfyUI searches, first match wins."""
    models_dir = os.path.join(os.path.realpath(settings.comfy_dir), "models")
    paths = {folder: [] if folder in NODE_FOLDERS else
             [os.path.join(models_dir, sub) for sub in COMFY_FOLDERS.get(folder, (folder,))]
             for folder in _manifest_folders()}
    for config_file in config_files(settings):
        for folder, path, is_default in _config_entries(config_file):
            if folder in paths:
                _add_folder_path(paths[folder], path, is_default)
    for folder in NODE_FOLDERS:
        _add_folder_path(paths[folder], os.path.join(models_dir, folder), False)
    return {folder: [Path(p) for p in dirs] for folder, dirs in paths.items()}


def _manifest_folders() -> list[str]:
    return list(dict.fromkeys(m.folder for m in MANIFEST))


def _add_folder_path(paths: list[str], path: str, is_default: bool) -> None:
    """folder_paths.add_model_folder_path: no duplicates; is_default moves or puts it first."""
    if path in paths:
        if is_default and paths[0] != path:
            paths.remove(path)
            paths.insert(0, path)
    elif is_default:
        paths.insert(0, path)
    else:
        paths.append(path)


def _config_entries(config_file: Path) -> Iterator[tuple[str, str, bool]]:
    """(folder, directory, is_default) in file order, by utils/extra_config.py's rules."""
    config = _load_yaml(config_file)
    yaml_dir = os.path.dirname(os.path.abspath(config_file))
    for section, conf in config.items():
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise _malformed(config_file, f"section '{section}' is not a mapping of folder: path")
        conf = dict(conf)
        has_base = "base_path" in conf
        base_path = _base_path(conf.pop("base_path", None), has_base, yaml_dir, config_file, section)
        is_default = bool(conf.pop("is_default", False))
        for key, value in conf.items():
            if not isinstance(value, str):
                raise _malformed(config_file, f"'{section}.{key}' must be a path or lines of paths")
            for line in value.split("\n"):
                if line:
                    yield (LEGACY_FOLDERS.get(str(key), str(key)),
                           _full_path(line, base_path, yaml_dir), is_default)


def _base_path(value: object, present: bool, yaml_dir: str, config_file: Path,
               section: str) -> str | None:
    """`~` and $VARS expanded; a relative base_path is relative to the YAML file's folder."""
    if value is None:
        if present:
            raise _malformed(config_file, f"'{section}.base_path' is empty")
        return None
    if not isinstance(value, str):
        raise _malformed(config_file, f"'{section}.base_path' must be a path")
    expanded = os.path.expandvars(os.path.expanduser(value))
    if not os.path.isabs(expanded):  # as ComfyUI: even "" becomes the YAML's folder
        expanded = os.path.abspath(os.path.join(yaml_dir, expanded))
    return expanded


def _full_path(line: str, base_path: str | None, yaml_dir: str) -> str:
    if base_path:
        full = os.path.join(base_path, line)
    elif not os.path.isabs(line):
        full = os.path.abspath(os.path.join(yaml_dir, line))
    else:
        full = line
    return os.path.normpath(full)


def _load_yaml(config_file: Path) -> dict[str, Any]:
    """Parsed YAML, cached by (size, mtime) so a warm check does not re-parse it."""
    with _CACHE_LOCK:
        return _load_yaml_locked(config_file)


def _load_yaml_locked(config_file: Path) -> dict[str, Any]:
    key = str(config_file)
    try:
        st = os.stat(config_file)
        cached = _YAML_CACHE.get(key)
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        with open(config_file, encoding="utf-8") as stream:
            config = yaml.safe_load(stream)
    except OSError as exc:
        raise WorkerError(
            STARTUP_FAILED,
            f"The model paths file {config_file} cannot be read ({exc.strerror or exc}); fix "
            "EXTRA_MODEL_PATHS or the image.",
            {"file": key},
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _malformed(config_file, f"it is not valid YAML ({_first_line(exc)})") from None
    if not isinstance(config, dict):
        raise _malformed(config_file, "its top level must be a mapping of sections")
    _YAML_CACHE[key] = (st.st_size, st.st_mtime_ns, config)
    return config


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _malformed(config_file: Path, why: str) -> WorkerError:
    return WorkerError(
        STARTUP_FAILED,
        f"The model paths file {config_file} is malformed: {why}; fix it (ComfyUI reads it too).",
        {"file": str(config_file), "reason": why},
    )


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class FileStatus:
    """What the check found for one manifest file."""

    model: ModelFile
    state: str  # "ok" | "missing" | "damaged"
    path: str | None  # where it was found (None when missing)
    size: int | None  # bytes
    reason: str = ""  # why it is missing or damaged

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.model.rel_path, "folder": self.model.folder, "name": self.model.name,
                "role": self.model.role, "state": self.state, "path": self.path,
                "size": self.size, "reason": self.reason}


@dataclass(frozen=True)
class VolumeReport:
    """The checked files' states plus every directory searched, for messages, dry runs and the CLI.

    `model_set` is the set a job needs (its messages name it); a report of the whole manifest has
    none and tells per set what is complete (`sets`).
    """

    files: tuple[FileStatus, ...]
    searched: dict[str, list[str]]  # folder -> directories searched, in ComfyUI's order
    config_files: tuple[str, ...] = field(default=())
    model_set: str | None = None

    @property
    def ok(self) -> bool:
        return all(f.state == "ok" for f in self.files)

    @property
    def missing(self) -> tuple[FileStatus, ...]:
        return tuple(f for f in self.files if f.state == "missing")

    @property
    def damaged(self) -> tuple[FileStatus, ...]:
        return tuple(f for f in self.files if f.state == "damaged")

    def set_status(self, model_set: ModelSet) -> SetStatus:
        """Whether every file of `model_set` is ok in this report (files not checked count as missing)."""
        by_name = {f.model.name: f for f in self.files}
        states = [by_name.get(m.name) for m in model_set.files]
        return SetStatus(
            model_set,
            tuple(m.rel_path for m, f in zip(model_set.files, states) if f is None or f.state == "missing"),
            tuple(m.rel_path for m, f in zip(model_set.files, states) if f is not None and f.state == "damaged"))

    @property
    def sets(self) -> list[SetStatus]:
        """Every set whose files this report checked (all of them for a whole-manifest check)."""
        checked = {f.model.name for f in self.files}
        return [self.set_status(s) for s in MODEL_SETS.values() if s.names <= checked]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok}
        if self.model_set:
            out["set"] = self.model_set
        return {
            **out,
            "files": [f.to_dict() for f in self.files],
            "missing": [f.model.rel_path for f in self.missing],
            "damaged": [f.model.rel_path for f in self.damaged],
            "sets": {s.model_set.name: s.to_dict() for s in self.sets},
            "searched": {k: list(v) for k, v in self.searched.items()},
            "config_files": list(self.config_files),
        }

    def raise_for_problems(self) -> None:
        """MODELS_MISSING (takes precedence) or MODEL_DAMAGED; details always carry both lists."""
        if self.ok:
            return
        details = {
            "missing": [{"file": f.model.rel_path, "searched": self.searched[f.model.folder]}
                        for f in self.missing],
            "damaged": [{"file": f.model.rel_path, "path": f.path, "size": f.size,
                         "reason": f.reason} for f in self.damaged],
            "searched": {k: list(v) for k, v in self.searched.items()},
        }
        if self.model_set:
            details["set"] = self.model_set
        if self.missing:
            raise WorkerError(MODELS_MISSING, self._missing_message(), details)
        raise WorkerError(MODEL_DAMAGED, self._damaged_message(), details)

    def _missing_message(self) -> str:
        names = ", ".join(f.model.rel_path for f in self.missing)
        folders = dict.fromkeys(f.model.folder for f in self.missing)
        where = "; ".join(f"{folder} in {', '.join(self.searched[folder]) or '(nowhere)'}"
                          for folder in folders)
        count = len(self.missing)
        also = ""
        if self.damaged:
            also = f"; also damaged: {', '.join(f.model.rel_path for f in self.damaged)}"
        of_set = f" of set {self.model_set}" if self.model_set else ""
        return (f"{count} model file{'s' if count > 1 else ''}{of_set} {'are' if count > 1 else 'is'} "
                f"missing: {names} (searched {where}){also}; {self.fix_missing()}.")

    def fix_missing(self) -> str:
        """What to run: download the job's set, or (a whole-volume report) every incomplete set."""
        if self.model_set:
            return FIX_MISSING.format(sets=self.model_set)
        sets = [s.model_set.name for s in self.sets if not s.complete] or [DEFAULT_SET]
        return FIX_MISSING.format(sets=",".join(sets))

    def _damaged_message(self) -> str:
        items = "; ".join(f"{f.model.rel_path} at {f.path} ({f.reason})" for f in self.damaged)
        count = len(self.damaged)
        fix = FIX_DAMAGED if count == 1 else FIX_DAMAGED.replace(" it ", " them ")
        return f"{count} model file{'s are' if count > 1 else ' is'} damaged: {items}; {fix}."


@dataclass(frozen=True)
class SetStatus:
    """One model set on this volume: complete, or which of its files are missing or damaged."""

    model_set: ModelSet
    missing: tuple[str, ...]  # folder/name
    damaged: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.damaged

    def to_dict(self) -> dict[str, Any]:
        return {"complete": self.complete, "serves": self.model_set.serves, "missing": list(self.missing),
                "damaged": list(self.damaged)}


def check_volume(settings: Settings, names: set[str] | None = None,
                 model_set: str | None = None) -> VolumeReport:
    """Find each manifest file (or those of `names`, the files one graph loads) where ComfyUI
    would, and check its safetensors header. `model_set` names the set a job needs, for messages.

    Raises WorkerError(STARTUP_FAILED) only for an unreadable or malformed paths file; missing
    or damaged models are reported, not raised (see VolumeReport.raise_for_problems).
    """
    started = time.perf_counter()
    with _CACHE_LOCK:
        dirs = model_dirs(settings)
        searched = {folder: [str(d) for d in folder_dirs] for folder, folder_dirs in dirs.items()}
        files = tuple(_check_file(model, searched[model.folder]) for model in MANIFEST
                      if names is None or model.name in names)
        report = VolumeReport(files, searched, tuple(str(p) for p in config_files(settings)), model_set)
    log.debug("volume check: %d ok, %d missing, %d damaged in %.1f ms", len(files) -
              len(report.missing) - len(report.damaged), len(report.missing),
              len(report.damaged), (time.perf_counter() - started) * 1000)
    return report


def sets_report(settings: Settings) -> dict[str, Any]:
    """Every set on this volume, complete or what it lacks: what a dry run shows beside its own set."""
    return check_volume(settings).to_dict()["sets"]


def _check_file(model: ModelFile, dirs: Sequence[str]) -> FileStatus:
    """First directory holding a regular file of that name, as folder_paths.get_full_path."""
    broken_links = []
    for directory in dirs:
        path = os.path.join(directory, model.name)
        try:
            st = os.stat(path)
        except OSError:
            if os.path.islink(path):
                broken_links.append(path)
            continue
        if stat.S_ISREG(st.st_mode):
            return _check_found(model, path, st)
    reason = "not found in any searched folder"
    if broken_links:
        reason += f" (broken symlink at {', '.join(broken_links)})"
    return FileStatus(model, "missing", None, None, reason)


def _check_found(model: ModelFile, path: str, st: os.stat_result) -> FileStatus:
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _HEADER_CACHE:
        problem = file_problem(path, st.st_size)
        if problem is not None:
            log.debug("model %s at %s is damaged: %s", model.rel_path, path, problem)
            return FileStatus(model, "damaged", path, st.st_size, problem)
        for old in [k for k in _HEADER_CACHE if k[0] == path]:
            del _HEADER_CACHE[old]
        _HEADER_CACHE[key] = True
    return FileStatus(model, "ok", path, st.st_size, "")


def file_problem(path: str, size: int, name: str | None = None) -> str | None:
    """Why the model file is not usable, or None: an ONNX file, a torch checkpoint or a safetensors
    file, by its name (`name`: the model's, when `path` is a temporary download name)."""
    named = name or path
    if named.endswith(".onnx"):
        return onnx_problem(path, size)
    if named.endswith(TORCH_EXTENSIONS):
        return torch_problem(path, size)
    return safetensors_problem(path, size)


TORCH_EXTENSIONS = (".pth", ".pt", ".pkl", ".ckpt")


def torch_problem(path: str, size: int) -> str | None:
    """Why the file is not a torch checkpoint, or None. torch.save writes a zip archive whose
    directory sits at its end, so reading that directory proves the file complete; ComfyUI then
    loads it with weights_only=True (no code runs). The old pre-zip format has no end to check."""
    import zipfile

    if size < 64:
        return f"the file is only {size} bytes, too small for a torch checkpoint"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:1] == b"\x80":  # the pre-1.6 pickle format: loadable, nothing more to check
            return None
        if head != b"PK\x03\x04":
            return "it is neither a torch zip checkpoint nor an old-style torch pickle"
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist()):
                return "it is a zip archive without data.pkl: not a torch checkpoint"
    except zipfile.BadZipFile:
        return "its zip directory cannot be read: truncated download, or not a torch checkpoint"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def onnx_problem(path: str, size: int) -> str | None:
    """Why the file is not an ONNX model, or None. ONNX (protobuf) has no header or footer to prove
    it complete: the check reads the first bytes (ModelProto starts with ir_version, field 1) and
    the download compares size and sha256 with the hub."""
    if size < 64:
        return f"the file is only {size} bytes, too small for an ONNX model"
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if head[:1] != b"\x08":
        return "it does not start like an ONNX model (protobuf ModelProto): not an ONNX file"
    return None


def find_file(settings: Settings, model: ModelFile) -> Path:
    """Where ComfyUI's folder rules find `model`; WorkerError MODELS_MISSING / MODEL_DAMAGED otherwise.
    For the files the worker loads itself (the preprocessing models)."""
    report = check_volume(settings, {model.name}, model_set=next(
        (s.name for s in MODEL_SETS.values() if model in s.files), None))
    report.raise_for_problems()
    return Path(report.files[0].path or "")


def safetensors_problem(path: str, size: int) -> str | None:
    """Why the file is not a complete safetensors file, or None. Reads the header only."""
    return inspect_safetensors(path, size)[0]


def inspect_safetensors(path: str, size: int) -> tuple[str | None, list[str]]:
    """(why the file is not a complete safetensors file or None, its tensor names). Reads the header only."""
    if size == 0:
        return "the file is empty (0 bytes)", []
    if size < 8:
        return f"the file is only {size} bytes, too small for a safetensors file", []
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length == 0:
                return "its safetensors header length is 0", []
            if length > MAX_HEADER_BYTES:
                return (f"its first 8 bytes announce a {length}-byte header: not a safetensors "
                        "file"), []
            if 8 + length > size:
                return (f"its header needs {8 + length} bytes but the file has only {size}: "
                        "truncated, or not a safetensors file"), []
            raw = fh.read(length)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})", []
    except struct.error:
        return "it changed while being read", []
    if len(raw) < length:
        return "it is shorter than its header (truncated)", []
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "its header is not valid JSON: not a safetensors file", []
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file", []
    return _tensor_problem(header, length, size), [k for k in header if k != "__metadata__"]


def _tensor_problem(header: dict[str, Any], length: int, size: int) -> str | None:
    """Every tensor's data inside the file (a truncated download fails)."""
    data_size = size - 8 - length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            return f"tensor {name!r} has no valid data_offsets in the header"
        if offsets[1] > data_size:
            return (f"tensor {name!r} ends at byte {8 + length + offsets[1]} but the file has only "
                    f"{size} bytes: truncated download")
        end = max(end, offsets[1])
    if end != data_size:
        return (f"the file has {data_size - end} bytes more than its header describes "
                "(safetensors refuses it)")
    return None


# ---------------------------------------------------------------- CLI


def format_report(report: VolumeReport) -> str:
    """The human report printed at container start and by the CLI: files, folders, then per set."""
    lines = ["Model volume check"
             + (f" (paths from {', '.join(report.config_files)})" if report.config_files else "")]
    for f in report.files:
        size = f"{f.size / GB:6.2f} GB" if f.size is not None else " " * 9
        lines.append(f"  {f.state.upper():<8} {f.model.rel_path}")
        if f.path:
            lines.append(f"           {size}  {f.path}")
        if f.reason:
            lines.append(f"           {f.reason}")
    lines.append("Folders searched, in ComfyUI's order:")
    for folder, dirs in report.searched.items():
        lines.append(f"  {folder}:")
        lines.extend(f"    {d}" for d in dirs)
    lines.append("Model sets:")
    for s in report.sets:
        problems = [f"missing {', '.join(s.missing)}"] if s.missing else []
        problems += [f"damaged {', '.join(s.damaged)}"] if s.damaged else []
        state = "COMPLETE" if s.complete else "INCOMPLETE"
        lines.append(f"  {state:<10} {s.model_set.name}: {s.model_set.serves}"
                     + (f"; {'; '.join(problems)}" if problems else ""))
    lines.append(serves_line(report))
    if report.ok:
        lines.append(f"All {len(report.files)} model files are present and complete.")
    if report.missing:
        lines.append(f"{len(report.missing)} missing: {report.fix_missing()}.")
    if report.damaged:
        lines.append(f"{len(report.damaged)} damaged: {FIX_DAMAGED}.")
    return "\n".join(lines)


def serves_line(report: VolumeReport) -> str:
    """One line for the container log: which kinds of job this volume can serve."""
    ready = [s.model_set for s in report.sets if s.complete]
    if not ready:
        return "This volume can serve no video jobs yet (workflow-mode jobs bring their own models)."
    return "This volume can serve: " + "; ".join(f"{s.serves} [{s.name}]" for s in ready) + "."


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when every set asked for (all by default) is complete, 1 when one is not, 2 on a
    start-up error or an unknown set."""
    parser = argparse.ArgumentParser(
        prog="python -m wan_worker.models",
        description="Report which Wan2.2 model files are on the volume, where, and which model sets "
                    "(kinds of job) are complete.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--set", default="all", metavar="SETS",
                        help=f"sets whose completeness decides the exit code: {', '.join(MODEL_SETS)} "
                             "or all (default); the report always shows every set")
    args = parser.parse_args(argv)
    try:
        wanted = parse_sets(args.set)
    except ValueError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        level = logging.getLevelName(settings.log_level.upper())
        logging.basicConfig(level=level if isinstance(level, int) else logging.INFO,
                            stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        report = check_volume(settings)
    except WorkerError as exc:
        if args.json:
            print(json.dumps({"ok": False, **exc.to_result()}, indent=2))
        else:
            print(f"ERROR {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if all(report.set_status(s).complete for s in wanted) else 1


if __name__ == "__main__":
    sys.exit(main())
