#!/usr/bin/env sh
# Trims what a pip install left in a venv that nothing in the image ever loads. Run in the same
# RUN as the install (a later layer cannot make an earlier one smaller). Every removal names why.
# usage: slim.sh VENV
set -eu
site=$(echo "${1:?usage: slim.sh VENV}"/lib/python3*/site-packages)
[ -d "$site" ] || { echo "slim.sh: no site-packages under $1" >&2; exit 2; }
before=$(du -sm "$site" | cut -f1)
# C/C++ headers, static libraries and CMake files: the image has no compiler, nothing is built in it.
find "$site" -depth -type d -name include -path '*/nvidia/*' -exec rm -rf {} +
find "$site" -type f -name '*.a' -delete
rm -rf "$site/torch/include" "$site/torch/share/cmake"
# Triton's code: torch only imports it for torch.compile, which needs a C compiler to build
# Triton's launcher (there is none here), and ComfyUI looks for it only on AMD GPUs. 0.5 GB. Its
# dist-info stays, so that pip, seeing torch's requirement met, never downloads it again.
rm -rf "$site/triton"
# NVRTC's ".alt" build: nothing links or opens it (torch loads libnvrtc.so.12). 0.1 GB.
rm -f "$site"/nvidia/cuda_nvrtc/lib/*.alt.so*
# Packages' own test suites (never imported by the packages themselves).
find "$site" -depth -type d -name tests -not -path '*/torch/*' -exec rm -rf {} +
after=$(du -sm "$site" | cut -f1)
echo "slim.sh: $site ${before} MB -> ${after} MB"
