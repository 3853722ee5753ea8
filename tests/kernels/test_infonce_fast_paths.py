"""chunked and triton against the reference oracle: values and gradients on odd shapes, per dtype.

On CPU the Triton kernels run under TRITON_INTERPRET=1 (conftest) with 64-wide tiles; bf16 Triton runs
only on a GPU (the interpreter's bf16 dot is wrong), see test_infonce_gpu.py.
"""

from __future__ import annotations

import pytest
import torch
from tests.helpers.infonce_cases import assert_close, loss_and_grads, make_case, oracle
from mme5.kernels.chunked import infonce_chunked
from mme5.kernels.inputs import check_inputs

SHAPES = [(37, 101, 48), (130, 130, 200)]
# (symmetric, duplicate ids, extra logits): every option on at least once per shape
OPTIONS = [(False, False, 0), (True, False, 0), (False, True, 3), (True, True, 2)]


def run_impl(impl, case, symmetric, **impl_kwargs):
    def fn(a):
        x = check_inputs(a["q"], a["c"], a["labels"], a["temperature"], symmetric, a["candidate_ids"],
                         a["extra_logits"])
        if impl == "chunked":
            return infonce_chunked(x, **impl_kwargs)
        from mme5.kernels.triton_infonce import infonce_triton

        return infonce_triton(x)

    return loss_and_grads(fn, case)


@pytest.fixture
def small_triton_tiles():
    """Interpreter-sized tiles, several backward chunks and forward programs that loop."""
    from mme5.kernels import triton_infonce

    if not (torch.cuda.is_available() or triton_infonce.INTERPRETER):
        pytest.skip("triton was imported before TRITON_INTERPRET was set; run tests/kernels on its own")
    triton_infonce.set_tile_config(triton_infonce.TileConfig(
        block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=1, chunk_bytes=1, min_chunk_rows=64,
        forward_programs=2,
    ))
    yield
    triton_infonce.set_tile_config(None)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"sym{int(o[0])}-ids{int(o[1])}-extra{o[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_chunked_matches_reference(shape, options, dtype):
    symmetric, dup_ids, extra = options
    case = make_case(*shape, dtype, dup_ids=dup_ids, extra=extra, seed=sum(shape))
    got = run_impl("chunked", case, symmetric, chunk_rows=16)
    assert_close(got, oracle(case, symmetric), dtype, f"chunked {shape} {options}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"sym{int(o[0])}-ids{int(o[1])}-extra{o[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_triton_matches_reference(shape, options, dtype, small_triton_tiles):
    symmetric, dup_ids, extra = options
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = make_case(*shape, dtype, device, dup_ids=dup_ids, extra=extra, seed=sum(shape))
    got = run_impl("triton", case, symmetric)
    assert_close(got, oracle(case, symmetric), dtype, f"triton {shape} {options}")


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_unnormalised_inputs_and_large_logits(impl, small_triton_tiles):
    """Raw Gaussian embeddings at a low temperature: logits in the hundreds, still exact."""
    device = "cuda" if (impl == "triton" and torch.cuda.is_available()) else "cpu"
    case = make_case(45, 70, 33, torch.float32, device, normalize=False, temp=0.1, dup_ids=True, extra=2)
    got = run_impl(impl, case, True, **({"chunk_rows": 8} if impl == "chunked" else {}))
    assert_close(got, oracle(case, True), torch.float32, f"{impl} large logits")


def test_auto_is_chunked_on_cpu():
    from mme5.kernels import infonce

    case = make_case(9, 12, 4, torch.float32)
    args = (case["q"].requires_grad_(), case["c"], case["labels"])
    loss = infonce(*args, impl="auto")
    assert type(loss.grad_fn).__name__.startswith("ChunkedInfoNCE")


def test_chunked_one_pass_scales_by_incoming_gradient_and_forbids_second_backward():
    case = make_case(40, 55, 24, torch.float32, extra=2)
    leaves = [case["q"].requires_grad_(), case["c"].requires_grad_(), case["temperature"].requires_grad_()]
    from mme5.kernels import infonce

    want = torch.autograd.grad(3.5 * infonce(*leaves[:2], case["labels"], leaves[2], impl="reference"), leaves)
    loss = infonce(*leaves[:2], case["labels"], leaves[2], impl="chunked")
    assert type(loss.grad_fn).__name__ == "ChunkedInfoNCEOnePassBackward"
    got = torch.autograd.grad(3.5 * loss, leaves, retain_graph=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        torch.autograd.grad(loss, leaves)


def test_chunked_without_grad_uses_the_lse_only_forward():
    from mme5.kernels import infonce

    case = make_case(20, 30, 8, torch.float32)
    with torch.no_grad():
        loss = infonce(case["q"].requires_grad_(), case["c"], case["labels"], impl="chunked")
    ref = infonce(case["q"], case["c"], case["labels"], impl="reference")
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dup_ids", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunked_one_pass_with_fixed_temperature(dup_ids, dtype):
    """A float temperature takes the in-place path (no temperature gradient to form)."""
    from mme5.kernels import infonce

    case = make_case(61, 83, 40, dtype, dup_ids=dup_ids, extra=2, seed=7)
    leaves = [case["q"].requires_grad_(), case["c"].requires_grad_(), case["extra_logits"].requires_grad_()]

    def grads(impl, q, c):
        loss = infonce(q, c, case["labels"], 0.05, candidate_ids=case["candidate_ids"],
                       extra_logits=leaves[2], impl=impl)
        return loss, torch.autograd.grad(loss, leaves)

    loss, got = grads("chunked", leaves[0], leaves[1])
    ref_loss, want = grads("reference", leaves[0].float(), leaves[1].float())
    loss_tol, grad_tol = {torch.float32: (1e-5, 2e-4), torch.bfloat16: (1e-2, 3e-2)}[dtype]
    assert abs(loss.item() - ref_loss.item()) <= loss_tol * abs(ref_loss.item())
    for g, w in zip(got, want):
        assert (g.float() - w.float()).abs().max() <= grad_tol * w.float().abs().max()
