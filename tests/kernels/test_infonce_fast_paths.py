"""chunked and triton against the reference oracle: values and gradients on odd shapes, per dtype.

On CPU the Triton kernels run under TRITON_INTERPRET=1 (conftest) with 64-wide tiles; bf16 Triton runs
only on a GPU (the interpreter's bf16 dot is wrong), see test_infonce_gpu.py.
"""

from __future__ import annotations

import pytest
import torch

from mme5.kernels import InfoNCEConfig, TileConfig
from mme5.kernels.chunked import infonce_chunked
from mme5.kernels.inputs import check_inputs
from tests.helpers.infonce_cases import assert_close, loss_and_grads, make_case, oracle

SHAPES = [(37, 101, 48), (130, 130, 200)]
# (symmetric, duplicate ids, extra logits): every option on at least once per shape
OPTIONS = [(False, False, 0), (True, False, 0), (False, True, 3), (True, True, 2)]


def run_impl(impl, case, symmetric, config=None):
    def fn(a):
        x = check_inputs(
            a["q"], a["c"], a["labels"], a["temperature"], symmetric, a["candidate_ids"], a["extra_logits"]
        )
        if impl == "chunked":
            return infonce_chunked(x, config)
        from mme5.kernels.triton_infonce import infonce_triton

        return infonce_triton(x, config)

    return loss_and_grads(fn, case)


@pytest.fixture
def small_triton_tiles():
    """Interpreter-sized tiles, several backward chunks and forward programs that loop."""
    from mme5.kernels import config

    if not (torch.cuda.is_available() or config.INTERPRETER):
        pytest.skip("triton was imported before TRITON_INTERPRET was set; run tests/kernels on its own")
    return InfoNCEConfig(
        tiles=TileConfig(
            block_m=64,
            block_n=64,
            block_k=64,
            num_warps=4,
            num_stages=1,
            chunk_bytes=1,
            min_chunk_rows=64,
            forward_programs=2,
        )
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"sym{int(o[0])}-ids{int(o[1])}-extra{o[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_chunked_matches_reference(shape, options, dtype):
    symmetric, dup_ids, extra = options
    case = make_case(*shape, dtype, dup_ids=dup_ids, extra=extra, seed=sum(shape))
    got = run_impl("chunked", case, symmetric, InfoNCEConfig(chunk_rows=16))
    assert_close(got, oracle(case, symmetric), dtype, f"chunked {shape} {options}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"sym{int(o[0])}-ids{int(o[1])}-extra{o[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_triton_matches_reference(shape, options, dtype, small_triton_tiles):
    symmetric, dup_ids, extra = options
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = make_case(*shape, dtype, device, dup_ids=dup_ids, extra=extra, seed=sum(shape))
    got = run_impl("triton", case, symmetric, small_triton_tiles)
    assert_close(got, oracle(case, symmetric), dtype, f"triton {shape} {options}")


@pytest.mark.parametrize("impl", ["chunked", "triton"])
def test_unnormalised_inputs_and_large_logits(impl, small_triton_tiles):
    """Raw Gaussian embeddings at a low temperature: logits in the hundreds, still exact."""
    device = "cuda" if (impl == "triton" and torch.cuda.is_available()) else "cpu"
    case = make_case(45, 70, 33, torch.float32, device, normalize=False, temp=0.1, dup_ids=True, extra=2)
    config = InfoNCEConfig(chunk_rows=8) if impl == "chunked" else small_triton_tiles
    got = run_impl(impl, case, True, config)
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

    want = torch.autograd.grad(
        3.5 * infonce(*leaves[:2], case["labels"], leaves[2], impl="reference"), leaves
    )
    loss = infonce(*leaves[:2], case["labels"], leaves[2], impl="chunked")
    assert type(loss.grad_fn).__name__ == "ChunkedInfoNCEBackward" and loss.grad_fn.path == "one-pass"
    got = torch.autograd.grad(3.5 * loss, leaves, retain_graph=True)
    for g, w in zip(got, want, strict=True):
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
        loss = infonce(
            q, c, case["labels"], 0.05, candidate_ids=case["candidate_ids"], extra_logits=leaves[2], impl=impl
        )
        return loss, torch.autograd.grad(loss, leaves)

    loss, got = grads("chunked", leaves[0], leaves[1])
    ref_loss, want = grads("reference", leaves[0].float(), leaves[1].float())
    loss_tol, grad_tol = {torch.float32: (1e-5, 2e-4), torch.bfloat16: (1e-2, 3e-2)}[dtype]
    assert abs(loss.item() - ref_loss.item()) <= loss_tol * abs(ref_loss.item())
    for g, w in zip(got, want, strict=True):
        assert (g.float() - w.float()).abs().max() <= grad_tol * w.float().abs().max()


def test_chunked_one_pass_off_takes_the_recompute_path_for_the_row_loss():
    """``InfoNCEConfig(one_pass=False)``: the row loss with gradients recomputes in backward instead."""
    from mme5.kernels import infonce

    case = make_case(37, 101, 48, torch.float32, dup_ids=True, extra=3, seed=4)

    def fn(a):
        loss = infonce(
            a.pop("q"),
            a.pop("c"),
            a.pop("labels"),
            impl="chunked",
            config=InfoNCEConfig(one_pass=False, chunk_rows=16),
            **a,
        )
        assert type(loss.grad_fn).__name__ == "ChunkedInfoNCEBackward" and loss.grad_fn.path == "recompute"
        assert not hasattr(loss.grad_fn, "grads"), "the recompute path keeps no gradients on the node"
        return loss

    assert_close(loss_and_grads(fn, case), oracle(case, False), torch.float32, "chunked recompute row loss")


def test_each_graph_keeps_the_configuration_its_forward_ran_with(small_triton_tiles):
    """Two symmetric losses built with different tile configurations, backward in the reverse order:
    each backward runs with its own forward's configuration (on ``ctx``), and both match the oracle."""
    other = InfoNCEConfig(
        tiles=TileConfig(
            block_m=32, block_n=16, block_k=16, num_warps=4, num_stages=1, chunk_bytes=1, min_chunk_rows=32
        )
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = make_case(37, 101, 48, torch.float32, device, dup_ids=True, extra=2, seed=9)
    want = oracle(case, True)
    from mme5.kernels import infonce

    losses, leaves = [], []
    for config in (small_triton_tiles, other):
        q, c = case["q"].clone().requires_grad_(), case["c"].clone().requires_grad_()
        loss = infonce(
            q,
            c,
            case["labels"],
            case["temperature"],
            symmetric=True,
            candidate_ids=case["candidate_ids"],
            extra_logits=case["extra_logits"],
            impl="triton",
            config=config,
        )
        assert loss.grad_fn.path == "recompute"
        assert loss.grad_fn.config.tiles is config.tiles
        assert loss.grad_fn.config.onepass is not None, "None fields are filled from the defaults"
        losses.append(loss)
        leaves.append((q, c))
    for loss, (q, c) in reversed(list(zip(losses, leaves, strict=True))):
        gq, gc = torch.autograd.grad(loss, [q, c])
        torch.testing.assert_close(loss.detach(), want[0], rtol=1e-5, atol=1e-6)
        for got, ref in ((gq, want[1]["q"]), (gc, want[1]["c"])):
            assert (got - ref).abs().max() <= 2e-4 * ref.abs().max() + 1e-7
