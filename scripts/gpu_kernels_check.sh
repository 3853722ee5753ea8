#!/usr/bin/env bash
# Carry tmp/whl (git-ignored) holding the jsonargparse wheel and its docstring-parser and typeshed-client
# (GPU images lack them and have no network; scripts/gpu_env.sh installs them, see there how to fetch):
# tools/bench_kernels.py parses its arguments with jsonargparse and there is no fallback.
# GPU check of the fused InfoNCE kernels (mme5 issue 3), unattended, from the repository root:
#   1. pytest tests/kernels with CUDA (gpu-marked tests included, no Triton interpreter), among them
#      the one-pass path (kernels/triton_onepass.py) against the oracle in every dtype, its allocation
#      bound, and its bf16 error at B=N=16384 against eager's;
#   2. the bf16 benchmark: B=N in {4096, 16384, 32768} at D=4096 for reference / compile / chunked /
#      triton (the one-pass path for this full step) / triton-recompute (the previous fused-backward
#      kernels) / triton-fp32 (one-pass with fp32 scores and an fp32 grad_c master), the measured bf16
#      matmul rate, and one B=N=262144 point for triton (one-pass);
#   3. a short sweep of the one-pass row-kernel tiles and chunk budget at B=N=32768 (skip: TUNE=0).
# Writes pytest.log, bench.log, kernels_gpu.csv and PNG plots under $OUT (default benchmarks/results/gpu).
# Estimated 4-6 minutes on an H100 (not yet timed; pytest is capped at TEST_TIMEOUT=300 s).
# Needs python3 with CUDA torch + triton (+ pytest, matplotlib); mme5 is staged from this tree when it is
# not installed; jsonargparse comes from tmp/whl (above).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh || exit 1  # sets OUT (default benchmarks/results/gpu) and PY
$PY -c 'import jsonargparse, docstring_parser' 2>/dev/null \
  || { echo "gpu_kernels_check: jsonargparse is missing: carry tmp/whl with its wheels (see scripts/gpu_env.sh)"; exit 1; }

status=0
timeout "${TEST_TIMEOUT:-300}" $PY -m pytest tests/kernels -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" || status=1

bench() { $PY tools/bench_kernels.py --dtype bfloat16 --dims '[4096]' --modes '[full]' --out "$OUT/kernels_gpu.csv" "$@" 2>&1 | tee -a "$OUT/bench.log"; }
bench --sizes '[4096, 16384, 32768]' \
  --providers '[reference, compile, chunked, triton, triton-recompute, triton-fp32, inf_cl]' \
  --matmul_rate true --repeats "${REPEATS:-5}" --plot false || status=1
bench --sizes '[262144]' --providers '[triton]' --warmup 1 --repeats 2 --plot false || status=1
if [ "${TUNE:-1}" != 0 ]; then
  for cfg in '{"block_m": 2, "block_n": 2048, "num_warps": 4}' '{"block_m": 8, "block_n": 1024}' \
             '{"block_m": 2, "block_n": 4096, "num_warps": 16}' '{"chunk_fraction": 0.005, "min_chunk_rows": 512}' \
             '{"chunk_fraction": 0.03}'; do
    bench --sizes '[32768]' --providers '[triton]' --onepass "$cfg" --repeats "${REPEATS:-5}" --plot false || status=1
  done
fi
bench --sizes '[]' --providers '[]' || status=1  # draws the plots from all rows above
exit $status
