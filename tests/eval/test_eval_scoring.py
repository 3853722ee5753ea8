"""Scoring equals an independent implementation of the official rules on fixture folders.

The reference reads the files with pandas / pyarrow itself, embeds every row's query and every
candidate separately (no de-duplication), scores in float64 and applies the official rules:

- MMEB: ``np.argmax`` (the first maximum) over the row's scores, correct when it is candidate 0
  (TIGER-AI-Lab/VLM2Vec ``evaluation/eval_utils.py`` line 16 and ``eval.py`` lines 149-150 at commit
  b1dc1e6; haon-chen/mmE5 ``evaluation/eval_utils.py`` line 14). hit@k, MRR and nDCG@10 use the rank
  the same rule gives (a stable descending sort with the truth first, so a tie puts the truth ahead).
- XTD: mmE5's ``recall_at_k`` (haon-chen/mmE5 ``evaluation/eval_utils.py`` lines 49-51, called from
  ``eval_multi.py`` lines 196-197): ``np.argsort(scores)[-k:][::-1]`` holds the truth (index 0) or not.
  The ascending sort puts the truth first among equal scores, so reversed a tie ranks above it. The
  oracle below is that expression with an explicitly stable sort.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mme5.errors import ConfigError, MissingPathError
from mme5.eval import MMEB_DATASETS, RankingMetrics, evaluate_mmeb, evaluate_xtd, truth_rank
from mme5.eval.datasets import EvalDataError
from mme5.eval.items import ItemError
from mme5.eval.runner import encode_items, load_mmeb
from mme5.eval.scoring import canonical_ids, score_rows
from mme5.records import Side
from tests.helpers.evalfixtures import HashEmbedder


def _read_any(path) -> pd.DataFrame:
    if str(path).endswith(".arrow"):
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_stream(src).read_all().to_pandas()
    return pd.read_parquet(path)


def _side(text, image_path, image_root) -> Side:
    image = Image.open(image_root / image_path).convert("RGB") if image_path else None
    return Side(text=text or None, image=image)


def official_recall_at_k(scores: np.ndarray, k: int) -> float:
    """mmE5 evaluation/eval_utils.py:49-51 with relevant_indices [0] (a stable argsort)."""
    top_k_indices = np.argsort(scores, kind="stable")[-k:][::-1]
    return float(sum(1 for idx in top_k_indices if idx in [0]) / 1)


def official_xtd_rank(scores: np.ndarray) -> int:
    """0-based position of the truth in mmE5's descending order (argsort reversed)."""
    return int(np.where(np.argsort(scores, kind="stable")[::-1] == 0)[0][0])


def reference_scores(path, image_root, embed, xtd: bool = False) -> dict[str, float]:
    df = _read_any(path)
    p1, hits5, hits10, rr, ndcg = [], [], [], [], []
    for _, row in df.iterrows():
        q = embed([_side(row.qry_text, row.qry_img_path, image_root)]).double().numpy()[0]
        c = (
            embed([_side(t, i, image_root) for t, i in zip(row.tgt_text, row.tgt_img_path, strict=False)])
            .double()
            .numpy()
        )
        s = c @ q / (np.linalg.norm(c, axis=1) * np.linalg.norm(q))
        if xtd:
            rank = official_xtd_rank(s)
            p1.append(official_recall_at_k(s, 1))
            hits5.append(official_recall_at_k(s, 5))
            hits10.append(official_recall_at_k(s, 10))
        else:
            p1.append(float(np.argmax(s) == 0))
            rank = int(np.where(np.argsort(-s, kind="stable") == 0)[0][0])
            hits5.append(float(rank < 5))
            hits10.append(float(rank < 10))
        rr.append(1.0 / (rank + 1))
        ndcg.append(1.0 / math.log2(rank + 2) if rank < 10 else 0.0)

    def mean(xs: list[float]) -> float:
        return 100.0 * sum(xs) / len(xs)

    return {
        "precision@1": mean(p1),
        "hit@5": mean(hits5),
        "hit@10": mean(hits10),
        "mrr": mean(rr),
        "ndcg@10": mean(ndcg),
    }


