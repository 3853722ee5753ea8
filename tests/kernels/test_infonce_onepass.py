"""The one-pass Triton path (cuBLAS products + fused row kernel) against the reference oracle.

On CPU the row kernel runs under TRITON_INTERPRET=1 (conftest) and the products are CPU matmuls; the
kernel has no tl.dot and no atomics, so bf16 runs in the interpreter too. The configurations below
force several chunks, a partial last chunk, partial row blocks and partial column tiles.
"""

from __future__ import annotations

import pytest
import torch

from mme5.kernels import InfoNCEConfig, OnePassConfig, infonce
from mme5.kernels.inputs import check_inputs
from tests.helpers.infonce_cases import assert_close, loss_and_grads, make_case, oracle

SHAPES = [(37, 101, 48), (130, 130, 200)]
# (duplicate ids, extra logits)
OPTIONS = [(False, 0), (True, 3)]
CONFIGS = {
    # input-dtype scores, dS in place, grad_c accumulated in the input dtype; 16-row chunks
    "inplace": {"block_m": 8, "block_n": 64, "num_warps": 4, "min_chunk_rows": 16},
    # fp32 scores with a separate dS buffer, fp32 master for grad_c; 24-row chunks (3 row blocks of 8
    # rows per chunk, not a multiple of the 16-row block here), one partial 128-wide column tile
    "fp32": {
        "block_m": 16,
        "block_n": 128,
        "num_warps": 4,
        "min_chunk_rows": 24,
        "fp32_scores": True,
        "fp32_grad_accumulator": True,
    },
}


@pytest.fixture
def onepass():
    """The InfoNCEConfig of a named one-pass configuration (skips where Triton cannot run)."""
    from mme5.kernels import config

    if not (torch.cuda.is_available() or config.INTERPRETER):
        pytest.skip("triton was imported before TRITON_INTERPRET was set; run tests/kernels on its own")
    return lambda name: InfoNCEConfig(onepass=OnePassConfig(**CONFIGS[name]))


def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def triton_loss(config):
    return lambda a: infonce(a.pop("q"), a.pop("c"), a.pop("labels"), impl="triton", config=config, **a)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"ids{int(o[0])}-extra{o[1]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_onepass_matches_reference(config, shape, options, dtype, onepass):
    dup_ids, extra = options
    case = make_case(*shape, dtype, device(), dup_ids=dup_ids, extra=extra, seed=sum(shape) + extra)
    got = loss_and_grads(triton_loss(onepass(config)), case)
    assert_close(got, oracle(case, False), dtype, f"one-pass {config} {shape} {options}")


