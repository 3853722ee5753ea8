# The two quick-start commands: `make demo` and `make test` (each installs into .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench-kernels vllm-env test-vllm
install:
	VENV=$(VENV) bash scripts/install.sh

demo: install
	$(VENV)/bin/mme5 fit --config configs/demo.yaml

test: install
	$(VENV)/bin/pytest -q -m "not gpu and not vllm" tests

lint: install
	$(VENV)/bin/ruff check mme5 kernels tools tests

bench-kernels: install
	$(PY) tools/bench_kernels.py --help

# The synthesis pipeline through vLLM's CPU build, in its own environment (.venv-vllm).
vllm-env:
	bash scripts/make_vllm_env.sh

test-vllm: vllm-env
	.venv-vllm/bin/python -m pytest -q -m vllm tests/synth
