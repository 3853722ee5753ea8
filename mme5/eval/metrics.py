"""Ranking metrics for "truth at candidate 0" evaluation, as torchmetrics ``Metric``s.

Tie rule (the official MMEB/VLM2Vec code takes ``np.argmax`` over a row's scores, which returns the
first maximum, and the ground truth is candidate 0): a candidate outranks the truth only when its
score is strictly greater. So a tie between the truth and any other candidate counts for the truth,
for Precision@1 as in the official code, and for hit@k, MRR and nDCG@k alike. The rank of the truth
is ``#{j > 0 : s_j > s_0}`` (0-based). Candidates whose embedding is bit-identical to the truth's
(the truth repeated in its row, or the same content under another path) tie with it exactly; they
are excluded by id (see :mod:`mme5.eval.scoring`) rather than left to the rounding of a matrix product.

State is a handful of sums, so memory does not grow with rows x candidates, and ``compute`` sums the
states of all ranks (torchmetrics' sync) before dividing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def truth_rank(scores: Tensor, valid: Tensor) -> Tensor:
    """0-based rank of candidate 0 in each row: how many valid candidates score strictly higher.

    ``scores`` [R, K] (column 0 the truth), ``valid`` [R, K] bool (False for padding and for
    duplicates of the truth; column 0 itself is ignored).
    """
    above = (scores > scores[:, :1]) & valid
    above[:, 0] = False
    return above.sum(dim=1)


class RankingMetrics(Metric):
    """Precision@1, hit@k (= Recall@k with one relevant item), MRR and nDCG@k from truth ranks.

    ``update(ranks, tied)`` takes the 0-based rank of the truth per row (see :func:`truth_rank`) and,
    optionally, which rows won only by a tie with another item: their share is reported as
    ``tie@1``, a warning sign for collapsed embeddings (a constant embedding scores 100 by the rule).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    hits: Tensor
    rr: Tensor
    ndcg: Tensor
    ties: Tensor
    rows: Tensor

    def __init__(self, ks: Sequence[int] = (1, 5, 10), ndcg_k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {list(ks)}")
        self.ks = tuple(sorted({int(k) for k in ks} | {1}))
        self.ndcg_k = int(ndcg_k)
        self.add_state("hits", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rr", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ties", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rows", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor, tied: Tensor | None = None) -> None:
        ranks = ranks.to(device=self.hits.device, dtype=torch.float64).reshape(-1)
        if tied is not None:
            self.ties += tied.to(self.hits.device).sum()
        ks = torch.tensor(self.ks, dtype=torch.float64, device=ranks.device)
        self.hits += (ranks[None, :] < ks[:, None]).sum(dim=1)
        self.rr += (1.0 / (ranks + 1.0)).sum()
        gain = 1.0 / torch.log2(ranks + 2.0)
        self.ndcg += torch.where(ranks < self.ndcg_k, gain, torch.zeros_like(gain)).sum()
        self.rows += ranks.numel()

    def compute(self) -> dict[str, Tensor]:
        n = self.rows.clamp_min(1.0)
        out = {f"hit@{k}": self.hits[i] / n for i, k in enumerate(self.ks)}
        out["precision@1"] = out["hit@1"]
        out["mrr"] = self.rr / n
        out[f"ndcg@{self.ndcg_k}"] = self.ndcg / n
        out["tie@1"] = self.ties / n
        out["rows"] = self.rows
        return out
