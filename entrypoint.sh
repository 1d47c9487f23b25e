#!/usr/bin/env bash
# Container start: report the model volume, start ComfyUI in the background, exec the worker.
# Every path comes from the environment (container defaults below), so tests run this script
# outside a container with a stand-in ComfyUI main.py.
set -euo pipefail

export COMFY_DIR="${COMFY_DIR:-/comfyui}"
export COMFY_PORT="${COMFY_PORT:-8188}"
export COMFY_HOST="127.0.0.1:${COMFY_PORT}"
export COMFY_PID_FILE="${COMFY_PID_FILE:-/tmp/comfyui.pid}"
export EXTRA_MODEL_PATHS="${EXTRA_MODEL_PATHS:-${COMFY_DIR}/extra_model_paths.yaml}"
COMFY_PYTHON="${COMFY_PYTHON:-/opt/venv/bin/python}"
WORKER_PYTHON="${WORKER_PYTHON:-/opt/venv/bin/python}"
COMFY_ARGS="${COMFY_ARGS:-}"

log() { echo "[entrypoint] $*"; }

step_pid=""
comfy_pid=""
prefetch_pid=""
stop() {
  log "stopping"
  for pid in "$step_pid" "$comfy_pid" "$prefetch_pid"; do
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  exit 0
}
trap stop TERM INT

# Runs a start-up step in the background and waits, so a SIGTERM is handled at once (a download
# can take many minutes) rather than when the step ends.
step() {
  "$@" &
  step_pid=$!
  wait "$step_pid"
}

# 1. The model volume: report it; missing models do not stop the worker (jobs get the clear error).
#    AUTO_DOWNLOAD_MODELS: false, true (= i2v-14b) or model sets (i2v-14b,t2v-14b,ti2v-5b,s2v-14b,animate-14b or all).
auto_sets="${AUTO_DOWNLOAD_MODELS:-false}"
case "$auto_sets" in
  true) auto_sets="i2v-14b" ;;
  false | "") auto_sets="" ;;
esac
if [[ -n "$auto_sets" ]]; then
  log "AUTO_DOWNLOAD_MODELS=${AUTO_DOWNLOAD_MODELS}: fetching any missing model files of set(s) $auto_sets"
  step "$WORKER_PYTHON" -m wan_worker.download --set "$auto_sets" || log "model download failed; jobs will say what is missing"
fi
step "$WORKER_PYTHON" -m wan_worker.models || log "not every model set is complete (see 'This volume can serve' above); jobs of an incomplete set fail with MODELS_MISSING or MODEL_DAMAGED until it is"
step_pid=""

# 2. ComfyUI on loopback only, its log lines prefixed. With setpriv it gets SIGTERM when the
#    worker (this process after exec) exits, so stopping the container's main process stops both.
read -r -a extra_args <<< "$COMFY_ARGS"
launcher=()
if command -v setpriv >/dev/null 2>&1; then launcher=(setpriv --pdeathsig TERM); fi
(cd "$COMFY_DIR" && exec "${launcher[@]}" "$COMFY_PYTHON" -u main.py --listen 127.0.0.1 \
  --port "$COMFY_PORT" --extra-model-paths-config "$EXTRA_MODEL_PATHS" --disable-auto-launch \
  --disable-metadata --disable-api-nodes "${extra_args[@]}") > >(sed -u 's/^/[comfyui] /') 2>&1 &
comfy_pid=$!
echo "$comfy_pid" > "$COMFY_PID_FILE"
log "ComfyUI starting (pid $comfy_pid) on $COMFY_HOST"

# 3. PREFETCH_MODELS (off, auto or model sets): read the sets' files into the page cache while
#    ComfyUI boots and the first jobs run; in the background, so it never delays readiness. It
#    stops on SIGTERM, sent by setpriv when the worker exits.
case "${PREFETCH_MODELS:-}" in
  "" | false | off | no | 0) ;;
  *)
    "${launcher[@]}" "$WORKER_PYTHON" -u -m wan_worker.prefetch &
    prefetch_pid=$!
    log "prefetching model set(s) ${PREFETCH_MODELS} in the background (pid $prefetch_pid)"
    ;;
esac

# 4. The worker replaces this shell; the container's arguments pass through to the RunPod SDK.
#    SERVE_API_LOCALLY serves RunPod's local test API; SERVE_API_HOST is 0.0.0.0 by default so that
#    `docker run -p 8000:8000` reaches it; set 127.0.0.1 with `--network host`, or 0.0.0.0 listens on
#    every interface of the machine.
worker_args=("$@")
if [[ "${SERVE_API_LOCALLY:-false}" == "true" ]]; then
  worker_args+=(--rp_serve_api --rp_api_host "${SERVE_API_HOST:-0.0.0.0}" --rp_api_port "${SERVE_API_PORT:-8000}")
fi
trap - TERM INT
exec "$WORKER_PYTHON" -m wan_worker "${worker_args[@]}"
