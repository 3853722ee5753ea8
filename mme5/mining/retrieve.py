"""Positive-aware top-k retrieval in blocks: the scoring core of ``mme5 mine``.

Scores are inner products of L2-normalised embeddings (cosine). For query ``i`` with positive score
``p_i`` a candidate ``j`` is *eligible* when

* it is in the query's group (``c_group[j] == q_group[i]``; a candidate of group -1 is never eligible),
* it is none of the query's positives (``positives[i]``), and
* its score is not above the query's threshold: ``s_ij <= threshold_i``, where the threshold is
  ``margin * p_i`` (``relative``, NV-Retriever's TopK-PercPos), ``p_i - margin`` (``absolute``,
  TopK-MarginPos) or +inf (``none``). Candidates above it are likely false negatives.

Eligible candidates are ranked by score, highest first; the mined negatives are ranks
``[skip_top, skip_top + k)`` of that ranking (rank 0 is the best eligible candidate). Only
``(query_block, candidate_block)`` score tiles and a running top ``skip_top + k`` per query exist at
any time, so memory is bounded whatever the corpus size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

MarginKind = Literal["relative", "absolute", "none"]


def thresholds(pos_scores: torch.Tensor, margin: float, kind: MarginKind) -> torch.Tensor:
    """The per-query score above which a candidate counts as a likely false negative."""
    if kind == "relative":
        return pos_scores * margin
    if kind == "absolute":
        return pos_scores - margin
    return torch.full_like(pos_scores, float("inf"))


@dataclass
class Retrieved:
    """What :func:`mine_topk` found for each of ``n`` queries.

    Attributes:
        indices: [n, k] candidate indices of ranks ``skip_top ..``, -1 where fewer were eligible.
        scores: [n, k] their scores (-inf where the index is -1).
        above_threshold: [n] in-group non-positive candidates dropped by the margin.
        eligible: [n] candidates that passed every exclusion (ranked, before the rank window).
    """

    indices: torch.Tensor
    scores: torch.Tensor
    above_threshold: torch.Tensor
    eligible: torch.Tensor


def mine_topk(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    threshold: torch.Tensor,
    positives: torch.Tensor,
    q_group: torch.Tensor,
    c_group: torch.Tensor,
    k: int,
    skip_top: int = 0,
    query_block: int = 1024,
    candidate_block: int = 16384,
) -> Retrieved:
    """Ranks ``[skip_top, skip_top + k)`` of each query's eligible candidates (see the module doc).

    Args:
        queries: [n, D] query embeddings.
        candidates: [m, D] candidate embeddings (same device and dtype).
        threshold: [n] per-query score threshold (:func:`thresholds`).
        positives: [n, P] candidate indices excluded per query, padded with -1.
        q_group: [n] group of each query (>= 0).
        c_group: [m] group of each candidate (-1: never eligible).
        k: negatives per query.
        skip_top: eligible ranks skipped before the window starts.
        query_block: queries scored at once.
        candidate_block: candidates scored at once.
    """
    if k < 1 or skip_top < 0 or query_block < 1 or candidate_block < 1:
        raise ValueError(f"need k >= 1, skip_top >= 0 and positive blocks, got {k}, {skip_top}")
    n, m = queries.shape[0], candidates.shape[0]
    depth = skip_top + k
    device = queries.device
    out_idx = torch.full((n, depth), -1, dtype=torch.long, device=device)
    out_val = torch.full((n, depth), float("-inf"), dtype=queries.dtype, device=device)
    above = torch.zeros(n, dtype=torch.long, device=device)
    eligible = torch.zeros(n, dtype=torch.long, device=device)
    for qs in range(0, n, query_block):
        qe = min(n, qs + query_block)
        q = queries[qs:qe]
        thr = threshold[qs:qe, None]
        pos = positives[qs:qe]
        grp = q_group[qs:qe, None]
        best_val = out_val[qs:qe]
        best_idx = out_idx[qs:qe]
        for cs in range(0, m, candidate_block):
            ce = min(m, cs + candidate_block)
            s = q @ candidates[cs:ce].T
            ok = grp == c_group[None, cs:ce]
            local = pos - cs
            hit = (pos >= 0) & (local >= 0) & (local < ce - cs)
            is_pos = torch.zeros_like(ok)
            rows = torch.arange(qe - qs, device=device)[:, None].expand_as(local)
            is_pos[rows[hit], local[hit]] = True
            ok &= ~is_pos
            high = s > thr
            above[qs:qe] += (ok & high).sum(1)
            ok &= ~high
            eligible[qs:qe] += ok.sum(1)
            s = s.masked_fill(~ok, float("-inf"))
            take = min(depth, ce - cs)
            val, idx = s.topk(take, dim=1)
            idx = torch.where(torch.isinf(val), torch.full_like(idx, -1), idx + cs)
            merged_val = torch.cat([best_val, val], 1)
            merged_idx = torch.cat([best_idx, idx], 1)
            best_val, order = merged_val.topk(depth, dim=1)
            best_idx = merged_idx.gather(1, order)
        out_val[qs:qe] = best_val
        out_idx[qs:qe] = best_idx
    out_idx = torch.where(torch.isinf(out_val), torch.full_like(out_idx, -1), out_idx)
    return Retrieved(out_idx[:, skip_top:], out_val[:, skip_top:], above, eligible)
