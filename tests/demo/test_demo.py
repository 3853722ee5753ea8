"""The demo corpus: phrase tables, determinism, the public layouts read back as a stranger would, shards."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage.measure import label

from mme5.demo import (
    LANGUAGES,
    PHRASES,
    DemoCorpusError,
    all_phrases,
    ensure_demo_corpus,
    open_demo_corpus,
    phrases,
    read_manifest,
    vocabulary_texts,
)
from mme5.demo.phrases import TEMPLATE_KEYS, missing_entries
from mme5.demo.scene import BACKGROUNDS, COLOURS, RGB, DemoObject, Scene, distinct_scenes, hard_variants
from mme5.demo.tasks import EVAL_DATASETS
from mme5.records import (
    MODALITIES,
    PUBLIC_IMAGE_TOKEN,
    TASKS,
    decode_image,
    decode_sample,
    iter_shard,
    read_sizes,
)

SMALL = {"train_samples": 90, "train_shards": 3, "eval_rows": 8, "xtd_pool": 12, "image_size": 48}
XTD_LANGS = ("it", "es", "ru", "zh", "pl", "tr", "ko")
PARQUET = "test-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "corpus"
    return ensure_demo_corpus(root, seed=0, **SMALL)


def _tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file except the tar shards (their member mtimes differ) and the lock."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".tar" and p.name != ".lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _shard_contents(train_dir: Path) -> list[dict]:
    """The samples of every shard, without ``__url__`` (where the shard lies, not what it holds)."""
    return [
        {k: v for k, v in sample.items() if k != "__url__"}
        for shard in sorted(train_dir.glob("*.tar"))
        for sample in iter_shard(shard)
    ]


# ---- phrase tables --------------------------------------------------------------------------------
def test_phrase_tables_cover_all_languages_and_keys():
    assert set(PHRASES) == set(LANGUAGES) == {"en", *XTD_LANGS}
    for lang in LANGUAGES:
        assert missing_entries(PHRASES[lang]) == [], lang
        assert set(PHRASES[lang].templates) == set(TEMPLATE_KEYS), lang
    texts = all_phrases()
    assert all(t and "{" not in t and "(" not in t for t in texts)
    assert len(vocabulary_texts()) > len(texts) and "Represent the given image." in vocabulary_texts()
    with pytest.raises(ValueError, match="no phrase table for language 'xx'"):
        phrases("xx")


def test_phrases_agree_in_gender_and_resolve_particles():
    heart = DemoObject("heart", "red", "small", "top_left")
    star = DemoObject("star", "yellow", "large", "bottom_right")
    scene = Scene((heart, star), "black")
    assert phrases("en").caption(scene) == (
        "a small red heart at the top left and a large yellow star at the bottom right on a black background"
    )
    assert phrases("it").describe_object(star) == "una grande stella gialla in basso a destra"
    assert phrases("es").refer_object(star) == "la estrella amarilla"
    assert phrases("ru").describe_object(heart) == "маленькое красное сердце вверху слева"
    assert phrases("pl").edit_colour(heart, "blue") == "serce jest teraz niebieskie"
    assert (
        phrases("ko").caption(scene)
        == "검은색 배경에 왼쪽 위에 작은 빨간색 하트와 오른쪽 아래에 큰 노란색 별이 있다."
    )
    circle = DemoObject("circle", "blue", "small", "top_left")
    assert phrases("ko").caption(Scene((circle,), "gray")) == "회색 배경에 왼쪽 위에 작은 파란색 원이 있다."
    assert phrases("es").question_colour(star) == "¿De qué color es la estrella?"


def test_captions_identify_scenes_and_hard_variants_differ_in_one_attribute():
    rng = random.Random(5)
    scenes = distinct_scenes(rng, 300)
    for lang in LANGUAGES:
        assert len({phrases(lang).caption(s) for s in scenes}) == len(scenes), lang
    for scene in scenes[:50]:
        for variant in hard_variants(scene, rng, 4):
            assert variant != scene
            same_bg = variant.background == scene.background
            changed = set(variant.objects) ^ set(scene.objects)
            # one attribute: the background, or one object changed / added / removed, or two swapped places
            assert (not same_bg and not changed) or (same_bg and len(changed) in (1, 2, 4)), (scene, variant)


# ---- generation, determinism, reuse ---------------------------------------------------------------
def test_same_seed_same_corpus_other_seed_other_corpus(corpus, tmp_path):
    twin = ensure_demo_corpus(tmp_path / "twin", seed=0, **SMALL)
    assert _tree_digest(corpus.root) == _tree_digest(twin.root)
    assert _shard_contents(corpus.train_dir) == _shard_contents(twin.train_dir)
    other = ensure_demo_corpus(tmp_path / "other", seed=1, **SMALL)
    a, b = _tree_digest(corpus.root), _tree_digest(other.root)
    assert a.keys() == b.keys()
    assert a[f"mmeb/Demo-Ret-T2I/{PARQUET}"] != b[f"mmeb/Demo-Ret-T2I/{PARQUET}"]
    assert a["images/Demo-XTD/pool_000000.jpg"] != b["images/Demo-XTD/pool_000000.jpg"]
    assert _shard_contents(corpus.train_dir) != _shard_contents(other.train_dir)


def test_second_call_reuses_and_mismatch_stops_with_one_line(corpus):
    before = {p: p.stat().st_mtime_ns for p in corpus.root.rglob("*") if p.is_file() and p.name != ".lock"}
    again = ensure_demo_corpus(corpus.root, seed=0, **SMALL)
    assert again == corpus
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(DemoCorpusError) as err:
        ensure_demo_corpus(corpus.root, seed=7, **SMALL)
    msg = str(err.value)
    assert "\n" not in msg and "seed=0 (asked 7)" in msg and "delete" in msg and str(corpus.root) in msg
    original = (corpus.root / "MANIFEST.json").read_text()
    manifest = json.loads(original)
    manifest["version"] = 0
    (corpus.root / "MANIFEST.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(DemoCorpusError, match="version 0"):
            ensure_demo_corpus(corpus.root, seed=0, **SMALL)
    finally:
        (corpus.root / "MANIFEST.json").write_text(original)


def test_overwrite_replaces_a_corpus_made_with_other_parameters(tmp_path):
    root = tmp_path / "c"
    ensure_demo_corpus(root, seed=0, **SMALL)
    first = read_manifest(root)
    ensure_demo_corpus(root, seed=3, overwrite=True, **SMALL)
    assert read_manifest(root)["params"]["seed"] == 3 and first["params"]["seed"] == 0
    assert not (root / ".generating").exists()
    mtime = (root / "MANIFEST.json").stat().st_mtime_ns
    ensure_demo_corpus(root, seed=3, overwrite=True, **SMALL)  # same parameters: kept
    assert (root / "MANIFEST.json").stat().st_mtime_ns == mtime


def test_open_demo_corpus_reads_any_parameters(corpus, tmp_path):
    assert open_demo_corpus(corpus.root, generate=False) == corpus
    with pytest.raises(DemoCorpusError, match="no demo corpus in"):
        open_demo_corpus(tmp_path / "absent", generate=False)


def test_killed_generation_is_redone_and_foreign_folders_refused(tmp_path):
    root = tmp_path / "killed"
    (root / "train").mkdir(parents=True)
    (root / "train" / "shard-000000.tar.tmp").write_bytes(b"partial")
    (root / ".generating").write_text("started\n")
    paths = ensure_demo_corpus(root, seed=0, **SMALL)
    assert not (root / ".generating").exists() and not list(paths.train_dir.glob("*.tmp"))
    assert (root / "MANIFEST.json").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(DemoCorpusError, match=r"is not a demo corpus .found: notes\.txt"):
            ensure_demo_corpus(foreign, overwrite=overwrite, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(DemoCorpusError, match="negatives between 1 and 3"):
        ensure_demo_corpus(tmp_path / "bad", negatives=5)


def test_concurrent_callers_generate_once(tmp_path):
    root = tmp_path / "shared"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ensure_demo_corpus(root, seed=2, **SMALL), range(2)))
    assert results[0] == results[1]
    assert len(list(results[0].train_dir.glob("shard-*.tar"))) == SMALL["train_shards"]
    assert not (root / ".generating").exists()
    with pytest.raises(DemoCorpusError, match="is a file"):
        ensure_demo_corpus(root / "MANIFEST.json", **SMALL)


# ---- the evaluation layouts, read with plain pyarrow ------------------------------------------------
def _check_side(text: str, path: str, image_root: Path) -> None:
    assert (PUBLIC_IMAGE_TOKEN in text) == bool(path), (text, path)
    if path:
        assert text.startswith(PUBLIC_IMAGE_TOKEN + "\n")
        with Image.open(image_root / path) as img:
            img.verify()


def test_mmeb_layout_reads_back(corpus):
    table = json.loads((corpus.mmeb_dir / "datasets.json").read_text())
    assert set(table) == set(EVAL_DATASETS)
    assert {v["meta_task"] for v in table.values()} == {"Classification", "VQA", "Retrieval", "Grounding"}
    for name, spec in table.items():
        t = pq.read_table(corpus.mmeb_dir / name / PARQUET)
        assert t.schema.names == ["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]
        assert (
            t.schema.field("qry_text").type == pa.string()
            and t.schema.field("qry_img_path").type == pa.string()
        )
        assert t.schema.field("tgt_text").type == pa.list_(pa.string())
        assert t.schema.field("tgt_img_path").type == pa.list_(pa.string())
        assert t.num_rows == SMALL["eval_rows"] and spec["ood"] is False
        rows = t.to_pylist()
        chance = np.mean([1 / len(r["tgt_text"]) for r in rows])
        assert spec["chance_p1"] == pytest.approx(chance, abs=1e-6)
        for r in rows:
            assert len(r["tgt_text"]) == len(r["tgt_img_path"]) >= 4
            assert len(set(zip(r["tgt_text"], r["tgt_img_path"], strict=False))) == len(r["tgt_text"]), name
            _check_side(r["qry_text"], r["qry_img_path"], corpus.image_root)
            for text, path in zip(r["tgt_text"], r["tgt_img_path"], strict=False):
                _check_side(text, path, corpus.image_root)
            if spec["meta_task"] in ("Retrieval", "Grounding") or name == "Demo-VQA-Object":
                assert len(r["tgt_text"]) == 10
            if spec["meta_task"] in ("Classification", "VQA"):  # answers of one type: the type tells nothing
                assert all(not p for p in r["tgt_img_path"]), name


def _object_pixels(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the drawn objects (far from the background colour) and the background colour."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    corners = np.stack([a[0, 0], a[0, -1], a[-1, 0], a[-1, -1]])
    bg = np.median(corners, axis=0)
    return np.linalg.norm(a - bg, axis=-1) > 60, bg


def test_candidate_zero_is_the_truth_by_pixel_oracles(corpus):
    """Colour and count of the query images, measured from pixels, name candidate 0."""
    for r in pq.read_table(corpus.mmeb_dir / "Demo-Class-Colour" / PARQUET).to_pylist():
        img = Image.open(corpus.image_root / r["qry_img_path"])
        mask, _ = _object_pixels(img)
        mean = np.asarray(img, dtype=np.float32)[mask].mean(axis=0)
        nearest = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(RGB[c])))
        assert r["tgt_text"][0] == nearest
    counts = {"one shape": 1, "two shapes": 2, "three shapes": 3, "four shapes": 4}
    for r in pq.read_table(corpus.mmeb_dir / "Demo-Class-Count" / PARQUET).to_pylist():
        mask, _ = _object_pixels(Image.open(corpus.image_root / r["qry_img_path"]))
        blobs = label(mask, connectivity=2)
        sizes = np.bincount(blobs.ravel())[1:]
        assert int((sizes > 6).sum()) == counts[r["tgt_text"][0]]
    for r in pq.read_table(corpus.mmeb_dir / "Demo-Ret-T2I" / PARQUET).to_pylist():
        background = next(b for b in BACKGROUNDS if f"on a {b} background" in r["qry_text"])
        _, bg = _object_pixels(Image.open(corpus.image_root / r["tgt_img_path"][0]))
        assert min(BACKGROUNDS, key=lambda b: np.linalg.norm(bg - np.array(RGB[b]))) == background


def test_xtd_layout_reads_back(corpus):
    pools = []
    for lang in XTD_LANGS:
        rows = pq.read_table(corpus.xtd_dir / lang / PARQUET).to_pylist()
        assert len(rows) == SMALL["xtd_pool"]
        for i, r in enumerate(rows):
            assert r["qry_img_path"] == "" and PUBLIC_IMAGE_TOKEN not in r["qry_text"]
            assert len(r["tgt_img_path"]) == SMALL["xtd_pool"] == len(set(r["tgt_img_path"]))
            assert r["tgt_img_path"][0] == rows[0]["tgt_img_path"][i]  # row i: pool image i first
            for text, path in zip(r["tgt_text"], r["tgt_img_path"], strict=False):
                _check_side(text, path, corpus.image_root)
        pools.append([r["tgt_img_path"][0] for r in rows])
        assert len({r["qry_text"] for r in rows}) == len(rows)
    assert all(p == pools[0] for p in pools)
    ko = pq.read_table(corpus.xtd_dir / "ko" / PARQUET).column("qry_text").to_pylist()
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in q) for q in ko)


# ---- training shards ------------------------------------------------------------------------------
def test_shards_decode_with_hard_negatives(corpus):
    shards = sorted(corpus.train_dir.glob("shard-*.tar"))
    assert corpus.train_pattern.endswith("shard-{000000..000002}.tar") and len(shards) == 3
    assert read_sizes(corpus.train_dir) == {p.name: 30 for p in shards}
    examples = [decode_sample(s) for s in _shard_contents(corpus.train_dir)]
    assert len(examples) == SMALL["train_samples"] == len({e.id for e in examples})
    for ex in examples:
        assert ex.task in TASKS and ex.modality in MODALITIES and ex.lang in LANGUAGES
        assert ex.instruction and ex.source.startswith("Demo-")
        assert len(ex.negatives) == 3
        ids = [s.content_id() for s in [ex.positive, *ex.negatives]]
        assert len(set(ids)) == len(ids), ex.id
        for side in [ex.query, ex.positive, *ex.negatives]:
            if side.has_image:
                assert decode_image(side.image_bytes).size == (SMALL["image_size"],) * 2
            assert side.text is None or PUBLIC_IMAGE_TOKEN not in side.text
    assert {e.task for e in examples} == set(TASKS)
    assert len({e.lang for e in examples}) >= 4


def test_make_demo_cli(tmp_path):
    tool = ["-m", "mme5.cli", "demo"]
    args = ["--train_samples", "20", "--train_shards", "2", "--eval_rows", "2", "--xtd_pool", "10"]
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    done = subprocess.run(
        [sys.executable, *tool, "--root", str(tmp_path / "c"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "shard-{000000..000001}.tar" in done.stdout and "Demo-Ground-Object" in done.stdout
    # another process (its own string-hash seed) writes the same bytes as this one
    here = ensure_demo_corpus(tmp_path / "here", train_samples=20, train_shards=2, eval_rows=2, xtd_pool=10)
    assert _tree_digest(tmp_path / "c") == _tree_digest(here.root)
    assert _shard_contents(tmp_path / "c" / "train") == _shard_contents(here.train_dir)
    bad = subprocess.run(
        [sys.executable, *tool, "--root", str(tmp_path / "c"), "--seed", "4", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "seed=0 (asked 4)" in bad.stderr
