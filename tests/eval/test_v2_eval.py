"""MMEB-V2 end to end on a drawn V2-layout corpus (frame sequences, document pages), against an oracle
that re-encodes every side and ranks as VLM2Vec's ``eval.py`` does (lines 302-343, stable order)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mme5.demo.v2 import build_v2_demo
from mme5.eval.cache import EmbeddingCache
from mme5.eval.items import load_side
from mme5.eval.v2 import (
    V2_TASKS,
    evaluate_mmeb_v2,
    load_mmeb_v2,
    resolve_v2_tasks,
    run_mmeb_v2,
    v2_table,
    write_v2,
)
from mme5.eval.v2.frames import load_frames, sample_frames
from tests.eval.test_v2_metrics import oracle_hit, oracle_ndcg, oracle_rank

TASKS = ["K700", "SmthSmthV2", "MSR-VTT", "ViDoRe_arxivqa"]  # report order


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2") / "MMEB-V2"
    build_v2_demo(root)
    # bad input: a frame folder with a gap (frame 3 deleted) and one emptied
    (root / "video-tasks/frames/video_ret/MSR-VTT/video0/frame_0003.jpg").unlink()
    empty = root / "video-tasks/frames/video_cls/SSv2/clip5"
    shutil.rmtree(empty)
    empty.mkdir()
    return root


def _oracle(bench, embedder):
    out = {}
    for s in bench.sets:
        sides = [load_side(bench.items[i], None) for i in [*s.queries, *s.pool]]
        emb = F.normalize(embedder(sides), dim=-1).numpy().astype(np.float64)
        q, pool = emb[: len(s.queries)], emb[len(s.queries) :]
        hits, ndcgs = [], []
        for r in range(len(s.queries)):
            own = list(range(len(s.pool))) if s.local is None else s.local[r]
            names = [s.names[j] for j in own]
            pred = oracle_rank(pool[own] @ q[r], names)
            labels = [s.names[j] for j in s.rels[r]]
            grades = list(s.rels[r].values())
            hits.append(oracle_hit(pred, labels, 1))
            ndcgs.append(oracle_ndcg(pred, labels, 5, grades))
        out[s.name] = (100 * np.mean(hits), 100 * np.mean(ndcgs))
    return out


def test_frames_are_sampled_as_the_official_code_samples(tmp_path):
    build_v2_demo(tmp_path)
    frames = load_frames(tmp_path / "video-tasks/frames/video_ret/MSR-VTT/video1")
    assert [p.name for p in frames][:2] == ["frame_0001.jpg", "frame_0002.jpg"]
    picked = sample_frames(frames, 8)
    idx = np.linspace(0, 9, 8, dtype=int).tolist()  # vision_utils.py line 256
    assert picked == [frames[i] for i in idx]
    assert sample_frames(frames[:3], 8) == frames[:3]  # fewer than num_frames: all kept


def test_v2_scores_match_the_oracle_and_bad_input_is_listed(v2_root, tmp_path, embedder):
    bench = load_mmeb_v2(v2_root, resolve_v2_tasks(TASKS), tmp_path / "work")
    result = run_mmeb_v2(embedder, bench, frame_input="tiled")  # the oracle sees the same tiles
    assert [t.name for t in result.tasks] == TASKS
    want = _oracle(bench, embedder)
    for t in result.tasks:
        hit, ndcg = want[t.name]
        assert t.metrics["hit@1"] == pytest.approx(hit)
        assert t.metrics["ndcg_linear@5"] == pytest.approx(ndcg)
        assert t.main == ("ndcg_linear@5" if t.kind == "visdoc" else "hit@1")
    # the gap and the empty folder are listed; their rows are counted as skipped, not scored
    assert any("video0" in m and "frame 3 missing" in m for m in result.missing_frames)
    assert any("clip5" in m and "no frames" in m for m in result.missing_frames)
    assert result.score("MSR-VTT").skipped == 1 and result.score("MSR-VTT").rows == 11
    assert result.score("SmthSmthV2").skipped == 1
    # global: every video is a candidate of every caption; local: the row's own four class names
    assert result.score("MSR-VTT").candidates == 11
    assert result.score("K700").candidates == 4
    # summary: per kind, per meta-task, overall
    s = result.summary
    assert s["video"] == pytest.approx(np.mean([result.score(n).score for n in TASKS[:3]]))
    assert s["visdoc/ViDoRe-V1"] == pytest.approx(result.score("ViDoRe_arxivqa").score)
    assert s["Overall"] == pytest.approx(np.mean([t.score for t in result.tasks]))
    table = v2_table(result)
    assert "Missing or incomplete frame folders (2)" in table and "| video | Video-CLS | 2 |" in table
    js, md = write_v2(tmp_path / "out", result)
    assert json.loads(js.read_text())["summary"]["Overall"] == pytest.approx(s["Overall"])
    assert md.read_text() == table


def test_absent_tasks_are_listed_and_items_encoded_once(v2_root, tmp_path, embedder, fixture_folders):
    cache = tmp_path / "cache"
    result = evaluate_mmeb_v2(
        embedder,
        v2_root,
        tmp_path / "work",
        image_dir=fixture_folders.mmeb_dir,
        image_root=fixture_folders.image_root,
        cache_dir=cache,
        fingerprint="hash",
    )
    scored = {t.name for t in result.tasks}
    assert {*TASKS, "ImageNet-1K", "VisualNews_t2i"} <= scored
    assert set(result.missing) == set(V2_TASKS) - scored  # all 78 accounted for
    assert scored - set(V2_TASKS) == {"ToyVQA"}  # and the MMEB folder's custom task (its datasets.json)
    first = result.encode
    assert first.encoded == first.distinct_items and first.from_cache == 0
    seen = embedder.sides_seen
    again = evaluate_mmeb_v2(
        embedder,
        v2_root,
        tmp_path / "work",
        image_dir=fixture_folders.mmeb_dir,
        image_root=fixture_folders.image_root,
        cache_dir=cache,
        fingerprint="hash",
    )
    assert embedder.sides_seen == seen  # everything from the cache: the tiled frames were kept
    assert again.encode.from_cache == first.distinct_items
    assert [t.metrics for t in again.tasks] == [t.metrics for t in result.tasks]
    assert EmbeddingCache(cache) is not None


def test_image_tasks_are_hit_at_1_of_the_v1_reader(tmp_path, embedder, fixture_folders):
    from mme5.eval import evaluate_mmeb

    v1 = evaluate_mmeb(embedder, fixture_folders.mmeb_dir, fixture_folders.image_root)
    v2 = evaluate_mmeb_v2(
        embedder,
        None,
        tmp_path,
        image_dir=fixture_folders.mmeb_dir,
        image_root=fixture_folders.image_root,
        kinds=["image"],
    )
    for d in v1.datasets:  # the official ones and the folder's custom ToyVQA (its datasets.json)
        assert v2.score(d.name).score == pytest.approx(d.metrics["precision@1"])
        assert v2.score(d.name).meta_task == d.meta_task
    assert "ToyVQA" not in V2_TASKS and v2.summary["image"] == pytest.approx(
        sum(d.metrics["precision@1"] for d in v1.datasets) / len(v1.datasets)
    )
    assert all(V2_TASKS[n].kind == "image" for n in v2.missing)
    assert "custom image tasks" in v2_table(v2)
    named = [d.name for d in v1.datasets if d.name in V2_TASKS]  # tasks named: no custom one
    only = evaluate_mmeb_v2(
        embedder, None, tmp_path, image_dir=fixture_folders.mmeb_dir, image_root=fixture_folders.image_root,
        tasks=named,
    )  # fmt: skip
    assert [t.name for t in only.tasks] == named


def test_unknown_task_and_kind_fail_in_one_line():
    from mme5.errors import ConfigError

    with pytest.raises(ConfigError, match="not one of the 78"):
        resolve_v2_tasks(["MSR_VTT"])
    with pytest.raises(ConfigError, match="kind"):
        resolve_v2_tasks(kinds=["audio"])
    assert torch.tensor(1)  # keep torch imported for the embedder's tensors


def test_pages_kept_in_the_corpus_table_are_written_out(tmp_path, embedder):
    """Hub-style BEIR parquet with the page images in the corpus table (``{"bytes", "path"}``): the
    pages are written beside it (``vidore_dataset.py`` lines 60-63); VisRAG names are shortened
    (``visrag_dataset.py`` lines 30-33)."""
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mme5.eval.v2.readers import page_file

    root = tmp_path / "V2"
    long_id = "a" * 60 + ".jpg"
    for name, ids in (("ViDoRe_docvqa", ["d0", "d1"]), ("VisRAG_ChartQA", [long_id, "b.png"])):
        task = V2_TASKS[name]
        folder = root / task.data_dir
        folder.mkdir(parents=True)
        images = []
        for i, _ in enumerate(ids):
            buf = io.BytesIO()
            Image.new("RGB", (20, 30), (40 * i, 100, 200)).save(buf, format="PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
        pq.write_table(pa.table({"corpus-id": ids, "image": images}), folder / "corpus.parquet")
        pq.write_table(pa.table({"query-id": ["q"], "query": ["which page"]}), folder / "queries.parquet")
        pq.write_table(
            pa.table({"query-id": ["q", "q"], "corpus-id": [ids[1], ids[0]], "score": [1, 0]}),
            folder / "qrels.parquet",
        )
        for docid in ids:
            assert not (folder / page_file(task, docid)).exists()
    short = "a" * 50 + "_" + hashlib.md5(long_id.encode()).hexdigest()[:8] + ".jpg"
    assert page_file(V2_TASKS["VisRAG_ChartQA"], long_id) == short
    result = evaluate_mmeb_v2(embedder, root, tmp_path / "work", kinds=["visdoc"])
    assert (root / "visdoc-tasks/VisRAG_ChartQA" / short).is_file()
    assert (root / "visdoc-tasks/ViDoRe_docvqa/d0.png").is_file()
    for name in ("ViDoRe_docvqa", "VisRAG_ChartQA"):
        t = result.score(name)
        assert t.candidates == 2 and t.rows == 1  # qrels with score 0 are not labels
    assert len(result.missing) == 22


def test_frame_gaps_follow_the_folders_stride(tmp_path):
    from pathlib import Path

    from mme5.eval.v2.frames import frame_gaps

    def names(*ns):
        return [Path(f"frame_{n:04d}.jpg") for n in ns]

    assert frame_gaps(names(1, 2, 3, 4)) == []
    assert frame_gaps(names(1, 2, 4)) == [3]
    assert frame_gaps(names(0, 5, 10, 20)) == [15]  # saved every 5th frame: only 15 is missing
    assert frame_gaps([Path("a.jpg"), Path("b.jpg")]) == []


def test_scores_do_not_depend_on_the_chunking(v2_root, tmp_path, embedder):
    bench = load_mmeb_v2(v2_root, resolve_v2_tasks(TASKS), tmp_path / "work")
    whole = run_mmeb_v2(embedder, bench, frame_input="tiled")
    tiny = run_mmeb_v2(embedder, bench, score_budget=1, frame_input="tiled")  # one row per chunk
    for a, b in zip(tiny.tasks, whole.tasks, strict=True):
        assert a.metrics["hit@1"] == b.metrics["hit@1"]  # counts are exact; sums differ in rounding
        assert a.metrics == pytest.approx(b.metrics, abs=1e-9)


def test_videos_reach_the_encoder_as_their_sampled_frames(v2_root, tmp_path):
    """frame_input "frames" (the default): a video side carries its 8 sampled frames, in order, as
    VLM2Vec's collator hands them to the processor (eval_collator.py lines 144-179)."""
    seen = []

    def embed(sides):
        seen.extend(sides)
        return torch.stack(
            [torch.tensor([1.0, float(len(s.frames)), float(len(s.text or ""))]) for s in sides]
        )

    bench = load_mmeb_v2(v2_root, resolve_v2_tasks(["MSR-VTT"]), tmp_path / "work")
    run_mmeb_v2(embed, bench)
    videos = [s for s in seen if s.has_frames]
    assert len(videos) == 11 and all(len(s.frames) == 8 and not s.has_image for s in videos)
    folder = v2_root / "video-tasks/frames/video_ret/MSR-VTT/video1"
    want = [p.read_bytes() for p in sample_frames(load_frames(folder), 8)]
    assert any([data for data, _ in s.frames] == want for s in videos)
    assert not any(s.has_image for s in seen)  # no tiled image reaches the encoder
    assert "list of their 8 sampled frames" in v2_table(run_mmeb_v2(embed, bench))
