"""MMEB-V2 metrics against an oracle written from VLM2Vec's V2 code, on constructed cases with ties.

The oracle follows TIGER-AI-Lab/VLM2Vec at 6e1e1d4: ranking ``np.argsort(-scores)`` (``eval.py`` lines
313-314 global, 333-334 local), ``hit_at_k`` (``src/utils/eval_utils/metrics.py`` lines 73-83) and
``ndcg_at_k`` with graded relevance (lines 154-189). The oracle sorts with ``kind="stable"``: numpy's
default sort does not order tied scores by position (numpy 2.x's vectorised quicksort reorders ties
even in lists of 8; see ``test_numpy_default_argsort_is_not_stable``), so the official order among
exact ties is numpy's, and mme5 fixes it to the candidate order.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalNormalizedDCG

from mme5.eval.v2.metrics import V2Metrics, rank_rows, row_scores


def oracle_rank(scores: np.ndarray, names: list[str]) -> list[str]:
    order = np.argsort(-scores, kind="stable")
    return [names[i] for i in order]


def oracle_hit(prediction: list[str], labels: list[str], k: int) -> float:
    # metrics.py lines 73-83
    if not labels or k == 0:
        return 0.0
    return 1.0 if set(prediction[:k]) & set(labels) else 0.0


def oracle_ndcg(prediction, labels, k, rel_scores, form="linear") -> float:
    # metrics.py lines 154-189 (labels paired with their own grades: see mme5.eval.v2.metrics)
    def dcg(rel_list):
        if form == "linear":
            return sum(rel / np.log2(idx + 2) for idx, rel in enumerate(rel_list))
        return sum((2**rel - 1) / np.log2(idx + 2) for idx, rel in enumerate(rel_list))

    if rel_scores is None:
        label_set = set(labels)
        relevance = [1 if item in label_set else 0 for item in prediction[:k]]
        ideal = [1] * min(len(label_set), k)
    else:
        label_rels = dict(zip(labels, rel_scores, strict=True))
        relevance = [label_rels.get(item, 0) for item in prediction[:k]]
        ideal = sorted(label_rels.values(), reverse=True)[:k]
    idcg = dcg(ideal) if ideal else 1
    return dcg(relevance) / idcg if idcg > 0 else 0.0


def mme5_row(scores: np.ndarray, rel: dict[int, float]) -> dict[str, float]:
    top = rank_rows(
        torch.ones(1, 1), torch.tensor(scores, dtype=torch.float32)[:, None], None, None, 10
    ).tolist()[0]
    return row_scores(top, rel)


CASES = [
    # (scores, labels by index, graded relevance or None)
    (np.array([0.5, 0.5, 0.5, 0.1]), [1], None),  # the label ties two others: candidate order decides
    (np.array([0.9, 0.9, 0.2, 0.9, 0.1, 0.0]), [3, 1], [1.0, 2.0]),  # graded, ties at the top
    (np.array([0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]), [6], None),  # all tied: the label ranks last
    (np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), [0, 5], [3.0, 1.0]),
    (np.array([0.0, 0.0, 1.0]), [0, 1], [2.0, 2.0]),
]


@pytest.mark.parametrize("scores,labels,grades", CASES)
def test_rows_match_the_official_code(scores, labels, grades):
    names = [f"c{i}" for i in range(len(scores))]
    pred = oracle_rank(scores, names)
    label_names = [names[i] for i in labels]
    rel = {i: (grades[j] if grades else 1.0) for j, i in enumerate(labels)}
    got = mme5_row(scores, rel)
    for k in (1, 5, 10):
        assert got[f"hit@{k}"] == oracle_hit(pred, label_names, k)
    for form in ("linear", "exponential"):
        assert got[f"ndcg_{form}@5"] == pytest.approx(oracle_ndcg(pred, label_names, 5, grades, form))


def test_random_rows_with_ties_match_the_oracle():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 16)
        scores = np.array([rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)])
        labels = rng.sample(range(n), rng.randint(1, min(3, n)))
        grades = [float(rng.randint(1, 3)) for _ in labels] if rng.random() < 0.5 else None
        names = [f"c{i}" for i in range(n)]
        pred = oracle_rank(scores, names)
        rel = {i: (grades[j] if grades else 1.0) for j, i in enumerate(labels)}
        got = mme5_row(scores, rel)
        label_names = [names[i] for i in labels]
        assert got["hit@1"] == oracle_hit(pred, label_names, 1)
        assert got["ndcg_linear@5"] == pytest.approx(oracle_ndcg(pred, label_names, 5, grades))


def test_torchmetrics_ndcg_agrees_without_ties_and_averages_ties():
    metric = RetrievalNormalizedDCG(top_k=5)
    scores = np.array([0.1, 0.7, 0.3, 0.9, 0.5, 0.2])
    rel = {1: 2.0, 4: 1.0}
    target = torch.tensor([rel.get(i, 0.0) for i in range(len(scores))])
    tm = metric(torch.tensor(scores), target, indexes=torch.zeros(len(scores), dtype=torch.long))
    assert float(tm) == pytest.approx(mme5_row(scores, rel)["ndcg_linear@5"], abs=1e-6)
    # a tie between a relevant and an irrelevant candidate: official order (candidate order) puts the
    # irrelevant one first; torchmetrics averages the gains of the tied pair
    tied = np.array([0.9, 0.9, 0.1])
    rel = {1: 1.0}
    ours = mme5_row(tied, rel)["ndcg_linear@5"]
    assert ours == pytest.approx(1 / math.log2(3))
    tm = RetrievalNormalizedDCG(top_k=5)(
        torch.tensor(tied), torch.tensor([0.0, 1.0, 0.0]), indexes=torch.zeros(3, dtype=torch.long)
    )
    assert float(tm) == pytest.approx((1 + 1 / math.log2(3)) / 2, abs=1e-6)
    assert float(tm) != pytest.approx(ours)


def test_metric_means_and_percent_free_state():
    m = V2Metrics()
    m.update([row_scores([0, 1], {0: 1.0}), row_scores([1, 0], {0: 1.0})])
    out = m.compute()
    assert float(out["rows"]) == 2
    assert float(out["hit@1"]) == pytest.approx(0.5)
    assert float(out["ndcg_linear@5"]) == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_padding_never_ranks_and_identical_embeddings_tie_exactly():
    q = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    first = torch.tensor([[0, 0, 2]])
    assert rank_rows(q, cand, valid, first, 3).tolist()[0][:2] == [0, 1]


def test_numpy_default_argsort_is_not_stable():
    """Why the official tie order is unspecified: the default argsort reorders equal scores."""
    scores = -np.array([1.0, 1.0, 0.25, 0.5, 1.0, 0.75, 1.0, 0.0])
    stable = np.argsort(scores, kind="stable").tolist()
    assert stable == [0, 1, 4, 6, 5, 3, 2, 7]
    default = np.argsort(scores).tolist()
    assert sorted(default[:4]) == [0, 1, 4, 6]  # the same tied group first, in whatever order