def test_mmeb_matches_official_rule(fixture_folders, embedder):
    fx = fixture_folders
    names = ["ImageNet-1K", "VisualNews_t2i", "OVEN", "ToyVQA", "CIRR"]
    result = evaluate_mmeb(embedder, fx.mmeb_dir, fx.image_root, datasets=names, batch_size=5)
    assert embedder.sides_seen == result.encode.distinct_items  # each distinct item encoded once
    assert result.missing == ["CIRR"]
    assert [d.name for d in result.datasets] == names[:4]
    for name in names[:4]:
        ref = reference_scores(fx.mmeb_files[name], fx.image_root, embedder)
        got = result.score(name).metrics
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (name, key)
    # precision is informative here: neither all right nor all wrong
    assert 0 < result.summary["Overall"] < 100
    oven, toy = result.score("OVEN"), result.score("ToyVQA")
    assert oven.ood and oven.meta_task == "Retrieval" and toy.ood and toy.meta_task == "VQA"
    assert toy.chance_p1 == pytest.approx(25.0)
    p1 = {d.name: d.precision_at_1 for d in result.datasets}
    assert result.summary["Retrieval"] == pytest.approx((p1["VisualNews_t2i"] + p1["OVEN"]) / 2)
    assert result.summary["IND"] == pytest.approx((p1["ImageNet-1K"] + p1["VisualNews_t2i"]) / 2)
    assert result.summary["OOD"] == pytest.approx((p1["OVEN"] + p1["ToyVQA"]) / 2)
    assert result.summary["Overall"] == pytest.approx(sum(p1.values()) / 4)
    assert result.encode.encoded == result.encode.distinct_items < result.rows_x_candidates


def test_default_request_is_the_36_plus_extras(fixture_folders, embedder):
    result = evaluate_mmeb(embedder, fixture_folders.mmeb_dir, fixture_folders.image_root, max_rows=3)
    assert len(result.missing) == 36 - 3 and "ImageNet-1K" not in result.missing
    assert {d.name for d in result.datasets} == {"ImageNet-1K", "VisualNews_t2i", "OVEN", "ToyVQA"}
    assert all(d.rows == 3 and d.total_rows == 12 for d in result.datasets)
    assert set(result.missing) <= set(MMEB_DATASETS)


def test_xtd_matches_official_rule(fixture_folders, embedder):
    fx = fixture_folders
    result = evaluate_xtd(embedder, fx.xtd_dir, fx.image_root)
    assert result.missing == ["ru", "zh", "pl", "tr", "ko"]
    for lang in ("it", "es"):
        ref = reference_scores(fx.xtd_files[lang], fx.image_root, embedder, xtd=True)
        got = result.score(lang)
        assert got.tie_rule == "truth_loses" and got.metrics["mrr"] == pytest.approx(ref["mrr"], abs=1e-9)
        # skimage's "cat" and "chelsea" are the same photo: those rows tie exactly, and under the
        # official argsort rule the twin ranks above the truth
        assert got.ties == pytest.approx(100 * 4 / 12)
        assert result.summary[f"{lang}/R@1"] == pytest.approx(ref["precision@1"], abs=1e-9)
        assert result.summary[f"{lang}/R@5"] == pytest.approx(ref["hit@5"], abs=1e-9)
        assert result.summary[f"{lang}/R@10"] == pytest.approx(ref["hit@10"], abs=1e-9)
    assert result.summary["mean_R@10"] == pytest.approx(
        (result.summary["it/R@10"] + result.summary["es/R@10"]) / 2
    )


def test_tie_rule_favours_the_truth():
    scores = torch.tensor([[0.5, 0.5, 0.2, 0.9], [0.5, 0.4, 0.5, 0.1], [0.1, 0.2, 0.3, 0.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True], [True, True, True, True]])
    assert truth_rank(scores, valid).tolist() == [0, 0, 2]  # the padded 0.9 never counts
    m = RankingMetrics(ks=(1, 2))
    m.update(truth_rank(scores, valid))
    out = m.compute()
    assert out["precision@1"].item() == pytest.approx(2 / 3)
    assert out["hit@2"].item() == pytest.approx(2 / 3)
    assert out["mrr"].item() == pytest.approx((1 + 1 + 1 / 3) / 3)


