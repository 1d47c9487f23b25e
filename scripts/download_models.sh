#!/usr/bin/env bash
# Fill a models folder with the Wan2.2 files of model sets from the Hugging Face Hub.
# A thin wrapper around `python -m wan_worker.download` (see --help): skips complete files,
# resumes partial ones, verifies the hub's sha256 before the final rename; shared files once.
#   scripts/download_models.sh                 # set i2v-14b, into the dirs ComfyUI searches first
#   scripts/download_models.sh --set i2v-14b,t2v-14b,ti2v-5b,s2v-14b,animate-14b,postprocess
#   scripts/download_models.sh --dest /workspace/models --dry-run
# Environment: HF_TOKEN, HF_ENDPOINT (huggingface_hub), WORKER_PYTHON (default: python3).
set -euo pipefail

py="${WORKER_PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: no Python found ($py); set WORKER_PYTHON to a Python with wan_worker installed" >&2
  exit 1
fi

# From a source checkout, use this tree's package even if it is not installed.
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/src"
if [[ -d "$src/wan_worker" ]]; then
  export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
fi

exec "$py" -m wan_worker.download "$@"
