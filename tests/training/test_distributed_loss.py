"""ContrastiveLoss with candidates gathered over 2 gloo processes vs a hand-built single-process oracle.

Each rank holds a slice of one global batch. The oracle materialises the global score matrix in plain
PyTorch. With autograd all-gathers, rank r's gradient w.r.t. its own rows is the sum over ranks of
d loss_r' / d rows, so the contract is: sum_r loss_r = world * L and grad_r / world = dL / d rows_r,
which is exactly what DDP's gradient averaging turns into the single-process update.
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mme5.training.losses import ContrastiveLoss

D, K, TAU = 12, 2, 0.05
CASES = [(hn, sym, masked) for hn in ("shared", "own") for sym in (False, True) for masked in (False, True)]
# Matryoshka: (hard negatives, symmetric, dims, weights); D = 12 is the full dimension
MATRYOSHKA = [("shared", True, [3, 7], [0.5, 2.0]), ("own", False, [5, 12], None)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch(
    sizes: list[int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global q [Bg, D], positives [Bg, D], negatives [Bg*K, D], ids of [positives; negatives]."""
    g = torch.Generator().manual_seed(seed)
    bg = sum(sizes)
    q = F.normalize(torch.randn(bg, D, generator=g, dtype=torch.float32), dim=-1)
    pos = F.normalize(torch.randn(bg, D, generator=g, dtype=torch.float32), dim=-1)
    neg = F.normalize(torch.randn(bg * K, D, generator=g, dtype=torch.float32), dim=-1)
    ids = torch.arange(bg * (1 + K), dtype=torch.int64) + 1000
    # duplicates: query 1's positive reappears as a negative of query 0 and as query 3's positive
    neg[0] = pos[1]
    ids[bg + 0] = ids[1]
    pos[3] = pos[1]
    ids[3] = ids[1]
    return q, pos, neg, ids


def local_slice(sizes: list[int], rank: int, q, pos, neg, ids):
    """Rank ``rank``'s inputs in the Collator layout: q, c = [positives; own negatives], ids."""
    bg, start = sum(sizes), sum(sizes[:rank])
    end = start + sizes[rank]
    c = torch.cat([pos[start:end], neg[start * K : end * K]])
    cid = torch.cat([ids[start:end], ids[bg + start * K : bg + end * K]])
    return q[start:end], c, cid


def oracle(q, pos, neg, ids, hard_negatives: str, symmetric: bool, masked: bool, tau=TAU) -> torch.Tensor:
    """The mean global loss, written out from the definition."""
    TAU = tau
    bg = q.shape[0]
    rows = torch.arange(bg)
    pos_ids, neg_ids = ids[:bg], ids[bg:]
    s_pos = q @ pos.T / TAU  # [Bg, Bg]
    s_neg = (
        (q @ neg.T / TAU)
        if hard_negatives == "shared"
        else (q[:, None, :] * neg.view(bg, K, -1)).sum(-1) / TAU
    )
    if masked:
        s_pos = s_pos.masked_fill(
            (pos_ids[None, :] == pos_ids[:, None]) & (rows[None, :] != rows[:, None]), float("-inf")
        )
        other = neg_ids[None, :] if hard_negatives == "shared" else neg_ids.view(bg, K)
        s_neg = s_neg.masked_fill(other == pos_ids[:, None], float("-inf"))
    loss = F.cross_entropy(torch.cat([s_pos, s_neg], dim=1), rows)
    if symmetric:
        col = pos @ q.T / TAU  # [positive j, query k]
        if masked:
            col = col.masked_fill(
                (pos_ids[None, :] == pos_ids[:, None]) & (rows[None, :] != rows[:, None]), float("-inf")
            )
        loss = (loss + F.cross_entropy(col, rows)) / 2
    return loss


