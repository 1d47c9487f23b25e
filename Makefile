# Two commands set up everything: `make test` and `make dry-run`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test dry-run lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not comfyui"

# Runs test_input.json once through the real RunPod SDK in dry-run mode: no GPU, ComfyUI or models.
dry-run: $(STAMP)
	EXTRA_MODEL_PATHS=$(CURDIR)/extra_model_paths.yaml RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true \
		$(PY) -m wan_worker

# The worker's cost per job against the budgets of DESIGN.md (docs/performance.md); a benchmark,
# not a test: CI does not run it. `make bench BENCH_ARGS=--quick` for a smoke run.
.PHONY: bench
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# shellcheck on every shell script, hadolint on the Dockerfile (both from PyPI, in .venv).
lint: $(STAMP)
	$(VENV)/bin/shellcheck entrypoint.sh scripts/*.sh .ci/run
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
