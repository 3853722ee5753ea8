#!/usr/bin/env bash
# GPU check of everything but the kernels (those: scripts/gpu_kernels_check.sh), unattended, from the
# repository root: the gpu-marked tests outside tests/kernels, i.e. the encoder in bf16 with DoRA and
# gradient checkpointing and with int8/nf4 + LoRA, GradCache on CUDA, export -> load on CUDA, and one
# step under Lightning's fsdp (FSDP1, CUDA only) and fsdp2 on one GPU against the plain step, with
# modality-skewed batches (lockstep forwards). Writes gpu.txt and pytest_system.log under $OUT.
# About 2-3 minutes on an H100. Needs python3 with CUDA torch, transformers, peft, lightning, pytest,
# scikit-image (test photos) and bitsandbytes; packages.txt says which are missing.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh || exit 1  # sets OUT (default benchmarks/results/gpu) and PY
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/tests"  # the Lightning step script imports test helpers
$PY - <<'PY' | tee "$OUT/packages.txt"
import importlib.util
need = ["transformers", "peft", "lightning", "skimage", "bitsandbytes", "safetensors", "webdataset"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("missing python packages (their tests will fail or skip):", ", ".join(missing) or "none")
PY

timeout "${TEST_TIMEOUT:-420}" $PY -m pytest -m gpu tests --ignore=tests/kernels -q -p no:cacheprovider 2>&1 \
  | tee "$OUT/pytest_system.log"
exit "${PIPESTATUS[0]}"
