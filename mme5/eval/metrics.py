"""Ranking metrics for "truth at candidate 0" evaluation, as torchmetrics ``Metric``s.

Tie rules. Candidate 0 is the ground truth; what happens when another candidate scores exactly as
much as the truth is each benchmark's official rule, the default (``tie_rule="official"``):

- MMEB (``truth_wins``): the official code takes ``np.argmax`` over a row's scores, the first maximum,
  and counts the row correct when it is candidate 0 (TIGER-AI-Lab/VLM2Vec ``evaluation/eval_utils.py``
  line 16 and ``eval.py`` lines 149-150 at b1dc1e6; haon-chen/mmE5 ``evaluation/eval_utils.py`` line 14,
  ``eval.py`` lines 221-223). A candidate outranks the truth only when its score is strictly greater,
  so a tie counts for the truth. hit@k, MRR and nDCG@k use the same rank (VLM2Vec's later ``eval.py``
  line 334 ranks with ``np.argsort(-score)``: the same rule under a stable sort; numpy's default
  sort is not stable, so there the order among exact ties is numpy's, and mme5 fixes it).
- XTD (``truth_loses``): the official Recall@k (haon-chen/mmE5 ``evaluation/eval_utils.py`` lines
  49-51, called from ``eval_multi.py`` lines 196-197) is ``np.argsort(scores)[-k:][::-1]``: a stable
  ascending sort puts the truth (index 0) first among equal scores, and reversing it puts the truth
  after every candidate it ties with. So the rank of the truth is ``#{j > 0 : s_j >= s_0}``, and the
  official Precision@1 (the same argsort) agrees with Recall@1. numpy's default sort (introsort) does
  not promise that order among ties, so the official number itself can depend on numpy's sort on
  tied rows; mme5 takes the stable reading, and the share of tied rows is reported beside the score.

Under either rule, candidates whose embedding is bit-identical to the truth's (the truth repeated in
its row, or the same content under another path) tie with it exactly; they are found by id (see
:mod:`mme5.eval.scoring`) rather than left to the rounding of a matrix product.

Beside the scores, ``ties`` is the share of rows in which another candidate ties the truth (the rows
whose scores depend on the tie rule) and ``tie@1`` the share of rows that no candidate beats but
another item ties at the top (a warning sign for collapsed embeddings: a constant embedding scores
100 under ``truth_wins``).

State is a handful of sums, so memory does not grow with rows x candidates, and ``compute`` sums the
states of all ranks (torchmetrics' sync) before dividing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from mme5.errors import ConfigError

#: How a tie between the truth and another candidate is ranked: ``official`` (each benchmark's own rule,
#: :data:`OFFICIAL_TIE_RULE`), ``truth_wins`` (ties rank below the truth), ``truth_loses`` (above it).
TieRule = Literal["official", "truth_wins", "truth_loses"]
OFFICIAL_TIE_RULE: dict[str, Literal["truth_wins", "truth_loses"]] = {
    "mmeb": "truth_wins",
    "xtd": "truth_loses",
}


def resolve_tie_rule(benchmark: str, tie_rule: str) -> Literal["truth_wins", "truth_loses"]:
    """The concrete rule ``tie_rule`` means for ``benchmark`` (``official``: that benchmark's own)."""
    if tie_rule == "official":
        return OFFICIAL_TIE_RULE.get(benchmark, "truth_wins")
    if tie_rule in ("truth_wins", "truth_loses"):
        return tie_rule  # type: ignore[return-value]
    raise ConfigError(f"tie_rule must be 'official', 'truth_wins' or 'truth_loses', got '{tie_rule}'")


def truth_rank(scores: Tensor, valid: Tensor, tie_rule: str = "truth_wins") -> Tensor:
    """0-based rank of candidate 0 in each row: how many valid candidates score higher.

    ``scores`` [R, K] (column 0 the truth), ``valid`` [R, K] bool (False for padding; column 0 itself
    is ignored). ``truth_wins`` counts the candidates that score strictly higher, ``truth_loses`` also
    those that tie.
    """
    rule = resolve_tie_rule("", tie_rule)
    truth = scores[:, :1]
    above = ((scores >= truth) if rule == "truth_loses" else (scores > truth)) & valid
    above[:, 0] = False
    return above.sum(dim=1)


class RankingMetrics(Metric):
    """Precision@1, hit@k (= Recall@k with one relevant item), MRR and nDCG@k from truth ranks.

    ``update(ranks, won_by_tie, tied)`` takes the 0-based rank of the truth per row (see
    :func:`truth_rank`) and, optionally, which rows no candidate beats but another item ties at the top
    (reported as ``tie@1``) and which rows have any candidate tied with the truth (``ties``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    hits: Tensor
    rr: Tensor
    ndcg: Tensor
    top_ties: Tensor
    tied: Tensor
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
        self.add_state("top_ties", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tied", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rows", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor, won_by_tie: Tensor | None = None, tied: Tensor | None = None) -> None:
        ranks = ranks.to(device=self.hits.device, dtype=torch.float64).reshape(-1)
        if won_by_tie is not None:
            self.top_ties += won_by_tie.to(self.hits.device).sum()
        if tied is not None:
            self.tied += tied.to(self.hits.device).sum()
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
        out["tie@1"] = self.top_ties / n
        out["ties"] = self.tied / n
        out["rows"] = self.rows
        return out
