# Sourced by the scripts/gpu_*_check.sh scripts (from the repository root): checks
# CUDA, records the card, makes `mme5` importable from this tree when it is not installed, and installs
# the wheels carried in tmp/whl (the GPU machines carry torch + triton but not always this package or
# jsonargparse, which every command line of mme5 and tools/ parses its arguments with).
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # real kernels, not the interpreter
$PY -c 'import torch, triton; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' || return 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null | tee "$OUT/gpu.txt"

if ! $PY -c 'import mme5.kernels' 2>/dev/null; then
  stage=$(mktemp -d)
  cp -r mme5 "$stage/mme5" && cp -r kernels "$stage/mme5/kernels"
  export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONSAFEPATH=1  # keep ./mme5 (which lacks kernels/) from shadowing the staged package
fi
# Wheels carried in tmp/whl (git-ignored; the machines have no network): jsonargparse and its
# docstring-parser / typeshed-client, and e.g. Inf-CL for the benchmark's peer:
#   pip download jsonargparse==4.53.0 docstring-parser typeshed-client inf-cl==1.2.1 --no-deps -d tmp/whl
# (then run with carry=["tmp/whl"]).
if compgen -G 'tmp/whl/*.whl' >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/mme5-site tmp/whl/*.whl \
    && export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/mme5-site"
fi
$PY -c 'import mme5.kernels' || return 1
