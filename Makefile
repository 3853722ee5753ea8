# The two quick-start commands: `make demo` and `make test` (each installs into .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_MARKS_ALL := not gpu and not vllm
PYTEST_MARKS_FAST := not gpu and not vllm and not slow

.PHONY: install demo test test-fast lint format typecheck check bench-kernels vllm-env test-vllm
install:
	VENV=$(VENV) bash scripts/install.sh

demo: install
	$(VENV)/bin/mme5 fit --config configs/demo.yaml

test: install
	$(VENV)/bin/pytest -q -m "$(PYTEST_MARKS_ALL)" tests

# The inner loop: everything but the multi-process and end-to-end runs (under 3 minutes on 2 cores).
test-fast: install
	$(VENV)/bin/pytest -q -m "$(PYTEST_MARKS_FAST)" tests

lint: install
	$(VENV)/bin/ruff check mme5 kernels tools tests
	$(VENV)/bin/ruff format --check mme5 kernels tools tests

format: install
	$(VENV)/bin/ruff check --fix mme5 kernels tools tests
	$(VENV)/bin/ruff format mme5 kernels tools tests

typecheck: install
	$(VENV)/bin/pyright --pythonpath $(PY)

# What CI runs before the tests.
check: lint typecheck

bench-kernels: install
	$(PY) tools/bench_kernels.py --help

# The tests marked vllm (synthesis, serving) through vLLM's CPU build, in its own environment (.venv-vllm).
vllm-env:
	bash scripts/make_vllm_env.sh

test-vllm: vllm-env
	.venv-vllm/bin/python -m pytest -q -m vllm tests
