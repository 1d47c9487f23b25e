#!/usr/bin/env bash
# Creates the venv the real-ComfyUI test tier runs ComfyUI in (and tests/tinywan, which needs
# torch, safetensors and sentencepiece): torch as the Dockerfile pins it where the registry has
# that build, else the newest torch this machine's index offers; then ComfyUI's own requirements
# without their torch lines, so pip cannot swap the torch we chose.
# Usage: scripts/comfyui-venv.sh VENV_DIR COMFYUI_DIR
set -euo pipefail
venv=${1:?usage: comfyui-venv.sh VENV_DIR COMFYUI_DIR}
comfy=${2:?usage: comfyui-venv.sh VENV_DIR COMFYUI_DIR}
[[ -f "$comfy/requirements.txt" ]] || { echo "no ComfyUI at $comfy (requirements.txt missing)" >&2; exit 2; }

# The Dockerfile's pins (ARG TORCH_VERSION / TORCHVISION_VERSION), read from it: one source.
here=$(cd "$(dirname "$0")/.." && pwd)
torch=$(sed -n 's/^ARG TORCH_VERSION=//p' "$here/Dockerfile")
vision=$(sed -n 's/^ARG TORCHVISION_VERSION=//p' "$here/Dockerfile")

python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
if ! "${pip[@]}" "torch==$torch" "torchvision==$vision" "torchaudio==$torch"; then
  echo "torch $torch is not available here; using torch 2.14.1 / torchvision 0.29.1 (no torchaudio:" \
       "ComfyUI's audio nodes will not load; Wan2.2 video does not need them)" >&2
  "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
grep -v -E '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*($|[<>=!~;#])' "$comfy/requirements.txt" > "$reqs"
# requests: ComfyUI's server imports it (app/frontend_management.py) but its requirements do not
# list it, and huggingface_hub no longer brings it in. The Dockerfile adds it the same way.
"${pip[@]}" -r "$reqs" requests
"$venv/bin/python" -c 'import torch, safetensors, sentencepiece, av; print("comfyui venv: torch", torch.__version__)'
