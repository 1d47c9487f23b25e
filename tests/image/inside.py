"""Run inside the image by tests/image (the image's own interpreter): prints, as JSON, the facts the
container tier checks: the versions, every copy of a CUDA library on disk, and where onnxruntime's
`preload_dlls()` loaded the CUDA and cuDNN libraries from.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import sys
from pathlib import Path

# The CUDA libraries two packages might each bring: torch's NVIDIA wheels, onnxruntime-gpu's extras.
CUDA_LIBS = re.compile(r"^lib(cudnn|cublas|cublasLt|cudart|cufft|curand|nvrtc)(_[a-z_]+)?\.so(\.\d+)*$")
SKIP = {"/proc", "/sys", "/dev", "/runpod-volume", "/src"}


def copies_on_disk() -> dict[str, list[str]]:
    """Every file named like a CUDA library, anywhere in the image's filesystem, by name."""
    found: dict[str, list[str]] = {}
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in SKIP]
        for name in files:
            if CUDA_LIBS.match(name):
                found.setdefault(name, []).append(os.path.join(root, name))
    return found


def loaded_from() -> dict[str, str]:
    """The CUDA libraries this process has mapped, and from where (/proc/self/maps)."""
    maps = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if CUDA_LIBS.match(os.path.basename(path)):
            maps[os.path.basename(path)] = path
    return maps


def main() -> None:
    import onnxruntime as ort

    # As the worker's preprocessing does, before any torch import (the worker never imports torch;
    # ComfyUI does, in its own process): onnxruntime must find the libraries by itself.
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        ort.preload_dlls()
    loaded = loaded_from()
    import torch

    json.dump({
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cudnn": torch.backends.cudnn.version(),
        "torch_site": str(Path(torch.__file__).parents[1]),
        "comfyui": re.search(r'__version__ = "([^"]+)"', Path("/comfyui/comfyui_version.py").read_text()).group(1),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "preload_said": said.getvalue(),
        "loaded": loaded,
        "copies": copies_on_disk(),
    }, sys.stdout)


if __name__ == "__main__":
    main()