def _worker(rank: int, world: int, port: int, sizes: list[int], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        data = global_batch(sizes)
        for hn, sym, masked in CASES:
            q, c, cid = (t.clone() for t in local_slice(sizes, rank, *data))
            q.requires_grad_(True)
            c.requires_grad_(True)
            fn = ContrastiveLoss(
                temperature=TAU,
                symmetric=sym,
                hard_negatives=hn,
                impl="reference",
                mask_duplicates=masked,
                learnable_temperature=True,
            )
            loss, stats = fn(q, c, K, cid)
            loss.backward()
            results[(hn, sym, masked)] = (loss.detach(), q.grad, c.grad, fn.log_temperature.grad, stats)
        for hn, sym, dims, weights in MATRYOSHKA:
            q, c, cid = (t.clone() for t in local_slice(sizes, rank, *data))
            q.requires_grad_(True)
            c.requires_grad_(True)
            fn = ContrastiveLoss(
                temperature=TAU,
                symmetric=sym,
                hard_negatives=hn,
                impl="chunked",
                learnable_temperature=True,
                matryoshka_dims=dims,
                matryoshka_weights=weights,
            )
            loss, stats = fn(q, c, K, cid)
            loss.backward()
            results[("matryoshka", hn, sym)] = (loss.detach(), q.grad, c.grad, fn.log_temperature.grad, stats)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def run_ranks(sizes: list[int]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "res")
        mp.spawn(_worker, args=(len(sizes), free_port(), sizes, out), nprocs=len(sizes), join=True)
        return [torch.load(f"{out}.{r}", weights_only=False) for r in range(len(sizes))]


@pytest.fixture(scope="module", params=[[3, 3], [4, 2]], ids=["even", "uneven"])
def ranked(request):
    return request.param, run_ranks(request.param)


@pytest.mark.parametrize("hard_negatives,symmetric,masked", CASES)
def test_gathered_loss_matches_global_oracle(ranked, hard_negatives, symmetric, masked):
    sizes, results = ranked
    world = len(sizes)
    q, pos, neg, ids = (t.clone() for t in global_batch(sizes))
    log_t = torch.tensor(TAU, dtype=torch.float32).log().requires_grad_(True)
    for t in (q, pos, neg):
        t.requires_grad_(True)
    want = oracle(q, pos, neg, ids, hard_negatives, symmetric, masked, tau=log_t.exp())
    want.backward()
    key = (hard_negatives, symmetric, masked)
    # the losses of all ranks add up to world x the global mean loss
    got = sum(r[key][0] for r in results)
    torch.testing.assert_close(got, world * want.detach(), rtol=1e-5, atol=1e-5)
    for rank, r in enumerate(results):
        _, gq, gc, _, stats = r[key]
        start, end = sum(sizes[:rank]), sum(sizes[: rank + 1])
        want_c = torch.cat([pos.grad[start:end], neg.grad[start * K : end * K]])
        torch.testing.assert_close(gq / world, q.grad[start:end], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gc / world, want_c, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stats["loss"], want.detach(), rtol=1e-5, atol=1e-5)
        assert stats["queries"].item() == sum(sizes)
    # the temperature gradient: DDP averages it over ranks
    t_grad = sum(r[key][3] for r in results) / world
    torch.testing.assert_close(t_grad, log_t.grad.reshape(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hard_negatives,symmetric,dims,weights", MATRYOSHKA)
def test_gathered_matryoshka_matches_global_oracle(ranked, hard_negatives, symmetric, dims, weights):
    """Across ranks the Matryoshka loss is the single-process sum of per-dimension global losses."""
    sizes, results = ranked
    world = len(sizes)
    q, pos, neg, ids = (t.clone() for t in global_batch(sizes))
    log_t = torch.tensor(TAU, dtype=torch.float32).log().requires_grad_(True)
    for t in (q, pos, neg):
        t.requires_grad_(True)
    ws = weights if weights is not None else [1.0] * len(dims)
    terms = [(d, w) for d, w in zip(dims, ws, strict=True) if d != D]
    full_w = next((w for d, w in zip(dims, ws, strict=True) if d == D), 1.0)
    want = full_w * oracle(q, pos, neg, ids, hard_negatives, symmetric, True, tau=log_t.exp())
    for d, w in terms:
        cut = [F.normalize(t[:, :d], dim=-1) for t in (q, pos, neg)]
        want = want + w * oracle(*cut, ids, hard_negatives, symmetric, True, tau=log_t.exp())
    want.backward()
    key = ("matryoshka", hard_negatives, symmetric)
    got = sum(r[key][0] for r in results)
    torch.testing.assert_close(got, world * want.detach(), rtol=1e-5, atol=1e-5)
    for rank, r in enumerate(results):
        _, gq, gc, _, stats = r[key]
        start, end = sum(sizes[:rank]), sum(sizes[: rank + 1])
        want_c = torch.cat([pos.grad[start:end], neg.grad[start * K : end * K]])
        torch.testing.assert_close(gq / world, q.grad[start:end], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(gc / world, want_c, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stats["loss"], want.detach(), rtol=1e-5, atol=1e-5)
    t_grad = sum(r[key][3] for r in results) / world
    torch.testing.assert_close(t_grad, log_t.grad.reshape(1), rtol=1e-4, atol=1e-5)
