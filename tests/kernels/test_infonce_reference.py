"""The oracle against a literal per-query loop, and the argument checks of the public entry point."""

from __future__ import annotations

import math

import pytest
import torch

from mme5.kernels import infonce


def literal_loss(q, c, labels, t, symmetric, ids, extra):
    """InfoNCE spelled out one query at a time, in float64."""
    q, c = q.double(), c.double()
    logits = q @ c.T / t
    B, N = logits.shape
    cid = ids if ids is not None else torch.arange(N)
    row = []
    for i in range(B):
        p = int(labels[i])
        terms = [logits[i, j] for j in range(N) if j == p or cid[j] != cid[p]]
        if extra is not None:
            terms += list(extra[i].double())
        row.append(torch.logsumexp(torch.stack(terms), 0) - logits[i, p])
    loss = torch.stack(row).mean()
    if not symmetric:
        return loss
    col = []
    for i in range(B):
        p = int(labels[i])
        terms = [logits[k, p] for k in range(B) if k == i or cid[labels[k]] != cid[p]]
        col.append(torch.logsumexp(torch.stack(terms), 0) - logits[i, p])
    return 0.5 * (loss + torch.stack(col).mean())


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("with_extra", [False, True])
def test_reference_matches_literal_definition(symmetric, with_ids, with_extra):
    g = torch.Generator().manual_seed(3)
    B, N, D = 7, 11, 5
    q, c = torch.randn(B, D, generator=g), torch.randn(N, D, generator=g)
    labels = torch.tensor([0, 0, 4, 10, 5, 3, 4])
    ids = torch.tensor([1, 2, 3, 1, 1, 2, 7, 8, 9, 3, 10]) if with_ids else None
    extra = torch.randn(B, 3, generator=g) if with_extra else None
    got = infonce(
        q, c, labels, 0.7, symmetric=symmetric, candidate_ids=ids, extra_logits=extra, impl="reference"
    )
    want = literal_loss(q, c, labels, 0.7, symmetric, ids, extra)
    assert got.dtype == torch.float32
    assert math.isclose(got.item(), want.item(), rel_tol=1e-5)


def test_temperature_gradient_flows_to_tensor():
    q, c = torch.randn(4, 3), torch.randn(6, 3)
    t = torch.tensor(0.3, requires_grad=True)
    infonce(q, c, torch.tensor([0, 1, 2, 5]), t, impl="reference").backward()
    assert t.grad is not None and torch.isfinite(t.grad) and t.grad.abs() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"impl": "fast"}, "unknown impl 'fast'; expected one of auto, reference, chunked, triton"),
        ({"labels": torch.tensor([0, 9])}, "labels must index the 5 candidates"),
        ({"labels": torch.tensor([0, 1], dtype=torch.int32)}, "labels must be int64 of shape [2]"),
        ({"candidate_ids": torch.tensor([1, 2])}, "candidate_ids must be int64 of shape [5]"),
        ({"extra_logits": torch.randn(3, 2)}, "extra_logits must be a float tensor [2, K]"),
        ({"c": torch.randn(5, 4)}, "q and c must share the embedding size D"),
        ({"q": torch.randn(2, 3).double()}, "q and c must both be float32, float16 or bfloat16"),
        ({"temperature": -1.0}, "temperature must be > 0"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    args = {"q": torch.randn(2, 3), "c": torch.randn(5, 3), "labels": torch.tensor([0, 1])}
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        infonce(args.pop("q"), args.pop("c"), args.pop("labels"), **args)
    assert message in str(err.value)


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    from mme5.kernels import triton_infonce

    monkeypatch.setattr(triton_infonce, "INTERPRETER", False)
    with pytest.raises(ValueError, match="impl='triton' needs CUDA tensors"):
        infonce(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), impl="triton")
