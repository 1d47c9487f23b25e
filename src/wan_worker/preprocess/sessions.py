"""ONNX Runtime sessions for the two preprocessing models, on the GPU when there is one.

The files come from the paths the caller gives (the model volume); nothing here downloads.
onnxruntime is imported here, not at module import: only Animate jobs from a plain video pay for it.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import MODEL_DAMAGED, MODELS_MISSING, WorkerError

log = logging.getLogger(__name__)

GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class PoseModels:
    """Where the two ONNX files are: a person detector (YOLOX-L) and a whole-body pose model (DWPose)."""

    detector: Path
    pose: Path


def volume_models(settings: Any) -> PoseModels:
    """The two files where the volume check finds them (MODELS_MISSING / MODEL_DAMAGED otherwise)."""
    from ..models import PERSON_DETECTOR, POSE_ESTIMATOR, find_file  # noqa: PLC0415

    return PoseModels(find_file(settings, PERSON_DETECTOR), find_file(settings, POSE_ESTIMATOR))


@functools.cache
def cuda_devices() -> int:
    """How many CUDA GPUs the driver sees (0 without a driver: no libcuda.so.1, as in a container
    started without the NVIDIA runtime). Asked of the driver itself, so no torch import is needed;
    once per process, not per Animate job: the GPUs a container sees do not change."""
    import ctypes  # noqa: PLC0415

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu in the image) and a GPU is
    there, else the CPU. Without a GPU, onnxruntime-gpu must not be asked for CUDA at all: with the
    CUDA libraries preloaded, creating the session crashes the process (seen with 1.22)."""
    import onnxruntime as ort  # noqa: PLC0415 - heavy import, only for preprocessing

    if GPU_PROVIDER in ort.get_available_providers():
        if cuda_devices() > 0:
            return [GPU_PROVIDER, CPU_PROVIDER]
        log.info("onnxruntime has CUDA but no GPU is visible: the preprocessing runs on the CPU")
    return [CPU_PROVIDER]


def open_session(path: Path, providers: Sequence[str] | None = None) -> Any:
    """An InferenceSession for `path`; a missing or unloadable file is a WorkerError naming it."""
    import onnxruntime as ort  # noqa: PLC0415

    path = Path(path)
    providers = list(providers or default_providers())
    if not path.is_file():
        raise WorkerError(MODELS_MISSING, f"The preprocessing model {path.name} is not on the volume; "
                                          "run scripts/download_models.sh --set animate-14b.",
                          {"missing": [path.name]})
    if GPU_PROVIDER in (providers or ()) and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # torch's CUDA/cuDNN pip packages, in the image's one venv beside onnxruntime
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no per-node warnings in the worker's log
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise WorkerError(MODEL_DAMAGED, f"The preprocessing model {path.name} could not be loaded; delete "
                                         "it and download it again with scripts/download_models.sh.",
                          {"model": path.name, "reason": str(exc)[:200]}) from None
    log.info("preprocessing model %s on %s", path.name, session.get_providers()[0])
    return session
