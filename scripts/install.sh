#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install mme5 into it.
#   VENV        where the environment lives            (default: .venv)
#   TORCH_SPEC  the torch requirement installed first  (default: torch==2.13.0; pinned because an
#               unpinned torch may pull a multi-GB CUDA build where a CPU build is wanted)
#   EXTRAS      pip extras of mme5                     (default: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --disable-pip-version-check --upgrade pip
$PIP install --quiet --disable-pip-version-check "$TORCH_SPEC"
# setuptools warns on every editable install with a package-dir mapping (kernels/ -> mme5.kernels)
# that folders named like the package may shadow it; that is the layout on purpose, so not shown.
PYTHONWARNINGS="ignore:Editable installation" $PIP install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"
"$VENV/bin/python" -c "import torch, mme5, mme5.kernels; print(f'mme5 {mme5.__version__} installed in $VENV (torch {torch.__version__})')"