@pytest.mark.parametrize("name", ["ImageNet-1K", "VisualNews_t2i", "OVEN"])
def test_chunking_and_strategies_agree(fixture_folders, embedder, name):
    bench = load_mmeb(fixture_folders.mmeb_dir, [name])
    emb, _ = encode_items(embedder, bench.items.items, fixture_folders.image_root)
    rset = bench.sets[0]
    results = []
    for strategy in ("auto", "distinct", "gather"):
        for budget in (1 << 25, 7):  # one chunk; one row per chunk
            m = RankingMetrics()
            score_rows(rset, emb, m, budget=budget, strategy=strategy)
            results.append({k: v.item() for k, v in m.compute().items()})
    for other in results[1:]:
        assert other == pytest.approx(results[0], abs=1e-12)


def test_copies_of_the_truth_share_its_id(fixture_folders, embedder):
    bench = load_mmeb(fixture_folders.mmeb_dir, ["OVEN"])
    emb, _ = encode_items(embedder, bench.items.items, fixture_folders.image_root)
    canon = canonical_ids(emb)
    items = bench.items.items
    copy = next(i for i, it in enumerate(items) if it.image_path == "copies/astronaut_0.png")
    orig = next(
        i
        for i, it in enumerate(items)
        if it.image_path == "photos/astronaut_0.png" and it.text == items[copy].text
    )
    assert copy != orig and canon[copy] == canon[orig]
    assert any(len(set(c)) < len(c) for c in bench.sets[0].candidates)  # the truth repeated in its row


def test_collapsed_model_is_flagged_by_tie_rate(fixture_folders):
    # the official rule gives a constant embedding 100 %: tie@1 says why
    def constant(sides):
        return torch.ones(len(sides), 8) / 8**0.5

    result = evaluate_mmeb(
        constant, fixture_folders.mmeb_dir, fixture_folders.image_root, datasets=["ImageNet-1K"]
    )
    m = result.score("ImageNet-1K").metrics
    assert m["precision@1"] == 100.0 and m["tie@1"] == 100.0
    fine = evaluate_mmeb(
        HashEmbedder(), fixture_folders.mmeb_dir, fixture_folders.image_root, datasets=["OVEN"]
    )
    assert fine.score("OVEN").metrics["tie@1"] == pytest.approx(
        100 / 12
    )  # the content copy under another path


def test_metric_state_does_not_grow():
    m = RankingMetrics()
    before = sum(torch.as_tensor(t).numel() for t in m.metric_state.values())
    for _ in range(5):
        m.update(torch.randint(0, 50, (1000,)))
    assert sum(torch.as_tensor(t).numel() for t in m.metric_state.values()) == before


def test_bad_inputs_fail_with_one_clear_line(fixture_folders, embedder, tmp_path):
    fx = fixture_folders
    with pytest.raises(ConfigError, match="'NoSuchSet' is not one of the 36"):
        evaluate_mmeb(embedder, fx.mmeb_dir, fx.image_root, datasets=["NoSuchSet"])
    with pytest.raises(MissingPathError, match="does not exist"):
        evaluate_mmeb(embedder, tmp_path / "nowhere", fx.image_root)
    with pytest.raises(MissingPathError, match="image_root"):
        evaluate_mmeb(embedder, fx.mmeb_dir, tmp_path, datasets=["ImageNet-1K"])
    bad = tmp_path / "mmeb"
    bad.mkdir()
    pd.DataFrame({"qry_text": ["x"], "qry_img_path": [""], "tgt_text": [["a"]]}).to_parquet(
        bad / "CIRR.parquet"
    )
    with pytest.raises(EvalDataError, match=r"missing column.*tgt_img_path"):
        evaluate_mmeb(embedder, bad, fx.image_root, datasets=["CIRR"])
    pd.DataFrame(
        {"qry_text": [""], "qry_img_path": [""], "tgt_text": [["a"]], "tgt_img_path": [[""]]}
    ).to_parquet(bad / "NIGHTS.parquet")
    with pytest.raises(ItemError, match=r"NIGHTS.*neither text nor image"):
        evaluate_mmeb(embedder, bad, fx.image_root, datasets=["NIGHTS"])
    (fx.image_root / "broken.png").write_bytes(b"not a png")
    pd.DataFrame(
        {"qry_text": ["q"], "qry_img_path": ["broken.png"], "tgt_text": [["a"]], "tgt_img_path": [[""]]}
    ).to_parquet(bad / "EDIS.parquet")
    with pytest.raises(ItemError, match=r"broken\.png.*(image_format|image_decode)"):
        evaluate_mmeb(embedder, bad, fx.image_root, datasets=["EDIS"])
    (fx.image_root / "broken.png").unlink()
