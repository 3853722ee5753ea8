"""GPU checks: Triton (every dtype, bf16 included) and chunked on CUDA against the oracle, and the
memory contract measured with the CUDA allocator. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch
from infonce_cases import assert_close, gpu, loss_and_grads, make_case, oracle
from mme5.kernels import infonce

pytestmark = [pytest.mark.gpu, gpu]

CASES = [
    ((37, 101, 48), False, False, 0),
    ((130, 130, 200), True, True, 2),
    ((1000, 3001, 300), False, True, 3),
    ((777, 1500, 96), True, False, 0),
]


def run(impl, case, symmetric):
    return loss_and_grads(
        lambda a: infonce(a.pop("q"), a.pop("c"), a.pop("labels"), symmetric=symmetric, impl=impl, **a), case
    )


@pytest.mark.parametrize("impl", ["triton", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, symmetric, dup_ids, extra", CASES, ids=lambda v: str(v))
def test_cuda_matches_reference(impl, dtype, shape, symmetric, dup_ids, extra):
    case = make_case(*shape, dtype, "cuda", dup_ids=dup_ids, extra=extra, seed=shape[0])
    assert_close(run(impl, case, symmetric), oracle(case, symmetric), dtype, f"{impl} {dtype} {shape}")


def test_symmetric_with_looping_forward_programs():
    from mme5.kernels import triton_infonce

    triton_infonce.set_tile_config(triton_infonce.TileConfig(forward_programs=3, min_chunk_rows=128))
    try:
        case = make_case(1100, 900, 72, torch.bfloat16, "cuda", dup_ids=True, extra=1)
        assert_close(run("triton", case, True), oracle(case, True), torch.bfloat16, "looping programs")
    finally:
        triton_infonce.set_tile_config(None)


def test_auto_is_triton_on_cuda():
    case = make_case(9, 12, 4, torch.bfloat16, "cuda")
    loss = infonce(case["q"].requires_grad_(), case["c"], case["labels"], impl="auto")
    assert type(loss.grad_fn).__name__.startswith("TritonInfoNCE")


def peak_extra_bytes(impl, B, N, D, symmetric):
    case = make_case(B, N, D, torch.bfloat16, "cuda")
    q, c = case["q"].requires_grad_(), case["c"].requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    infonce(q, c, case["labels"], 0.05, symmetric=symmetric, impl=impl).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("symmetric", [False, True])
def test_memory_contract_on_cuda(symmetric):
    B = N = 8192
    D = 128
    matrix_bf16 = B * N * 2
    assert peak_extra_bytes("reference", B, N, D, symmetric) > 2 * matrix_bf16
    for impl in ("triton", "chunked"):
        extra = peak_extra_bytes(impl, B, N, D, symmetric)
        assert extra < matrix_bf16, f"{impl}: {extra} bytes beyond the inputs (B x N bf16 is {matrix_bf16})"
