"""Blocked positive-aware top-k retrieval against a brute-force oracle on random embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mme5.mining.retrieve import mine_topk, thresholds


def oracle(q, c, thr, positives, q_group, c_group, k, skip_top):
    """Per query: drop other groups, its positives and scores above its threshold, sort, take the window."""
    s = (q @ c.T).tolist()
    out = []
    for i, row in enumerate(s):
        excluded = {int(p) for p in positives[i] if p >= 0}
        ok = [
            j
            for j, v in enumerate(row)
            if int(c_group[j]) == int(q_group[i]) and j not in excluded and v <= float(thr[i])
        ]
        ok.sort(key=lambda j: -row[j])
        out.append(ok[skip_top : skip_top + k])
    return out


@pytest.mark.parametrize("kind,margin", [("relative", 0.95), ("absolute", 0.05), ("none", 0.0)])
@pytest.mark.parametrize("blocks", [(3, 5), (7, 64), (1000, 1000)])
@pytest.mark.parametrize("skip_top", [0, 2])
def test_blocked_topk_equals_the_oracle(kind, margin, blocks, skip_top):
    g = torch.Generator().manual_seed(len(kind) * 31 + blocks[0] + skip_top)
    n, m, d, k = 13, 41, 6, 4
    # a shared direction makes positives score high, so that the margin has work to do
    base = torch.randn(1, d, generator=g)
    q = F.normalize(base + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    c = F.normalize(base + 0.8 * torch.randn(m, d, generator=g), dim=-1)
    pos = torch.randint(0, m, (n,), generator=g)
    positives = torch.full((n, 2), -1)
    positives[:, 0] = pos
    positives[::3, 1] = (pos[::3] + 1) % m  # some queries have a second positive
    q_group = torch.randint(0, 2, (n,), generator=g)
    c_group = torch.randint(-1, 2, (m,), generator=g)
    c_group[pos] = q_group  # each positive lives in its query's group
    pos_scores = (q * c[pos]).sum(1)
    thr = thresholds(pos_scores, margin, kind)  # type: ignore[arg-type]
    got = mine_topk(q, c, thr, positives, q_group, c_group, k, skip_top, *blocks)
    want = oracle(q, c, thr, positives, q_group, c_group, k, skip_top)
    s = q @ c.T
    for i in range(n):
        row = [int(j) for j in got.indices[i] if j >= 0]
        assert row == want[i], i
        assert int(pos[i]) not in row
        assert torch.allclose(got.scores[i, : len(row)], s[i, row])
        in_group = (c_group == q_group[i]) & ~torch.isin(torch.arange(m), positives[i])
        assert int(got.above_threshold[i]) == int((in_group & (s[i] > thr[i])).sum())
        assert int(got.eligible[i]) == int((in_group & (s[i] <= thr[i])).sum())
    if kind == "relative":
        assert int(got.above_threshold.sum()) > 0  # the margin excluded something here


def test_short_rows_are_padded_with_minus_one():
    q = F.normalize(torch.randn(2, 4), dim=-1)
    c = F.normalize(torch.randn(3, 4), dim=-1)
    got = mine_topk(
        q,
        c,
        torch.full((2,), float("inf")),
        torch.tensor([[0], [1]]),
        torch.zeros(2, dtype=torch.long),
        torch.zeros(3, dtype=torch.long),
        k=5,
        candidate_block=2,
    )
    assert (got.indices >= 0).sum(1).tolist() == [2, 2]
    assert torch.isinf(got.scores[:, 2:]).all() and (got.indices[:, 2:] == -1).all()
