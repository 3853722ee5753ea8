"""Per-row scoring in chunks: each row's query against that row's own candidates.

Embeddings are looked up by item id. For a chunk of rows, the distinct items the chunk refers to
are scored with one matrix product and the row scores gathered from it, so a candidate repeated in
a row (or across rows) gets bit-identical scores, and no rows x candidates x D tensor is built.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mme5.eval.datasets import RetrievalSet
from mme5.eval.metrics import RankingMetrics, truth_rank

#: Upper bound on the entries of one chunk's (rows x distinct items) score matrix.
SCORE_BUDGET = 1 << 24


def rows_for_rank(num_rows: int, rank: int, world_size: int) -> range:
    """The contiguous block of rows one rank scores."""
    per = -(-num_rows // world_size)
    return range(min(rank * per, num_rows), min((rank + 1) * per, num_rows))


def _padded(candidates: list[list[int]]) -> Tensor:
    k = max(len(c) for c in candidates)
    out = torch.full((len(candidates), k), -1, dtype=torch.long)
    for r, c in enumerate(candidates):
        out[r, : len(c)] = torch.tensor(c, dtype=torch.long)
    return out


def chunk_ranks(queries: Tensor, cands: Tensor, emb: Tensor) -> Tensor:
    """Truth ranks of a chunk: ``queries`` [R] item ids, ``cands`` [R, K] item ids (-1 = padding)."""
    valid = (cands >= 0) & (cands != cands[:, :1])
    flat = torch.cat([queries, cands.clamp_min(0).reshape(-1)])
    uniq, inverse = torch.unique(flat, return_inverse=True)
    table = emb[uniq.to(emb.device)]
    q = table[inverse[: len(queries)].to(emb.device)]
    scores = q @ table.T
    cand_scores = scores.gather(1, inverse[len(queries):].view_as(cands).to(emb.device))
    return truth_rank(cand_scores, valid.to(emb.device))


def score_rows(rset: RetrievalSet, emb: Tensor, metric: RankingMetrics, rows: range | None = None,
               budget: int = SCORE_BUDGET) -> None:
    """Update ``metric`` with the truth ranks of ``rows`` of ``rset`` (all rows by default).

    ``emb`` [num_items, D] holds the L2-normalised embedding of every item id ``rset`` uses.
    """
    rows = range(len(rset.queries)) if rows is None else rows
    start = rows.start
    while start < rows.stop:
        n = rows.stop - start
        while True:
            block = rset.candidates[start : start + n]
            distinct = len({i for c in block for i in c} | set(rset.queries[start : start + n]))
            if n == 1 or n * distinct <= budget:
                break
            n = (n + 1) // 2
        queries = torch.tensor(rset.queries[start : start + n], dtype=torch.long)
        metric.update(chunk_ranks(queries, _padded(block), emb))
        start += n
