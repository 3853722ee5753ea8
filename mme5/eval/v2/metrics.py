"""MMEB-V2 scoring: hit@k and graded nDCG@k over each query's ranking, as VLM2Vec's V2 code scores.

Official semantics (TIGER-AI-Lab/VLM2Vec at 6e1e1d4):

- Ranking: ``np.argsort(-scores)`` of the dot products of query and candidate embeddings, against
  every candidate of the task (``global``, ``eval.py`` lines 302-323) or the row's own ``cand_names``
  (``local``, lines 325-343). Embeddings are compared by dot product (lines 313, 333); mme5's runner
  L2-normalises every embedding first, as the official models do (cosine scores).
- ``hit@k`` (``src/utils/eval_utils/metrics.py`` lines 73-83): 1 when any label is in the top k.
- ``ndcg_linear@k`` (lines 154-189): DCG of the top k with gain ``rel`` and discount
  ``log2(rank + 2)``, over the ideal DCG of the labels' relevances sorted descending, cut at k;
  ``ndcg_exponential@k`` uses gain ``2**rel - 1``. Relevance is the qrels score (graded) or 1.
  Scores are means over queries (line 244), reported by mme5 in percent.

Ties. ``np.argsort`` defaults to an unstable sort (numpy 2.x's vectorised quicksort reorders tied
scores even in a list of 8, ``tests/eval/test_v2_metrics.py``), so the official order among exactly
tied candidates is whatever numpy's sort gives. mme5 ranks with a stable sort: among tied candidates
the earlier one in the official candidate order ranks first. Candidates with bit-identical
embeddings tie exactly (the scores are taken from the first of them,
:func:`mme5.eval.scoring.canonical_ids`). ``torchmetrics``' ``RetrievalNormalizedDCG`` averages the
gain over tied candidates instead (as scikit-learn does); it agrees where there are no ties at the
cut (``tests/eval/test_v2_metrics.py``).

A deviation. ``RankingMetrics.evaluate`` makes the labels unique with ``list(set(labels))`` (line 214)
but keeps ``rel_scores`` in the original order, and ``ndcg_at_k`` then zips the two (line 183): with
several labels of different grades, the official code pairs labels with the wrong grades in an order
that depends on Python's string hashing. mme5 pairs each label with its own qrels score (what the
loaders built, ``vidore_dataset.py`` lines 28-46).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

NDCG_K = 5
HIT_KS = (1, 5, 10)


def dcg(rels: list[float], form: str = "linear") -> float:
    """Discounted cumulative gain of relevances in rank order (metrics.py lines 165-169)."""
    if form == "linear":
        return sum(r / math.log2(i + 2) for i, r in enumerate(rels))
    return sum((2.0**r - 1.0) / math.log2(i + 2) for i, r in enumerate(rels))


def row_scores(top: list[int], rel: dict[int, float], k: int = NDCG_K) -> dict[str, float]:
    """hit@{1,5,10}, ndcg_linear@k and ndcg_exponential@k of one ranking (``top``: the first ranked
    candidate ids, at least max(k, 10) of them when there are that many)."""
    out = {f"hit@{h}": 1.0 if any(c in rel for c in top[:h]) else 0.0 for h in HIT_KS}
    gains = [rel.get(c, 0.0) for c in top[:k]]
    ideal = sorted(rel.values(), reverse=True)[:k]
    for form in ("linear", "exponential"):
        idcg = dcg(ideal, form) if ideal else 1.0
        out[f"ndcg_{form}@{k}"] = dcg(gains, form) / idcg if idcg > 0 else 0.0
    return out


class V2Metrics(Metric):
    """Sums of the per-query scores of :func:`row_scores` (reduced across ranks by torchmetrics)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    sums: Tensor
    rows: Tensor
    NAMES = (*(f"hit@{h}" for h in HIT_KS), f"ndcg_linear@{NDCG_K}", f"ndcg_exponential@{NDCG_K}")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(len(self.NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rows", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, per_row: list[dict[str, float]]) -> None:  # type: ignore[override]
        if per_row:
            vals = torch.tensor([[r[n] for n in self.NAMES] for r in per_row], dtype=torch.float64)
            self.sums += vals.sum(dim=0).to(self.sums.device)
        self.rows += len(per_row)

    def compute(self) -> dict[str, Tensor]:
        n = self.rows.clamp_min(1.0)
        out = {name: self.sums[i] / n for i, name in enumerate(self.NAMES)}
        out["rows"] = self.rows
        return out


def rank_rows(q: Tensor, cand: Tensor, valid: Tensor | None, first: Tensor | None, depth: int) -> Tensor:
    """The first ``depth`` candidate positions of each row, best first, ties in candidate order.

    ``q`` [B, D], ``cand`` [B, K, D] (per-row candidates) or [K, D] (one pool for every row); ``valid``
    [B, K] masks padding; ``first`` [B, K] or [K]: for each candidate, the first position holding a
    bit-identical embedding (its score is used, so identical embeddings tie exactly).
    """
    scores = q @ cand.T if cand.ndim == 2 else torch.einsum("bd,bkd->bk", q, cand)
    if first is not None:
        scores = scores.gather(1, first.expand_as(scores)) if first.ndim == 1 else scores.gather(1, first)
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :depth]
