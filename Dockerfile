# wan-worker: code only (no models). Models live on a RunPod network volume.
# Build:  docker build -t wan-worker .        Move ComfyUI: --build-arg COMFYUI_VERSION=0.3.65
# A CUDA runtime base (no compilers). PyTorch's wheels carry their own cuDNN, so the -cudnn- variant
# would only add a second copy.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# --- stage 1: fetch ComfyUI at a pinned tag, and build our wheel (git and pip caches stay here)
FROM python:3.12-slim AS build
ARG COMFYUI_VERSION=0.3.64
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch "v${COMFYUI_VERSION}" https://github.com/comfyanonymous/ComfyUI.git /comfyui \
 && rm -rf /comfyui/.git
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# the bundled graphs: the build maps workflows/ into the wheel as wan_worker/workflows
COPY workflows ./workflows
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- stage 2: the runtime image
FROM ${CUDA_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COMFY_DIR=/comfyui \
    COMFY_PYTHON=/opt/comfy-venv/bin/python \
    WORKER_PYTHON=/opt/worker-venv/bin/python \
    HF_HUB_DISABLE_TELEMETRY=1

# Python 3.12 (Ubuntu 24.04's own) and the few system libraries ComfyUI's image/video code loads.
# PyAV's wheels bring their own ffmpeg, so no system ffmpeg is needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
      libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

# Heaviest and slowest-changing layer first: PyTorch with CUDA, in ComfyUI's own venv.
RUN python3.12 -m venv /opt/comfy-venv \
 && /opt/comfy-venv/bin/pip install --index-url "${TORCH_INDEX_URL}" \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCH_VERSION}"

# ComfyUI at the pinned version and its requirements. requests: ComfyUI's server imports it
# (app/frontend_management.py) without listing it, and huggingface_hub no longer brings it in.
COPY --from=build /comfyui /comfyui
RUN /opt/comfy-venv/bin/pip install -r /comfyui/requirements.txt requests

# The worker in a venv of its own (small; cannot disturb ComfyUI's packages). A code change only
# rebuilds from here down: seconds.
COPY --from=build /wheels /wheels
# onnxruntime-gpu replaces the CPU onnxruntime the wheel depends on (one module, two builds): the
# Animate preprocessing then runs on the GPU; its [cuda,cudnn] extras bring the CUDA 12 / cuDNN 9
# libraries it loads (the runtime base has no cuDNN; torch's copy sits in the other venv).
ARG ONNXRUNTIME_GPU_VERSION=1.22.0
RUN python3.12 -m venv /opt/worker-venv \
 && /opt/worker-venv/bin/pip install /wheels/*.whl \
 && /opt/worker-venv/bin/pip uninstall -y onnxruntime \
 && /opt/worker-venv/bin/pip install "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" \
 && rm -rf /wheels

COPY extra_model_paths.yaml /comfyui/extra_model_paths.yaml
COPY entrypoint.sh /entrypoint.sh
COPY scripts /app/scripts
COPY test_input.json /app/test_input.json
WORKDIR /app

ENTRYPOINT ["/entrypoint.sh"]
