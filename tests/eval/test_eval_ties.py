"""Exact score ties with the truth follow each benchmark's official rule, and their share is reported.

Oracles transcribed from the official code (facts, not code, carried over):

- XTD Recall@k, haon-chen/mmE5 ``evaluation/eval_utils.py`` lines 35-51 (``recall_at_k``: line 49
  ``top_k_indices = np.argsort(scores)[-k:][::-1]``, line 50 counts the relevant indices among them),
  called with ``relevant_indices=[0]`` from ``eval_multi.py`` line 197 (Precision@1 the same way,
  lines 17-33 and 196). An ascending argsort keeps the truth (index 0) first among equal scores;
  reversed, every candidate tied with the truth ranks above it.
- MMEB Precision@1, TIGER-AI-Lab/VLM2Vec ``evaluation/eval_utils.py`` line 16 (``np.argmax(scores)``)
  and ``eval.py`` lines 149-150 (correct when the prediction is 0) at commit b1dc1e6; mmE5 repeats it
  (``evaluation/eval_utils.py`` line 14, ``eval.py`` lines 221-223). ``np.argmax`` returns the first
  maximum, so a tie counts for the truth.

The oracles sort with ``kind="stable"``: the official call uses numpy's default sort, whose order among
equal keys numpy does not promise; the stable order is the one the code's indexing expresses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mme5.errors import ConfigError
from mme5.eval import evaluate_mmeb, evaluate_xtd
from mme5.eval.metrics import RankingMetrics, truth_rank
from mme5.eval.report import markdown_report
from mme5.records import Side


def official_xtd_recall(scores: np.ndarray, k: int) -> float:
    top_k_indices = np.argsort(scores, kind="stable")[-k:][::-1]
    return sum(1 for idx in top_k_indices if idx in [0]) / len([0])


def official_mmeb_p1(scores: np.ndarray) -> float:
    return float(np.argmax(scores) == 0)


# rows of candidate scores, the truth first; exact ties by construction
TIE_ROWS = [
    [0.5, 0.5, 0.2, 0.1, 0.0],  # one tie at the top
    [0.5, 0.9, 0.5, 0.5, 0.1],  # beaten once, tied twice
    [0.3, 0.3, 0.3, 0.3, 0.3],  # all equal (a collapsed model)
    [0.7, 0.1, 0.2, 0.3, 0.4],  # no tie
    [0.2, 0.9, 0.8, 0.7, 0.2],  # beaten three times, tied once
]


def test_truth_rank_matches_both_oracles():
    scores = torch.tensor(TIE_ROWS, dtype=torch.float64)
    valid = torch.ones_like(scores, dtype=torch.bool)
    for k in (1, 2, 3, 4, 5):
        loses = RankingMetrics(ks=(k,))
        loses.update(truth_rank(scores, valid, "truth_loses"))
        expected = np.mean([official_xtd_recall(np.array(r), k) for r in TIE_ROWS])
        assert loses.compute()[f"hit@{k}"].item() == pytest.approx(expected), k
    wins = RankingMetrics(ks=(1,))
    wins.update(truth_rank(scores, valid, "truth_wins"))
    assert wins.compute()["precision@1"].item() == pytest.approx(
        np.mean([official_mmeb_p1(np.array(r)) for r in TIE_ROWS])
    )
    with pytest.raises(ConfigError, match="tie_rule"):
        truth_rank(scores, valid, "random")


def _colour_key(rgb) -> str:
    r, g, b = rgb
    return f"rgb{r},{g},{b}"


class LookupEmbedder:
    """Embeds each side by a fixed table: text sides by their text, image sides by the image's colour,
    so identical pictures under different paths embed identically (an exact tie)."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table

    def __call__(self, sides: list[Side]) -> torch.Tensor:
        rows = []
        for s in sides:
            key = (s.text or "") if s.image is None else _colour_key(s.image.getpixel((0, 0)))
            rows.append(self.table[key])
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def _write_benchmark(root: Path) -> tuple[Path, Path, dict[str, list[float]], list[list[float]]]:
    """An XTD language and an MMEB dataset of text -> image rows with exact ties; returns the folders,
    the embedding table and each row's candidate scores (what the official code computes)."""
    images = root / "images"
    images.mkdir()
    colours = {"red": (255, 0, 0), "red_twin": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        Image.new("RGB", (8, 8), rgb).save(images / f"{name}.png")
    table = {
        "rgb255,0,0": [1.0, 0.0, 0.0],
        "rgb0,255,0": [0.0, 1.0, 0.0],
        "rgb0,0,255": [0.6, 0.8, 0.0],
        "find red": [1.0, 0.0, 0.0],
        "find green": [0.0, 1.0, 0.0],
        "find blue": [0.6, 0.8, 0.0],
        "find nothing": [0.0, 0.0, 1.0],
    }
    rows = [
        ("find red", ["red.png", "green.png", "red_twin.png", "blue.png"]),  # twin ties the truth at the top
        ("find green", ["green.png", "red.png", "blue.png"]),  # no tie
        ("find blue", ["blue.png", "green.png", "red.png", "blue.png"]),  # the truth repeated in its row
        ("find nothing", ["red.png", "green.png", "blue.png"]),  # every score 0: all tied
        (
            "find red",
            ["green.png", "red.png", "red_twin.png", "blue.png"],
        ),  # beaten by two tied candidates, none tied with the truth
    ]
    table_rows = pa.table(
        {
            "qry_text": [q for q, _ in rows],
            "qry_img_path": ["" for _ in rows],
            "tgt_text": [[""] * len(c) for _, c in rows],
            "tgt_img_path": [c for _, c in rows],
        }
    )
    xtd = root / "xtd"
    (xtd / "it").mkdir(parents=True)
    pq.write_table(table_rows, xtd / "it" / "test-00000-of-00001.parquet")
    mmeb = root / "mmeb"
    mmeb.mkdir()
    pq.write_table(table_rows, mmeb / "VisualNews_t2i.parquet")

    def vec(key: str) -> np.ndarray:
        v = np.array(table[key], dtype=np.float64)
        return v / np.linalg.norm(v)

    name_key = {f"{n}.png": _colour_key(rgb) for n, rgb in colours.items()}
    scores = [[float(vec(name_key[c]) @ vec(q)) for c in cands] for q, cands in rows]
    return xtd, mmeb, table, scores


def test_xtd_and_mmeb_follow_their_official_tie_rules(tmp_path):
    xtd, mmeb, table, scores = _write_benchmark(tmp_path)
    images = tmp_path / "images"
    embed = LookupEmbedder(table)
    x = evaluate_xtd(embed, xtd, images, languages=["it"]).score("it")
    for k in (1, 5, 10):
        expected = 100 * np.mean([official_xtd_recall(np.array(s), k) for s in scores])
        assert x.metrics[f"hit@{k}"] == pytest.approx(expected), k
    assert x.metrics["hit@1"] == pytest.approx(20.0)  # only "find green" keeps its truth on top
    m = evaluate_mmeb(embed, mmeb, images, datasets=["VisualNews_t2i"]).score("VisualNews_t2i")
    assert m.precision_at_1 == pytest.approx(100 * np.mean([official_mmeb_p1(np.array(s)) for s in scores]))
    assert m.precision_at_1 == pytest.approx(80.0)
    # the share of rows with a tie is reported beside the scores (3 of 5 rows), with the rule used
    assert x.ties == m.ties == pytest.approx(60.0)
    assert (x.tie_rule, m.tie_rule) == ("truth_loses", "truth_wins")
    # either rule can be asked for explicitly
    swapped = evaluate_xtd(embed, xtd, images, languages=["it"], tie_rule="truth_wins").score("it")
    assert swapped.metrics["hit@1"] == pytest.approx(m.precision_at_1)


def test_report_shows_the_tie_share(tmp_path):
    xtd, mmeb, table, _ = _write_benchmark(tmp_path)
    embed = LookupEmbedder(table)
    x = evaluate_xtd(embed, xtd, tmp_path / "images", languages=["it"])
    m = evaluate_mmeb(embed, mmeb, tmp_path / "images", datasets=["VisualNews_t2i"])
    text = markdown_report(mmeb=m, xtd=x)
    assert "| ties | 60.0 | 60.0 |" in text and "Tie rule truth_loses" in text
    assert "| ties | tie@1 | chance |" in text and "Tie rule truth_wins" in text
    assert x.to_dict()["datasets"][0]["ties"] == pytest.approx(60.0)
