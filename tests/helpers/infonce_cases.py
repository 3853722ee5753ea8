"""Shared inputs and comparison helpers for the kernel tests."""

from __future__ import annotations

import pytest
import torch

from mme5.kernels import infonce

# Tolerances relative to the oracle's largest magnitude: (loss, gradients).
TOLERANCES = {
    torch.float32: (1e-5, 2e-4),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (1e-2, 3e-2),
}


def make_case(B, N, D, dtype, device="cpu", *, seed=0, dup_ids=False, extra=0, normalize=True, temp=0.05):
    """Random queries/candidates, labels anywhere in c (some shared), optional duplicate content ids."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, generator=g)
    c = torch.randn(N, D, generator=g)
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        c = torch.nn.functional.normalize(c, dim=1)
    labels = torch.randint(0, N, (B,), generator=g)
    labels[1] = labels[0]  # two queries share one positive
    ids = None
    if dup_ids:
        ids = torch.randint(0, max(2, N // 3), (N,), generator=g)
    extra_logits = torch.randn(B, extra, generator=g) * 5 if extra else None
    case = {
        "q": q.to(device=device, dtype=dtype),
        "c": c.to(device=device, dtype=dtype),
        "labels": labels.to(device),
        "temperature": torch.tensor(temp, device=device),
        "candidate_ids": None if ids is None else ids.to(device),
        "extra_logits": None if extra_logits is None else extra_logits.to(device),
    }
    return case


def loss_and_grads(fn, case):
    """Loss and gradients w.r.t. q, c, temperature and extra_logits (fp32 copies)."""
    leaves = {k: case[k].detach().clone().requires_grad_() for k in ("q", "c", "temperature")}
    if case["extra_logits"] is not None:
        leaves["extra_logits"] = case["extra_logits"].detach().clone().requires_grad_()
    args = dict(case, **leaves)
    loss = fn(args)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach().float(), {k: g.float() for k, g in zip(leaves, grads, strict=False)}


def oracle(case, symmetric):
    """The reference on fp32 copies of the (already rounded) inputs."""
    up = dict(case, q=case["q"].float(), c=case["c"].float())
    return loss_and_grads(
        lambda a: infonce(
            a.pop("q"), a.pop("c"), a.pop("labels"), symmetric=symmetric, impl="reference", **a
        ),
        up,
    )


def assert_close(got, want, dtype, what):
    loss_tol, grad_tol = TOLERANCES[dtype]
    (loss, grads), (loss_ref, grads_ref) = got, want
    assert loss.dtype == torch.float32
    assert abs(loss.item() - loss_ref.item()) <= loss_tol * max(1.0, abs(loss_ref.item())), (
        f"{what}: loss {loss.item()} vs {loss_ref.item()}"
    )
    for name, ref in grads_ref.items():
        err = (grads[name] - ref).abs().max().item()
        scale = ref.abs().max().item()
        assert err <= grad_tol * scale + 1e-7, f"{what}: grad {name} off by {err} (max |ref| {scale})"


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