def test_triton_takes_one_pass_only_for_the_row_loss_with_gradients(onepass):
    config = onepass("inplace")
    case = make_case(20, 30, 8, torch.float32, device())
    q = case["q"].requires_grad_()
    row = infonce(q, case["c"], case["labels"], impl="triton", config=config).grad_fn
    assert type(row).__name__ == "TritonInfoNCEBackward" and row.path == "one-pass"
    symmetric = infonce(q, case["c"], case["labels"], symmetric=True, impl="triton", config=config).grad_fn
    assert type(symmetric).__name__ == "TritonInfoNCEBackward" and symmetric.path == "recompute"
    with torch.no_grad():
        loss = infonce(q, case["c"], case["labels"], impl="triton", config=config)
    ref = infonce(q.detach(), case["c"], case["labels"], impl="reference")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_recompute_kernels_still_serve_the_row_loss_when_asked(shape):
    """``one_pass=False`` keeps the fused-backward kernels reachable (benchmarked as triton-recompute)."""
    from mme5.kernels import config, triton_infonce

    if not (torch.cuda.is_available() or config.INTERPRETER):
        pytest.skip("triton was imported before TRITON_INTERPRET was set")
    case = make_case(*shape, torch.float32, device(), dup_ids=True, extra=2, seed=5)

    def fn(a):
        x = check_inputs(
            a["q"], a["c"], a["labels"], a["temperature"], False, a["candidate_ids"], a["extra_logits"]
        )
        loss = triton_infonce.infonce_triton(x, InfoNCEConfig(one_pass=False))
        assert type(loss.grad_fn).__name__ == "TritonInfoNCEBackward" and loss.grad_fn.path == "recompute"
        return loss

    assert_close(loss_and_grads(fn, case), oracle(case, False), torch.float32, f"recompute {shape}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_onepass_scales_by_incoming_gradient_and_forbids_second_backward(dtype, onepass):
    config = onepass("inplace")
    case = make_case(40, 55, 24, dtype, device(), dup_ids=True, extra=2)
    leaves = [
        case["q"].requires_grad_(),
        case["c"].requires_grad_(),
        case["temperature"].requires_grad_(),
        case["extra_logits"].requires_grad_(),
    ]

    def grads(impl, q, c):
        loss = infonce(
            q,
            c,
            case["labels"],
            leaves[2],
            candidate_ids=case["candidate_ids"],
            extra_logits=leaves[3],
            impl=impl,
            config=config,
        )
        return loss, torch.autograd.grad(-3.5 * loss, leaves, retain_graph=True)

    loss, got = grads("triton", *leaves[:2])
    _, want = grads("reference", leaves[0].float(), leaves[1].float())
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    for name, g, w in zip(("q", "c", "temperature", "extra"), got, want, strict=True):
        err, scale = (g.float() - w.float()).abs().max().item(), w.float().abs().max().item()
        assert err <= tol * scale + 1e-7, f"{name}: off by {err} (max |ref| {scale})"
    with pytest.raises(RuntimeError, match="backward ran twice"):
        torch.autograd.grad(loss, leaves)


def test_onepass_with_fixed_temperature_and_partial_requires_grad(onepass):
    """Only c wants a gradient (no grad_q product), a float temperature (no temperature term)."""
    case = make_case(61, 83, 40, torch.float16, device(), dup_ids=True, extra=2, seed=7)
    c = case["c"].requires_grad_()
    loss = infonce(
        case["q"],
        c,
        case["labels"],
        0.05,
        candidate_ids=case["candidate_ids"],
        extra_logits=case["extra_logits"],
        impl="triton",
        config=onepass("fp32"),
    )
    assert type(loss.grad_fn).__name__ == "TritonInfoNCEBackward" and loss.grad_fn.path == "one-pass"
    (got,) = torch.autograd.grad(loss, [c])
    c32 = case["c"].float().requires_grad_()
    ref = infonce(
        case["q"].float(),
        c32,
        case["labels"],
        0.05,
        candidate_ids=case["candidate_ids"],
        extra_logits=case["extra_logits"],
        impl="reference",
    )
    (want,) = torch.autograd.grad(ref, [c32])
    assert abs(loss.item() - ref.item()) <= 2e-3 * abs(ref.item())
    assert (got.float() - want).abs().max() <= 1e-2 * want.abs().max()


def test_onepass_unnormalised_inputs_and_large_logits(onepass):
    """Raw Gaussian embeddings at a low temperature: logits in the hundreds, still exact in fp32."""
    case = make_case(45, 70, 33, torch.float32, device(), normalize=False, temp=0.1, dup_ids=True, extra=2)
    got = loss_and_grads(triton_loss(onepass("inplace")), case)
    assert_close(got, oracle(case, False), torch.float32, "one-pass large logits")


def test_chunk_rows_follow_the_budget():
    from mme5.kernels.config import GPU_ONEPASS
    from mme5.kernels.triton_onepass import chunk_rows

    # B = N = 32768, bf16 scores in place: 1 % of eager's 13 bytes per score -> 2048 rows (128 MiB).
    assert chunk_rows(GPU_ONEPASS, 32768, 32768, 2) == 2048
    # fp32 scores + bf16 dS: the budget gives fewer rows than the minimum, which wins.
    assert chunk_rows(GPU_ONEPASS, 32768, 32768, 6) == GPU_ONEPASS.min_chunk_rows
    # B = N = 262144: capped by max_chunk_bytes (4 GiB of bf16 -> 8192 rows).
    assert chunk_rows(GPU_ONEPASS, 262144, 262144, 2) * 262144 * 2 == GPU_ONEPASS.max_chunk_bytes
    # Never more than half of B, so no chunk buffer is B x N.
    assert chunk_rows(GPU_ONEPASS, 1500, 1000, 2) == 750
    assert chunk_rows(GPU_ONEPASS, 3, 10, 4) == 2


AOT_SCRIPT = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mme5.kernels.config import GPU_ONEPASS
from mme5.kernels.triton_onepass import _onepass_row_kernel as kernel

aligned = {"N", "stride_s", "stride_ds", "row_start"}
attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
         if n.endswith("_ptr") or n in aligned}
for scores, ds, duplicates, extra in [("bf16", "bf16", True, True), ("fp16", "fp16", False, False),
                                      ("fp32", "bf16", True, False), ("fp32", "fp32", False, True)]:
    key = "*i32" if duplicates else "*i64"
    signature = {"s_ptr": "*" + scores, "ds_ptr": "*" + ds, "labels_ptr": "*i64",
                 "qkey_ptr": key, "ckey_ptr": key}
    signature.update({n: "*fp32" for n in ("inv_t_ptr", "extra_lse_ptr", "lse_ptr", "pos_ptr", "tdot_ptr")})
    signature.update({n: "i32" for n in ("row_start", "num_rows", "N", "stride_s", "stride_ds")})
    constexprs = {"HAS_DUPLICATES": duplicates, "HAS_EXTRA": extra, "BLOCK_M": GPU_ONEPASS.block_m,
                  "BLOCK_N": GPU_ONEPASS.block_n}
    signature.update({n: "constexpr" for n in constexprs})
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": GPU_ONEPASS.num_warps})
    ptx = compiled.asm["ptx"]
    assert "cubin" in compiled.asm and "ld.global.v4" in ptx and "st.global.v4" in ptx, (scores, ds)
    print("compiled", scores, ds, duplicates, extra)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU tests compile and run the kernel for real")
def test_row_kernel_compiles_for_h100_without_a_gpu():
    """The interpreter skips Triton's compiler; compile the row kernel ahead of time for sm_90 (Triton's
    bundled ptxas, no device needed) in the GPU configuration, and check that its loads and stores of
    S and dS are vectorised (16-byte) when the strides allow."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if "ptxas" in result.stderr and ("not found" in result.stderr or "No such file" in result.stderr):
        pytest.skip("Triton's bundled ptxas is missing")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 4, result.stdout
