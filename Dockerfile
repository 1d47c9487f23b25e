# wan-worker: code only (no models; they live on a RunPod network volume).
# Build: make image (or: docker build --network host -t wan-worker .). One Dockerfile for here and
# anywhere: a plain Debian/Python base, PyTorch's CUDA 12.8 wheels from PyPI (they carry the CUDA
# and cuDNN libraries: no CUDA base image), ComfyUI at the pinned release or from a local tree.
ARG BASE_IMAGE=debian:bookworm-slim

# --- stage 1: ComfyUI's source and our wheel (curl, pip's build tools and caches stay here)
FROM ${BASE_IMAGE} AS build
# pip verifies TLS against the system's CA bundle (which holds a proxy's CA when the base trusts it)
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# COMFYUI_SOURCE=release: the tagged release from GitHub; local: the tree `make image COMFYUI_DIR=...`
# copied into docker/comfyui (CI: ../shared/comfyui/src), whose version must be COMFYUI_VERSION.
ARG COMFYUI_VERSION=0.3.64
ARG COMFYUI_SOURCE=release
COPY docker/ /tmp/docker/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if [ "$COMFYUI_SOURCE" = local ]; then \
      [ -f /tmp/docker/comfyui/main.py ] || { echo "COMFYUI_SOURCE=local but docker/comfyui holds no ComfyUI (make image COMFYUI_DIR=...)" >&2; exit 1; }; \
      mv /tmp/docker/comfyui /comfyui; \
    elif [ "$COMFYUI_SOURCE" = release ]; then \
      mkdir /comfyui \
      && curl -fsSL "https://github.com/comfyanonymous/ComfyUI/archive/refs/tags/v${COMFYUI_VERSION}.tar.gz" \
         | tar -xz --strip-components=1 -C /comfyui; \
    else echo "COMFYUI_SOURCE is release or local, not '$COMFYUI_SOURCE'" >&2; exit 1; fi \
 && if ! grep -q "^__version__ = \"${COMFYUI_VERSION}\"" /comfyui/comfyui_version.py; then \
      echo "the ComfyUI tree is not version ${COMFYUI_VERSION}: $(cat /comfyui/comfyui_version.py)" >&2; exit 1; fi
# ComfyUI's requirements without torch (installed first, pinned), its tests and caches out.
RUN grep -v -E '^(torch|torchvision|torchaudio)[[:space:]]*($|[<>=!~;#])' /comfyui/requirements.txt > /comfyui-requirements.txt \
 && rm -rf /comfyui/tests /comfyui/tests-unit /comfyui/.git /comfyui/.github /comfyui/input/* /comfyui/output/* \
 && find /comfyui -depth -name __pycache__ -exec rm -rf {} +
# The worker's dependencies from pyproject.toml alone (so a code change keeps that layer cached),
# with onnxruntime-gpu in place of onnxruntime (one module, two builds: the CUDA provider).
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    | sed -E 's/^onnxruntime([<>=! ].*)?$/onnxruntime-gpu==1.22.0/' > /worker-requirements.txt \
 && grep -q '^onnxruntime-gpu==' /worker-requirements.txt
COPY README.md ./
COPY src ./src
# the bundled graphs: the build maps workflows/ into the wheel as wan_worker/workflows
COPY workflows ./workflows
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

# --- stage 2: the runtime image
FROM ${BASE_IMAGE}
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    COMFY_DIR=/comfyui \
    COMFY_PYTHON=/opt/venv/bin/python \
    WORKER_PYTHON=/opt/venv/bin/python \
    HF_HUB_DISABLE_TELEMETRY=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python (Debian's 3.11 on the default base; a python:3.x base brings its own) and the CA bundle.
# PyAV's wheels bring their own ffmpeg; setpriv (util-linux) is in every Debian base.
RUN apt-get update \
 && if command -v python3 >/dev/null; then extra=(); else extra=(python3 python3-venv); fi \
 && apt-get install -y --no-install-recommends ca-certificates "${extra[@]}" \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY docker/slim.sh /usr/local/bin/slim-venv

# Heaviest and slowest-changing first: PyTorch with its CUDA 12.8 libraries (PyPI's default build;
# TORCH_INDEX_URL picks another index, e.g. another CUDA build), in the one venv ComfyUI and the
# worker share: onnxruntime-gpu then loads the very same CUDA and cuDNN libraries.
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ARG TORCH_INDEX_URL=
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCH_VERSION}" \
 && slim-venv /opt/venv

# ComfyUI's requirements (torch is not swapped: pip keeps the installed one). requests: ComfyUI's
# server imports it (app/frontend_management.py) without listing it.
COPY --from=build /comfyui-requirements.txt /tmp/
RUN /opt/venv/bin/pip install -r /tmp/comfyui-requirements.txt requests \
 && rm /tmp/comfyui-requirements.txt && slim-venv /opt/venv

# The worker's dependencies, onnxruntime-gpu without its [cuda,cudnn] extras: the CUDA runtime,
# cuBLAS, cuFFT, cuRAND and cuDNN it needs are torch's, already in this venv.
COPY --from=build /worker-requirements.txt /tmp/
RUN /opt/venv/bin/pip install -r /tmp/worker-requirements.txt \
 && rm /tmp/worker-requirements.txt && slim-venv /opt/venv

# ComfyUI and the worker itself: a code change rebuilds from here down, in seconds.
COPY --from=build /comfyui /comfyui
COPY --from=build /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
COPY extra_model_paths.yaml /comfyui/extra_model_paths.yaml
# the worker's own ComfyUI nodes (RIFE frame interpolation), loaded by ComfyUI at start
COPY comfyui_nodes/wan_worker_nodes /comfyui/custom_nodes/wan_worker_nodes
COPY entrypoint.sh /entrypoint.sh
COPY scripts/download_models.sh /app/scripts/download_models.sh
COPY test_input.json /app/test_input.json
WORKDIR /app

ENTRYPOINT ["/entrypoint.sh"]
