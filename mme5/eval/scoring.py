"""Per-row scoring in chunks: each row's query against that row's own candidates.

Embeddings are looked up by item id. Items whose embeddings are bit-identical (the same content
under two image paths, or a model that ignores a difference) are first mapped to one id: their scores
must tie exactly, and a matrix product does not promise equal rounding for equal columns. A chunk of
rows that shares its candidates (classification: every row has the class list) is scored with one
product of the queries and the chunk's distinct items; rows with their own candidates gather them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from mme5.eval.datasets import RetrievalSet
from mme5.eval.metrics import RankingMetrics, resolve_tie_rule

#: Upper bound on the elements of one chunk's score matrix (rows x distinct items) or gathered candidates.
SCORE_BUDGET = 1 << 25
#: "auto" scores a chunk's distinct items while that is at most this many times the chunk's row x
#: candidate pairs (measured on CPU: a product entry at D=4096 is over 10x cheaper than a gathered pair).
GATHER_RATIO = 32


def rows_for_rank(num_rows: int, rank: int, world_size: int) -> range:
    """The contiguous block of rows one rank scores."""
    per = -(-num_rows // world_size)
    return range(min(rank * per, num_rows), min((rank + 1) * per, num_rows))


def canonical_ids(emb: Tensor) -> Tensor:
    """[n] LongTensor: for each item, the first item with a bit-identical embedding."""
    arr = np.ascontiguousarray(emb.detach().to("cpu", torch.float32).numpy())
    first: dict[bytes, int] = {}
    out = np.empty(arr.shape[0], dtype=np.int64)
    for i, row in enumerate(arr):
        out[i] = first.setdefault(hashlib.blake2b(row.tobytes(), digest_size=16).digest(), i)
    return torch.from_numpy(out)


def _padded(candidates: list[list[int]]) -> Tensor:
    k = max(len(c) for c in candidates)
    out = torch.full((len(candidates), k), -1, dtype=torch.long)
    for r, c in enumerate(candidates):
        out[r, : len(c)] = torch.tensor(c, dtype=torch.long)
    return out


def chunk_ranks(
    queries: Tensor,
    cands: Tensor,
    emb: Tensor,
    canon: Tensor,
    gather: bool = False,
    tie_rule: str = "truth_wins",
) -> tuple[Tensor, Tensor, Tensor]:
    """(truth ranks, won-by-tie flags, tied flags) of a chunk of rows.

    ``queries`` [R] and ``cands`` [R, K] are item ids (-1 = padding); ``canon`` maps item ids to the
    first item with a bit-identical embedding: a candidate with the truth's canonical id ties with it
    exactly, whatever the rounding of its score. ``tie_rule`` (see :mod:`mme5.eval.metrics`):
    ``truth_wins`` ranks the truth above every candidate it ties with, ``truth_loses`` below. A row is
    "tied" when any other candidate ties the truth, "won by a tie" when none beats it and another item
    (not the truth repeated) ties it. ``gather=False`` scores the chunk's distinct items with one matrix
    product (rows sharing a candidate list); ``gather=True`` gathers each row's own candidates
    ([R, K, D]; rows with their own lists).
    """
    rule = resolve_tie_rule("", tie_rule)
    dev = emb.device
    pad = cands < 0
    canon_q = canon[queries].to(dev)
    canon_c = torch.where(pad, cands, canon[cands.clamp_min(0)]).to(dev)
    if gather:
        cand_scores = torch.bmm(emb[canon_c.clamp_min(0)], emb[canon_q].unsqueeze(-1)).squeeze(-1)
    else:
        flat = torch.cat([canon_q, canon_c.clamp_min(0).reshape(-1)])
        uniq, inverse = torch.unique(flat, return_inverse=True)
        table = emb[uniq]
        scores = table[inverse[: len(queries)]] @ table.T
        cand_scores = scores.gather(1, inverse[len(queries) :].view_as(cands))
    pad = pad.to(dev)
    same_as_truth = canon_c == canon_c[:, :1]
    valid = ~pad & ~same_as_truth
    truth = cand_scores[:, :1]
    above = (cand_scores > truth) & valid
    equal = ~pad & (same_as_truth | (cand_scores == truth))
    above[:, 0] = False
    equal[:, 0] = False
    beaten = above.sum(dim=1)
    ranks = beaten + equal.sum(dim=1) if rule == "truth_loses" else beaten
    other_item = ~pad & (cands.to(dev) != cands[:, :1].to(dev))
    won_by_tie = (equal & other_item).any(dim=1) & (beaten == 0)
    return ranks, won_by_tie, equal.any(dim=1)


def score_rows(
    rset: RetrievalSet,
    emb: Tensor,
    metric: RankingMetrics,
    rows: range | None = None,
    budget: int = SCORE_BUDGET,
    canon: Tensor | None = None,
    strategy: str = "auto",
    tie_rule: str = "truth_wins",
) -> None:
    """Update ``metric`` with the truth ranks of ``rows`` of ``rset`` (all rows by default).

    ``emb`` [num_items, D] holds the L2-normalised embedding of every item id ``rset`` uses;
    ``canon`` is :func:`canonical_ids` of ``emb`` (computed here when not given). Rows go in chunks
    whose score matrix (rows x distinct items) or gathered candidates (pairs x D) stay within
    ``budget`` elements; ``strategy`` ("auto", "distinct", "gather") picks how a chunk is scored:
    "auto" takes the distinct-items product unless rows share so few candidates that it would
    compute ``GATHER_RATIO`` times more scores than there are pairs, then the per-row gather.
    ``tie_rule`` ranks ties with the truth (``truth_wins`` or ``truth_loses``; see
    :mod:`mme5.eval.metrics`).
    """
    if strategy not in ("auto", "distinct", "gather"):
        raise ValueError(f"strategy must be 'auto', 'distinct' or 'gather', got '{strategy}'")
    rows = range(len(rset.queries)) if rows is None else rows
    canon = canonical_ids(emb) if canon is None else canon
    dim = emb.shape[1]
    start, n = rows.start, rows.stop - rows.start
    while start < rows.stop:
        n = min(rows.stop - start, 2 * n)  # the last chunk's size (or twice it) is the first guess
        while True:
            block = rset.candidates[start : start + n]
            pairs = n * max(len(c) for c in block)
            distinct = len({i for c in block for i in c} | set(rset.queries[start : start + n]))
            # a matrix product entry costs far less than gathering a candidate vector (memory-bound):
            # score distinct items unless that computes over GATHER_RATIO times more entries than pairs
            use_distinct = strategy == "distinct" or (
                strategy == "auto" and n * distinct <= GATHER_RATIO * pairs
            )
            cost = n * distinct if use_distinct else pairs * dim
            if n == 1 or cost <= budget:
                break
            n = (n + 1) // 2
        queries = torch.tensor(rset.queries[start : start + n], dtype=torch.long)
        metric.update(
            *chunk_ranks(queries, _padded(block), emb, canon, gather=not use_distinct, tie_rule=tie_rule)
        )
        start += n
