"""GPU checks: Triton (every dtype, bf16 included; one-pass, its fp32 variant and the recompute
kernels) and chunked on CUDA against the oracle, and the memory contract measured with the CUDA
allocator. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

from mme5.kernels import InfoNCEConfig, OnePassConfig, TileConfig, infonce
from tests.helpers.infonce_cases import assert_close, gpu, loss_and_grads, make_case, oracle

pytestmark = [pytest.mark.gpu, gpu]

CASES = [
    ((37, 101, 48), False, False, 0),
    ((130, 130, 200), True, True, 2),
    ((1000, 3001, 300), False, True, 3),
    ((777, 1500, 96), True, False, 0),
]


# Triton variants of the row-direction loss with gradients: the default one-pass path, the one-pass
# path with fp32 scores and an fp32 grad_c master, and the fused forward / recompute-backward kernels.
ROW_VARIANTS = ("triton-fp32", "triton-recompute")


VARIANT_CONFIGS = {
    "triton-fp32": InfoNCEConfig(
        onepass=OnePassConfig(fp32_scores=True, fp32_grad_accumulator=True, min_chunk_rows=128)
    ),
    "triton-recompute": InfoNCEConfig(one_pass=False),
}


def run(impl, case, symmetric, config=None):
    """Loss and gradients of ``impl`` (or a Triton variant) with ``config`` (None: the variant's or the
    defaults)."""
    config = config or VARIANT_CONFIGS.get(impl)
    impl = "triton" if impl in VARIANT_CONFIGS else impl
    return loss_and_grads(
        lambda a: infonce(
            a.pop("q"), a.pop("c"), a.pop("labels"), symmetric=symmetric, impl=impl, config=config, **a
        ),
        case,
    )


@pytest.mark.parametrize("impl", ["triton", "chunked", *ROW_VARIANTS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, symmetric, dup_ids, extra", CASES, ids=lambda v: str(v))
def test_cuda_matches_reference(impl, dtype, shape, symmetric, dup_ids, extra):
    if impl in ROW_VARIANTS and symmetric:
        pytest.skip("row-direction variants only")
    case = make_case(*shape, dtype, "cuda", dup_ids=dup_ids, extra=extra, seed=shape[0])
    assert_close(run(impl, case, symmetric), oracle(case, symmetric), dtype, f"{impl} {dtype} {shape}")


def test_onepass_with_several_chunks_and_row_blocks_on_cuda():
    """Small chunks (many grad_c accumulations in bf16) and column tiles that do not divide N."""
    config = InfoNCEConfig(onepass=OnePassConfig(block_m=2, block_n=256, num_warps=4, min_chunk_rows=96))
    case = make_case(1001, 2500, 130, torch.bfloat16, "cuda", dup_ids=True, extra=2, seed=11)
    assert_close(
        run("triton", case, False, config), oracle(case, False), torch.bfloat16, "one-pass small chunks"
    )


def test_symmetric_with_looping_forward_programs():
    config = InfoNCEConfig(tiles=TileConfig(forward_programs=3, min_chunk_rows=128))
    case = make_case(1100, 900, 72, torch.bfloat16, "cuda", dup_ids=True, extra=1)
    assert_close(run("triton", case, True, config), oracle(case, True), torch.bfloat16, "looping programs")


def test_auto_is_triton_on_cuda():
    case = make_case(9, 12, 4, torch.bfloat16, "cuda")
    loss = infonce(case["q"].requires_grad_(), case["c"], case["labels"], impl="auto")
    assert type(loss.grad_fn).__name__ == "TritonInfoNCEBackward" and loss.grad_fn.path == "one-pass"


def peak_extra_bytes(impl, B, N, D, symmetric):
    case = make_case(B, N, D, torch.bfloat16, "cuda")
    q, c = case["q"].requires_grad_(), case["c"].requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    infonce(q, c, case["labels"], 0.05, symmetric=symmetric, impl=impl).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def test_onepass_allocates_only_its_gradients_and_one_chunk_on_cuda():
    """Beyond the inputs: grad_q, grad_c (bf16), one [rows, N] bf16 chunk, and O(B) vectors."""
    from mme5.kernels.config import GPU_ONEPASS
    from mme5.kernels.triton_onepass import chunk_rows

    B = N = 16384
    D = 1024
    peak_extra_bytes("triton", B, N, D, False)  # first call: cuBLAS workspaces, Triton compilation
    extra = peak_extra_bytes("triton", B, N, D, False)
    allowed = (B + N) * D * 2 + chunk_rows(GPU_ONEPASS, B, N, 2) * N * 2 + (8 << 20)
    assert extra <= allowed, f"one-pass: {extra} bytes beyond the inputs, expected at most {allowed}"


@pytest.mark.parametrize("symmetric", [False, True])
def test_memory_contract_on_cuda(symmetric):
    B = N = 8192
    D = 128
    matrix_bf16 = B * N * 2
    assert peak_extra_bytes("reference", B, N, D, symmetric) > 2 * matrix_bf16
    for impl in ("triton", "chunked"):
        extra = peak_extra_bytes(impl, B, N, D, symmetric)
        assert extra < matrix_bf16, f"{impl}: {extra} bytes beyond the inputs (B x N bf16 is {matrix_bf16})"


def _relative_errors(got, want):
    return {k: ((got[k] - want[k]).norm() / want[k].norm()).item() for k in want}


def test_onepass_bf16_error_at_scale_is_close_to_eager():
    """At B = N = 16384 (16 chunks), against fp32 on the same inputs: the one-pass gradients w.r.t. q
    and the temperature are as accurate as the eager bf16 reference (within 1.5x), grad_c, rounded to
    bf16 once per chunk, within 3x (a round-to-nearest CPU emulation of 16 roundings gives 2.3x); with
    fp32 scores and an fp32 grad_c master, all within 1.25x."""
    B = N = 16384
    case = make_case(B, N, 512, torch.bfloat16, "cuda", temp=0.02)
    case["labels"] = torch.arange(B, device="cuda")
    exact = oracle(case, False)[1]
    eager = _relative_errors(run("reference", case, False)[1], exact)
    onepass = _relative_errors(run("triton", case, False)[1], exact)
    fp32_config = InfoNCEConfig(onepass=OnePassConfig(fp32_scores=True, fp32_grad_accumulator=True))
    fp32 = _relative_errors(run("triton", case, False, fp32_config)[1], exact)
    report = f"eager {eager}, one-pass {onepass}, one-pass fp32 {fp32}"
    for name, factor in {"q": 1.5, "c": 3.0, "temperature": 1.5}.items():
        assert onepass[name] <= factor * eager[name] + 1e-4, f"{name}: {report}"
        assert fp32[name] <= 1.25 * eager[name] + 1e-4, f"{name}: {report}"
