# Two commands set up everything: `make test` and `make dry-run`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-comfyui dry-run lint clean image image-size test-image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not comfyui and not image"

# The real-ComfyUI tier: ComfyUI from COMFYUI_DIR (any checkout; default ../shared/comfyui/src) in its
# own venv (.venv-comfyui: torch as the Dockerfile pins it, then ComfyUI's requirements), tiny
# Wan2.2-shaped models (tests/tinywan.py), one real ComfyUI on 127.0.0.1 for the session.
COMFYUI_DIR ?= ../shared/comfyui/src
COMFY_VENV ?= .venv-comfyui
COMFY_STAMP := $(COMFY_VENV)/.installed

$(COMFY_STAMP): scripts/comfyui-venv.sh
	@test -f "$(COMFYUI_DIR)/main.py" || { echo "no ComfyUI checkout at $(COMFYUI_DIR): set COMFYUI_DIR=/path/to/ComfyUI" >&2; exit 2; }
	bash scripts/comfyui-venv.sh $(COMFY_VENV) $(COMFYUI_DIR)
	touch $(COMFY_STAMP)

test-comfyui: $(STAMP) $(COMFY_STAMP)
	COMFYUI_DIR=$(abspath $(COMFYUI_DIR)) COMFY_PYTHON=$(abspath $(COMFY_VENV))/bin/python \
		$(PY) -m pytest -m comfyui tests/comfyui

# Runs test_input.json once through the real RunPod SDK in dry-run mode: no GPU, ComfyUI or models.
dry-run: $(STAMP)
	EXTRA_MODEL_PATHS=$(CURDIR)/extra_model_paths.yaml RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true \
		$(PY) -m wan_worker

# The worker's cost per job against the budgets of DESIGN.md (docs/performance.md); a benchmark,
# not a test: CI does not run it. `make bench BENCH_ARGS=--quick` for a smoke run;
# `make bench BENCH_ARGS=--comfyui` against the real ComfyUI with tiny models (COMFY_PYTHON, COMFYUI_DIR);
# `make bench BENCH_ARGS=--cold` the first job on a slow FUSE volume (root, /dev/fuse, fuse3; the same).
# `make bench BENCH_ARGS=--profile` cProfile + tracemalloc of handler() per job against the stand-in.
# `make bench BENCH_ARGS=--soak` 200 mixed jobs through one worker on the real ComfyUI: growth and leftovers.
# `make bench BENCH_ARGS=--postprocess` RIFE and Real-ESRGAN per frame at their real sizes (COMFY_PYTHON).
# `make bench BENCH_ARGS=--segments` one 3-segment job against 3 chained jobs on the real ComfyUI.
# `make bench BENCH_ARGS=--preprocess` Animate preprocessing per frame (ONNX stand-ins of the real compute).
.PHONY: bench
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# The container image (Dockerfile). `make image` takes ComfyUI's tagged release from GitHub;
# `make image COMFYUI_LOCAL=../shared/comfyui/src` builds from that local tree instead (copied into
# docker/comfyui, the build context), so nothing comes from anywhere but PyPI and Debian. Needs a
# Docker engine (here: bash ../shared/docker/up.sh). --network host: engines without a bridge.
IMAGE ?= wan-worker:dev
COMFYUI_LOCAL ?=
DOCKER_BUILD_ARGS ?=
image:
	rm -rf docker/comfyui
	@if [ -n "$(COMFYUI_LOCAL)" ]; then \
	  test -f "$(COMFYUI_LOCAL)/main.py" || { echo "no ComfyUI tree at COMFYUI_LOCAL=$(COMFYUI_LOCAL)" >&2; exit 2; }; \
	  echo "ComfyUI from $(COMFYUI_LOCAL)"; \
	  tar -C "$(COMFYUI_LOCAL)" --exclude=.git --exclude=__pycache__ -cf - . | (mkdir -p docker/comfyui && tar -C docker/comfyui -xf -); \
	fi
	docker build --network host -t $(IMAGE) $(if $(COMFYUI_LOCAL),--build-arg COMFYUI_SOURCE=local) $(DOCKER_BUILD_ARGS) .
	rm -rf docker/comfyui

# Uncompressed (docker image inspect) and compressed (each layer through gzip -1, as
# `docker save | gzip -1`) sizes with a table of the layers; fails above the README's limits.
IMAGE_MAX_GB ?= 8.5
IMAGE_MAX_COMPRESSED_GB ?= 5.0
image-size: $(STAMP)
	$(PY) scripts/image_size.py $(IMAGE) --max-gb $(IMAGE_MAX_GB) --max-compressed-gb $(IMAGE_MAX_COMPRESSED_GB)

# The container tier: a container of $(IMAGE) with tests/tinywan's models as its read-only volume,
# ComfyUI on the CPU, real jobs over the RunPod API server (tests/image).
test-image: $(STAMP)
	WAN_IMAGE=$(IMAGE) $(PY) -m pytest -m image tests/image

# shellcheck on every shell script, hadolint on the Dockerfile (both from PyPI, in .venv).
lint: $(STAMP)
	$(VENV)/bin/shellcheck entrypoint.sh scripts/*.sh docker/*.sh .ci/run
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) $(COMFY_VENV) build dist src/*.egg-info .pytest_cache
